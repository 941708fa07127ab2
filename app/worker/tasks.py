"""The background tasks.

- `process_data` (heavy queue): CPU-bound processing that reports progress per iteration.
- `generate_report` (default queue): aggregates items in MongoDB and stores a report document.
- `notify` (default queue): POSTs to an allowed URL; transient failures are retried with
  exponential backoff (and jitter, by default).
- `cleanup` (daily, from beat): removes expired task records and what the tasks left behind.

Their names and their retry policy (TASK_MAX_RETRIES, TASK_RETRY_*) are set with the Celery app
(app/worker/celery_app.py); settings are read when a task runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis
from celery import Task, states
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from pymongo.errors import ConnectionFailure, PyMongoError

from app.core.config import get_settings
from app.data import item_store, mongo, task_records
from app.worker import callout
from app.worker.celery_app import (
    CLEANUP,
    GENERATE_REPORT,
    HEAVY_QUEUE,
    NOTIFY,
    PROCESS_DATA,
    RECORD_OUTCOME,
    celery_app,
)

log = logging.getLogger(__name__)

# Part of every digest process_data returns: never to change (it is the task's first name).
PROCESS_SALT = b"app.tasks.process_data"
PROGRESS_INTERVAL_SECONDS = 0.2
CLEANUP_BATCH = 1000


class TransientCalloutError(Exception):
    """The remote end failed in a way that may pass (5xx, 408, 429, network)."""


class PermanentCalloutError(Exception):
    """The remote end refused the call (4xx); retrying will not help."""


# After a dependency outage, a task runs again after 2, 4, 8 ... seconds, at most this far apart.
OUTAGE_RETRY_MAX_SECONDS = 30
# Counts those retries apart from the task's own (a message header, carried by every retry).
OUTAGE_RETRIES_HEADER = "outage_retries"


def is_outage(exc: BaseException) -> bool:
    """A dependency that is down or unreachable: the task cannot run now, and can later."""
    if isinstance(exc, ConnectionFailure) or (isinstance(exc, PyMongoError) and exc.timeout):
        return True
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError)


def outage_delay(done: int) -> int:
    """Seconds before the next try after `done` tries that met an outage: 2, 4, 8 ... 30."""
    return min(2 ** (done + 1), OUTAGE_RETRY_MAX_SECONDS)


def outage_retry(task: Task, exc: BaseException, done: int, **options: Any) -> Retry | Reject:
    """The next try of a task that met an outage, `outage_delay(done)` from now (Task.retry itself:
    an outage is never out of retries); back to the queue when the retry cannot be published."""
    try:
        return Task.retry(task, exc=exc, countdown=outage_delay(done), max_retries=task.request.retries + 1, **options)
    except Reject:
        return Reject(exc, requeue=True)


class RecordedTask(Task):
    """Skips revoked tasks, writes retries and the final outcome to the task's record, and
    outlives outages.

    The outcome is recorded in the task's own call, before Celery stores the live result,
    so whoever sees SUCCESS or FAILURE also sees the worker, the finish time and the retries.
    A task that meets a MongoDB or Redis outage (at its start, or on the way) is not failed:
    it runs again later, for as long as the outage lasts, without using up its own retries.
    An outcome that cannot be written because MongoDB is down is handed to the broker
    (record_outcome), which writes it once MongoDB is back: the live result in Redis expires.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.request.id:
            return super().__call__(*args, **kwargs)  # called directly, not as a task
        try:
            # The record says whether this delivery runs: workers only remember revokes broadcast
            # while they were up, and a second message with the same id must not run it twice.
            redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
            token, state = task_records.claim(self.request.id, self.request.retries, redelivered, self.request.hostname)
        except PyMongoError as exc:
            if is_outage(exc):
                raise self._after_outage(exc) from exc
            raise
        if state == "REVOKED":
            log.info("skipping revoked task")
            self.backend.mark_as_revoked(self.request.id, "revoked before it started", request=self.request)
            raise Ignore()
        if token is None and state is not None:
            log.warning("skipping a second message of a task that ran or runs (its record: %s)", state)
            raise Ignore()
        self.request.claim = token  # None: a task sent without a record (not by the API)
        try:
            retval = super().__call__(*args, **kwargs)
        except (Retry, Ignore, Reject):
            raise  # not an outcome: another attempt follows, or Celery was told to drop it
        except Exception as exc:
            if is_outage(exc):
                raise self._after_outage(exc) from exc
            self._record(states.FAILURE, error=task_records.error_of(exc))
            raise
        self._record(states.SUCCESS, result=retval)
        return retval

    @property
    def outage_retries(self) -> int:
        return int(self.request.get(OUTAGE_RETRIES_HEADER) or 0)

    def retry(self, *args: Any, max_retries: int | None = None, **options: Any) -> Retry:
        # The task's own retries (max_retries) are counted without the ones outages caused.
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None:
            limit += self.outage_retries
        return super().retry(*args, max_retries=limit, **options)

    def _after_outage(self, exc: BaseException) -> Retry | Reject:
        done = self.outage_retries
        log.warning("a dependency is unavailable (%s): the task runs again in %ss", exc, outage_delay(done))
        return outage_retry(self, exc, done, headers={OUTAGE_RETRIES_HEADER: done + 1})

    def _record(self, state: str, result: Any = None, error: dict[str, str] | None = None) -> None:
        claim = self.request.get("claim")
        outcome = [self.request.id, state, self.request.hostname, self.request.retries, result, error, claim]
        try:
            if not task_records.finish(*outcome[:4], result=result, error=error, claim=claim):
                log.warning("the outcome was not recorded: the task was revoked, or another delivery took it over")
            return
        except PyMongoError as exc:
            if not is_outage(exc):
                log.error("could not record the outcome", exc_info=True)
                return
            log.warning("MongoDB is unavailable (%s): the outcome is recorded once it is back", exc)
        try:
            # On a durable queue until MongoDB takes it; the live result in Redis alone would expire.
            record_outcome.apply_async(args=outcome, countdown=outage_delay(0))
        except Exception:  # noqa: BLE001 - kombu's errors: the broker is down too
            log.error("could not hand the outcome over: only the live result holds it", exc_info=True)

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        try:
            task_records.record_retry(task_id, self.request.retries + 1, task_records.error_of(exc))
        except PyMongoError:
            log.warning("could not record retry", exc_info=True)


