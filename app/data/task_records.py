"""Task records: which task ids this system issued, and how each one ended.

Every submitted task gets a record in MongoDB before its message is published, so an id
the system never issued is unknown (404) rather than an eternal PENDING. Live state and
progress come from Celery's result backend (Redis, one hour); the final outcome is also
written to the record, which keeps it readable for `TASK_RECORD_TTL_HOURS` after the
Redis result expired and while Redis is down.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery.result import AsyncResult
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.core.config import get_settings
from app.data import mongo

FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


def _now() -> datetime:
    return datetime.now(UTC)


def issue(task_id: str, kind: str, queue: str) -> bool:
    """Write the task's record; False if it exists (an earlier attempt with the same Idempotency-Key)."""
    now = _now()
    expires_at = now + timedelta(hours=get_settings().task_record_ttl_hours)
    try:
        mongo.collection(mongo.TASKS).insert_one(
            {
                "_id": task_id,
                "kind": kind,
                "queue": queue,
                "state": "PENDING",
                "retries": 0,
                "submitted_at": now,
                "expires_at": expires_at,
            }
        )
    except DuplicateKeyError:
        return False
    return True


def discard(task_id: str) -> None:
    """Forget a record whose message could not be published."""
    mongo.collection(mongo.TASKS).delete_one({"_id": task_id})


def get(task_id: str) -> dict[str, Any] | None:
    return mongo.collection(mongo.TASKS).find_one({"_id": task_id})


def record_retry(task_id: str, retries: int, error: dict[str, str]) -> None:
    # Celery calls this after the next attempt is published; with a short delay that attempt
    # may already have run, so a late call never lowers the count or reopens a final state.
    tasks = mongo.collection(mongo.TASKS)
    tasks.update_one({"_id": task_id}, {"$max": {"retries": retries}})
    tasks.update_one(
        {"_id": task_id, "state": {"$nin": list(FINAL_STATES)}, "retries": retries},
        {"$set": {"state": "RETRY", "error": error}},
    )


def claim(task_id: str, attempt: int, redelivered: bool, worker: str) -> tuple[str | None, str | None]:
    """Mark the task STARTED by this delivery, unless another delivery of the same attempt has it.

    A task's message may be published twice with the same id (a keyed submit whose first answer
    was lost is sent again while the first message waits in the queue). Only one of them runs:
    an attempt (the task's retries, outage retries included) is claimed once, except by a
    redelivery (the broker gives the message back when its worker died or lost the connection:
    that attempt never finished, and runs again). Returns (the claim's token, None), or
    (None, the record's state) when the task is not to run: REVOKED, a final state, or another
    delivery holding the attempt (None if there is no record).
    """
    token = f"{worker}/{uuid.uuid4().hex[:12]}"
    open_attempt: list[dict[str, Any]] = [{"attempt": {"$exists": False}}, {"attempt": {"$lt": attempt}}]
    if redelivered:
        open_attempt.append({"attempt": attempt})
    claimed = mongo.collection(mongo.TASKS).update_one(
        {"_id": task_id, "state": {"$nin": list(FINAL_STATES)}, "$or": open_attempt},
        {
            "$set": {"state": "STARTED", "attempt": attempt, "claim": token, "worker": worker, "started_at": _now()},
            # How many deliveries of this attempt a worker started (dead_letters.py reads it).
            "$inc": {f"starts.{attempt}": 1},
        },
    )
    if claimed.matched_count:
        return token, None
    record = get(task_id)
    return None, record["state"] if record else None


def reopen_after_churn(task_id: str, attempt: int, limit: int) -> bool:
    """Take back a task the broker dead-lettered although workers started fewer than all of its
    deliveries (the rest were returned by a broker restart or a lost connection, not a crash):
    it is to be sent again, at most `limit` times. False: it crashed its workers every time, it
    ended, or it was sent again too often."""
    reopened = mongo.collection(mongo.TASKS).update_one(
        {
            "_id": task_id,
            "state": {"$nin": list(FINAL_STATES)},
            f"starts.{attempt}": {"$not": {"$gte": get_settings().task_max_deliveries}},
            "churn_resends": {"$not": {"$gte": limit}},
        },
        {"$set": {"state": "PENDING"}, "$unset": {"attempt": "", "claim": ""}, "$inc": {"churn_resends": 1}},
    )
    return reopened.modified_count == 1


def finish(
    task_id: str,
    state: str,
    worker: str | None,
    retries: int,
    result: Any = None,
    error: dict[str, str] | None = None,
    claim: str | None = None,
) -> bool:
    """Record the outcome; False when it was not written: the record was revoked (it stays so
    even if the task managed to finish), or another delivery holds the task's claim."""
    query: dict[str, Any] = {"_id": task_id, "state": {"$ne": "REVOKED"}}
    if claim is not None:
        query["$or"] = [{"claim": claim}, {"claim": {"$exists": False}}]
    written = mongo.collection(mongo.TASKS).update_one(
        query,
        {
            "$set": {"state": state, "result": result, "error": error, "worker": worker, "finished_at": _now()},
            "$max": {"retries": retries},
        },
    )
    return written.matched_count == 1


