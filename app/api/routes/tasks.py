"""Background work: submit (202 with a task id at once), follow, revoke.

Submitting needs MongoDB (the task record), RabbitMQ (the message) and Redis (where the
task's progress and result will live). If any of them is down the submit answers 503
naming it and nothing is queued: accepting work whose result could not be stored would
lose it silently.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import redis
from celery import Task
from fastapi import APIRouter, HTTPException, Path, Response, status
from fastapi.exceptions import RequestValidationError
from kombu.exceptions import OperationalError

from app import metrics, task_store, tasks
from app.api.deps import (
    AUTH_ERRORS,
    BODY_ERRORS,
    CONFLICT,
    MONGO_BUDGET,
    NOT_FOUND,
    READ_ACCESS,
    READ_AUTH_ERRORS,
    UNAVAILABLE,
    WRITE_ACCESS,
)
from app.api.json_body import StrictJSONRoute
from app.celery_app import celery_app
from app.errors import DependencyUnavailable
from app.schemas import NotifyRequest, ProcessRequest, ReportRequest, TaskAccepted, TaskStatus

router = APIRouter(prefix="/api", tags=["tasks"], dependencies=MONGO_BUDGET, route_class=StrictJSONRoute)

TaskId = Annotated[uuid.UUID, Path(description="The task id returned by a submit.")]
_SUBMIT = {
    "status_code": status.HTTP_202_ACCEPTED,
    "response_model": TaskAccepted,
    "dependencies": WRITE_ACCESS,
    "responses": {**AUTH_ERRORS, **BODY_ERRORS, **UNAVAILABLE},
}


def _status_url(task_id: str) -> str:
    return f"{router.prefix}/tasks/{task_id}"


def _require_result_store() -> None:
    # Celery's publish does not fail when Redis is down (the task would run with nowhere to
    # report to), so the result store is checked first.
    try:
        celery_app.backend.client.ping()
    except (redis.RedisError, OSError) as exc:
        detail = "The result store (Redis) is unavailable; the task was not queued."
        raise DependencyUnavailable("redis", detail) from exc


def _submit(task: Task, kind: str, kwargs: dict[str, Any], response: Response) -> dict[str, Any]:
    _require_result_store()
    task_id = str(uuid.uuid4())
    queue = celery_app.amqp.router.route({}, task.name)["queue"].name
    task_store.issue(task_id, kind, queue)
    try:
        task.apply_async(kwargs=kwargs, task_id=task_id)
    except (OperationalError, OSError) as exc:
        task_store.discard(task_id)
        raise DependencyUnavailable("rabbitmq", "The message broker is unavailable; the task was not queued.") from exc
    metrics.TASKS_SUBMITTED.labels(kind=kind).inc()
    response.headers["Location"] = _status_url(task_id)
    return {"task_id": task_id, "kind": kind, "state": "PENDING", "status_url": _status_url(task_id)}


@router.post("/async/process", **_SUBMIT)
def submit_process(body: ProcessRequest, response: Response) -> dict[str, Any]:
    """CPU-bound processing of `data` over `iterations` rounds, with progress."""
    return _submit(tasks.process_data, "process", body.model_dump(), response)


@router.post("/async/report", **_SUBMIT)
def submit_report(body: ReportRequest, response: Response) -> dict[str, Any]:
    """A report over the items in MongoDB, stored as a document in `reports`."""
    return _submit(tasks.generate_report, "report", body.model_dump(), response)


@router.post("/async/notify", **_SUBMIT)
def submit_notify(body: NotifyRequest, response: Response) -> dict[str, Any]:
    """POST a payload to an allowed URL, retried with backoff on transient failures."""
    url = str(body.url)
    if not tasks.callout_allowed(url):
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "url"),
                    "input": url,
                    "msg": f"Host {body.url.host!r} is not allowed; allowed hosts are set in CALLOUT_ALLOWED_HOSTS.",
                }
            ]
        )
    return _submit(tasks.notify, "notify", {"url": url, "payload": body.payload}, response)


def _record(task_id: uuid.UUID) -> dict[str, Any]:
    record = task_store.get(str(task_id))
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"Unknown task {task_id}: this system never issued it.")
    return record


@router.get(
    "/tasks/{task_id}",
    response_model=TaskStatus,
    dependencies=READ_ACCESS,
    responses={**READ_AUTH_ERRORS, **NOT_FOUND, **UNAVAILABLE},
)
def get_task(task_id: TaskId) -> dict[str, Any]:
    return task_store.status(_record(task_id))


@router.delete(
    "/tasks/{task_id}",
    response_model=TaskStatus,
    dependencies=WRITE_ACCESS,
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT, **UNAVAILABLE},
)
def revoke_task(task_id: TaskId) -> dict[str, Any]:
    """Revoke a task: dropped if still queued, terminated if running."""
    record = _record(task_id)
    current = task_store.status(record)
    if current["state"] in task_store.FINAL_STATES:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"Task {task_id} already finished ({current['state']}).")
    try:
        celery_app.control.revoke(str(task_id), terminate=True, signal="SIGTERM")
    except (OperationalError, OSError) as exc:
        detail = "The message broker is unavailable; the task was not revoked."
        raise DependencyUnavailable("rabbitmq", detail) from exc
    revoked = task_store.mark_revoked(str(task_id))
    if revoked is None:  # it finished between the two reads
        return task_store.status(_record(task_id))
    return task_store.status(revoked)
