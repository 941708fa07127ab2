"""Background work: submit (202 with a task id at once), follow, revoke.

Submitting needs MongoDB (the task record, where the outcome will be kept) and RabbitMQ (the
message). If either is down the submit answers 503 naming it and nothing is queued. Redis is
not asked: it holds only the live view of a task (progress, the result for a while), and a task
that runs while Redis is down still records its outcome in MongoDB (app/worker/celery_app.py:
LiveStateBackend), so a submit neither waits for a ping nor fails for it.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from celery import Task
from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from pydantic import BaseModel

from app.api import deps, idempotency
from app.api.errors import DependencyUnavailable
from app.api.idempotency import IdempotencyKey, Outcome
from app.api.json_body import StrictJSONRoute
from app.api.publishing import publish
from app.api.schemas import NotifyRequest, ProcessRequest, ReportRequest, TaskAccepted, TaskStatus
from app.core import metrics
from app.core.config import Settings
from app.data import task_records
from app.worker import callout, tasks
from app.worker.celery_app import celery_app

router = APIRouter(prefix="/api", tags=["tasks"], route_class=StrictJSONRoute)

TaskId = Annotated[uuid.UUID, Path(description="The task id returned by a submit.")]
_SUBMIT = {
    "status_code": status.HTTP_202_ACCEPTED,
    "response_model": TaskAccepted,
    "dependencies": deps.WRITE_ACCESS,
    "responses": {**deps.AUTH_ERRORS, **deps.BODY_ERRORS, **deps.IDEMPOTENCY_ERRORS, **deps.UNAVAILABLE},
}


def _status_url(task_id: str) -> str:
    return f"{router.prefix}/tasks/{task_id}"


def _new_task_id() -> str:
    return str(uuid.uuid4())


def _submit(
    request: Request, idempotency_key: str | None, body: BaseModel, task: Task, kind: str, kwargs: dict[str, Any]
) -> JSONResponse:
    def submit(task_id: str) -> Outcome:
        queue = celery_app.amqp.router.route({}, task.name)["queue"].name
        issued = task_records.issue(task_id, kind, queue)
        # A repeat of a key whose first attempt died: publish again only if the task never started.
        if issued or task_records.get(task_id)["state"] == "PENDING":
            try:
                publish(task, kwargs, task_id)
            except DependencyUnavailable:
                if issued:
                    task_records.discard(task_id)  # the record of a task that was never queued
                raise
        metrics.TASKS_SUBMITTED.labels(kind=kind).inc()
        accepted = TaskAccepted(task_id=task_id, kind=kind, state="PENDING", status_url=_status_url(task_id))
        return Outcome(status.HTTP_202_ACCEPTED, accepted.model_dump(mode="json"), {"Location": _status_url(task_id)})

    return idempotency.respond(request, idempotency_key, body, submit, new_id=_new_task_id)


@router.post("/async/process", **_SUBMIT)
def submit_process(body: ProcessRequest, request: Request, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """CPU-bound processing of `data` over `iterations` rounds, with progress."""
    return _submit(request, idempotency_key, body, tasks.process_data, "process", body.model_dump())


@router.post("/async/report", **_SUBMIT)
def submit_report(body: ReportRequest, request: Request, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """A report over the items in MongoDB, stored as a document in `reports`."""
    return _submit(request, idempotency_key, body, tasks.generate_report, "report", body.model_dump())


@router.post("/async/notify", **_SUBMIT)
def submit_notify(body: NotifyRequest, request: Request, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """POST a payload to an allowed URL, retried with backoff on transient failures."""
    url = str(body.url)
    problem = callout.refusal(url)
    if problem:
        raise RequestValidationError([{"type": "value_error", "loc": ("body", "url"), "input": url, "msg": problem}])
    return _submit(request, idempotency_key, body, tasks.notify, "notify", {"url": url, "payload": body.payload})


def _record(task_id: uuid.UUID) -> dict[str, Any]:
    record = task_records.get(str(task_id))
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"Unknown task {task_id}: this system never issued it.")
    return record


@router.delete(
    "/tasks/{task_id}",
    response_model=TaskStatus,
    dependencies=deps.WRITE_ACCESS,
    responses={**deps.AUTH_ERRORS, **deps.NOT_FOUND, **deps.CONFLICT, **deps.UNAVAILABLE},
)
def revoke_task(task_id: TaskId) -> dict[str, Any]:
    """Revoke a task: dropped if still queued, terminated if running."""
    record = _record(task_id)
    current = task_records.status(record)
    if current["state"] in task_records.FINAL_STATES:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"Task {task_id} already finished ({current['state']}).")
    try:
        celery_app.control.revoke(str(task_id), terminate=True, signal="SIGTERM")
    except (OperationalError, OSError) as exc:
        detail = "The message broker is unavailable; the task was not revoked."
        raise DependencyUnavailable("rabbitmq", detail) from exc
    revoked = task_records.mark_revoked(str(task_id))
    if revoked is None:  # it finished between the two reads
        return task_records.status(_record(task_id))
    return task_records.status(revoked)


def read_router(settings: Settings) -> APIRouter:
    """The status route: behind the API key when AUTH_PROTECT_READS is on; declared when the app
    is created, as the item reads are (app/api/item_routes.py)."""
    reads = APIRouter(prefix=router.prefix, tags=["tasks"], route_class=StrictJSONRoute, **deps.read_access(settings))

    @reads.get("/tasks/{task_id}", response_model=TaskStatus, responses={**deps.NOT_FOUND, **deps.UNAVAILABLE})
    def get_task(task_id: TaskId) -> dict[str, Any]:
        return task_records.status(_record(task_id))

    return reads