def dead_lettered(task_id: str, *, task: str, queue: str | None, message: str, deliveries: int, reason: str) -> bool:
    """Record a task that reached the dead-letter queue: FAILURE with the reason, and its message
    (`message`: its JSON [args, kwargs]) for `python -m app.worker.dead_letters resend`. False when the
    record had already ended (or expired)."""
    now = _now()
    cause = (
        f"delivered {deliveries} times without finishing: its worker died, or lost the broker, each time"
        if reason == "delivery_limit"
        else f"dead-lettered by the broker ({reason})"
    )
    result = mongo.collection(mongo.TASKS).update_one(
        {"_id": task_id, "state": {"$nin": list(FINAL_STATES)}},
        {
            "$set": {
                "state": "FAILURE",
                "error": {"type": "DeadLettered", "message": f"The task was {cause}; it is in the dead-letter queue."},
                "finished_at": now,
                "expires_at": now + timedelta(hours=get_settings().task_record_ttl_hours),
                "dead_letter": {"task": task, "queue": queue, "message": message, "deliveries": deliveries, "at": now},
            }
        },
    )
    return result.modified_count == 1


def dead_letters() -> list[dict[str, Any]]:
    return list(mongo.collection(mongo.TASKS).find({"dead_letter": {"$exists": True}}).sort("dead_letter.at", 1))


def take_dead_letter(task_id: str) -> dict[str, Any] | None:
    """Turn a dead-lettered record back into a queued one; returns it as it was (None if it was not)."""
    return mongo.collection(mongo.TASKS).find_one_and_update(
        {"_id": task_id, "dead_letter": {"$exists": True}},
        {
            "$set": {"state": "PENDING"},
            # Its next delivery starts afresh: no attempt is claimed, no start counted.
            "$unset": {
                "dead_letter": "",
                "error": "",
                "finished_at": "",
                "worker": "",
                "attempt": "",
                "claim": "",
                "starts": "",
            },
        },
        return_document=ReturnDocument.BEFORE,
    )


def restore_dead_letter(record: dict[str, Any]) -> None:
    mongo.collection(mongo.TASKS).replace_one({"_id": record["_id"]}, record)


def mark_revoked(task_id: str) -> dict[str, Any] | None:
    """Mark an unfinished task revoked; returns the updated record, or None if it already finished."""
    return mongo.collection(mongo.TASKS).find_one_and_update(
        {"_id": task_id, "state": {"$nin": list(FINAL_STATES)}},
        {"$set": {"state": "REVOKED", "finished_at": _now()}},
        return_document=ReturnDocument.AFTER,
    )


def error_of(exc: BaseException | Any) -> dict[str, str]:
    if isinstance(exc, BaseException):
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": "Error", "message": str(exc)}


def _progress(state: str, info: Any) -> dict[str, Any] | None:
    if state == "PROGRESS" and isinstance(info, dict) and "total" in info:
        return {key: info[key] for key in ("current", "total", "percent")}
    if state == "STARTED":
        return {"current": 0, "total": 0, "percent": 0.0}
    return None


def _done(result: Any) -> dict[str, Any]:
    total = result.get("iterations", 1) if isinstance(result, dict) else 1
    return {"current": total, "total": total, "percent": 100.0}


def status(record: dict[str, Any]) -> dict[str, Any]:
    """The task's current state: live from Celery's results, else from the record."""
    task_id = record["_id"]
    view = {
        "task_id": task_id,
        "kind": record["kind"],
        "state": record["state"],
        "progress": None,
        "result": record.get("result"),
        "error": record.get("error"),
        "retries": record.get("retries", 0),
        "worker": record.get("worker"),
        "submitted_at": record["submitted_at"],
        "finished_at": record.get("finished_at"),
    }
    if record["state"] in FINAL_STATES:
        if record["state"] == "SUCCESS":
            view["progress"] = _done(view["result"])
        return view
    try:
        live = AsyncResult(task_id)
        state, info = live.state, live.info
    except (redis.RedisError, OSError):
        return view  # Redis is down: the record's last known state is the best answer.
    if state == "PENDING":
        return view  # queued (or its live result expired): the record is authoritative
    if state in FINAL_STATES:
        # Workers record the outcome before Celery stores the live result, so a record read
        # before it ended has its outcome now, with the worker and the finish time.
        latest = get(task_id)
        if latest is not None and latest["state"] in FINAL_STATES:
            return status(latest)
    view["state"] = state
    view["progress"] = _progress(state, info)
    if state == "SUCCESS":
        view["result"] = info
        view["progress"] = _done(info)
    elif state in ("FAILURE", "RETRY"):
        view["error"] = error_of(info)
    return view