@celery_app.task(bind=True, name=RECORD_OUTCOME)
def record_outcome(
    self: Task,
    task_id: str,
    state: str,
    worker: str | None,
    retries: int,
    result: Any,
    error: dict[str, str] | None,
    claim: str | None = None,
) -> None:
    """Write the outcome of a task that finished while MongoDB was down, for as long as it stays down."""
    try:
        task_records.finish(task_id, state, worker, retries, result=result, error=error, claim=claim)
    except PyMongoError as exc:
        if not is_outage(exc):
            raise
        raise outage_retry(self, exc, self.request.retries) from exc


def canonical_bytes(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


@celery_app.task(bind=True, base=RecordedTask, name=PROCESS_DATA, queue=HEAVY_QUEUE)
def process_data(self: RecordedTask, data: Any, iterations: int) -> dict[str, Any]:
    """Chain `iterations` rounds of PBKDF2-SHA256 over the canonical JSON of `data`."""
    rounds = get_settings().process_rounds_per_iteration
    payload = canonical_bytes(data)
    digest = hashlib.sha256(payload).digest()
    last_report = 0.0
    try:
        for done in range(1, iterations + 1):
            digest = hashlib.pbkdf2_hmac("sha256", digest, PROCESS_SALT, rounds)
            now = time.monotonic()
            if now - last_report >= PROGRESS_INTERVAL_SECONDS or done == iterations:
                last_report = now
                self.update_state(
                    state="PROGRESS",
                    meta={"current": done, "total": iterations, "percent": round(100 * done / iterations, 1)},
                )
    except SoftTimeLimitExceeded as exc:
        raise SoftTimeLimitExceeded(f"stopped after the soft time limit at iteration {done} of {iterations}") from exc
    return {"iterations": iterations, "rounds_per_iteration": rounds, "bytes": len(payload), "sha256": digest.hex()}


# MongoDB being unavailable is an outage (RecordedTask): retried for as long as it lasts.
@celery_app.task(bind=True, base=RecordedTask, name=GENERATE_REPORT)
def generate_report(self: RecordedTask, tag: str | None = None, name_prefix: str | None = None) -> dict[str, Any]:
    """Aggregate the matching items and store the report; a redelivery overwrites, never duplicates."""
    summary = item_store.report(item_store.item_filter(tag, name_prefix))
    document = {
        "_id": self.request.id,
        "filter": {"tag": tag, "name_prefix": name_prefix},
        "created_at": datetime.now(UTC),
        **summary,
    }
    mongo.collection(mongo.REPORTS).replace_one({"_id": self.request.id}, document, upsert=True)
    return {"report_id": self.request.id, "items": summary["items"]}


@celery_app.task(
    bind=True,
    base=RecordedTask,
    name=NOTIFY,
    autoretry_for=(TransientCalloutError, httpx.TransportError),
)
def notify(self: RecordedTask, url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST `payload` to `url`; the task id is sent as Idempotency-Key so retries are safe.

    The URL must pass app/worker/callout.py again here, at call time: the allow-list may have changed
    since the submit, and a name's addresses are checked when it is looked up, then used as is.
    """
    try:
        address, host, port = callout.resolve(url)
    except callout.CalloutRefused as exc:
        raise PermanentCalloutError(str(exc)) from None
    except OSError as exc:  # the name cannot be looked up (yet)
        raise TransientCalloutError(f"cannot resolve the host of {url}: {exc}") from exc
    parts = urlsplit(url)
    target = urlunsplit(
        (parts.scheme, f"[{address}]:{port}" if ":" in address else f"{address}:{port}", parts.path, parts.query, "")
    )
    attempt = self.request.retries - self.outage_retries + 1
    deadline = get_settings().callout_timeout_seconds
    headers = {
        # The host's name, not the address, for virtual hosting and the TLS certificate.
        "Host": parts.netloc.rpartition("@")[2],
        "Idempotency-Key": self.request.id,
        "X-Attempt": str(attempt),
    }
    try:
        status_code = asyncio.run(asyncio.wait_for(_post(target, host, headers, payload, deadline), deadline))
    except TimeoutError:
        raise TransientCalloutError(f"no answer from {url} within {deadline:g} s (attempt {attempt})") from None
    if status_code >= 500 or status_code in (408, 429):
        raise TransientCalloutError(f"HTTP {status_code} from {url} (attempt {attempt})")
    if status_code >= 400:
        raise PermanentCalloutError(f"HTTP {status_code} from {url}")
    return {"status_code": status_code, "attempts": attempt}


async def _post(target: str, host: str, headers: dict[str, str], payload: dict[str, Any], deadline: float) -> int:
    """The status of one POST. The caller's deadline covers the whole call (httpx's timeouts are
    per read: a peer that drips a byte at a time would never meet them); the body is never read,
    so a large one costs nothing (h11 bounds the status line and headers)."""
    async with (
        httpx.AsyncClient(timeout=deadline, follow_redirects=False) as client,
        client.stream("POST", target, json=payload, headers=headers, extensions={"sni_hostname": host}) as response,
    ):
        return response.status_code


@celery_app.task(name=CLEANUP, autoretry_for=(ConnectionFailure,))
def cleanup() -> dict[str, int]:
    """Remove expired task records with their Redis results, reports past retention, and
    expired idempotency keys."""
    now = datetime.now(UTC)
    tasks = mongo.collection(mongo.TASKS)
    backend = celery_app.backend
    removed_tasks = removed_results = 0
    # Every expired record, a batch at a time (MongoDB's TTL index removes them too).
    while True:
        ids = [doc["_id"] for doc in tasks.find({"expires_at": {"$lt": now}}, {"_id": 1}).limit(CLEANUP_BATCH)]
        if not ids:
            break
        # Results normally expired after an hour already; delete any that did not.
        removed_results += backend.client.delete(*(backend.get_key_for_task(task_id) for task_id in ids))
        removed_tasks += tasks.delete_many({"_id": {"$in": ids}, "expires_at": {"$lt": now}}).deleted_count
    cutoff = now - timedelta(days=get_settings().report_retention_days)
    removed_reports = mongo.collection(mongo.REPORTS).delete_many({"created_at": {"$lt": cutoff}}).deleted_count
    # MongoDB's TTL index removes them too; servers without TTL indexes rely on this.
    removed_keys = mongo.collection(mongo.IDEMPOTENCY_KEYS).delete_many({"expires_at": {"$lt": now}}).deleted_count
    summary = {"tasks": removed_tasks, "results": removed_results, "reports": removed_reports, "keys": removed_keys}
    mongo.collection(mongo.MAINTENANCE).insert_one({"at": now, "task": "cleanup", "removed": summary})
    log.info("cleanup finished", extra={"removed": summary})
    return summary
