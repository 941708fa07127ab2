"""Publishing tasks within a bounded time.

Publishing waits for the broker's confirm, so a message is on a durable queue before a submit
answers 202. A broker that is down, blocks publishers (a memory or disk alarm) or refuses a full
queue must not hold the request, nor the thread it runs on, for longer than
BROKER_TIMEOUT_SECONDS: each case is a DependencyUnavailable (503) instead.
"""

from __future__ import annotations

from typing import Any

from amqp.exceptions import MessageNacked
from celery import Task
from kombu.exceptions import LimitExceeded, OperationalError

from app.api.errors import DependencyUnavailable
from app.core.config import get_settings
from app.worker.celery_app import celery_app

BROKER_DOWN = "The message broker is unavailable; the task was not queued."
QUEUE_FULL = "The task queue is full (TASK_QUEUE_MAX_LENGTH); the task was not queued. Try again later."


def _step_seconds() -> float:
    # Waiting for a pooled connection, and each socket read or write: a sixth of the budget, so
    # that one attempt and one retry after a lost connection, each with its confirm and its
    # close, fit in it.
    return get_settings().broker_timeout_seconds / 6


def bound_broker_io() -> None:
    """Bound every socket read and write on this process's broker connections.

    For processes that only publish (the API): a broker under a resource alarm stops reading
    from its publishers, and the channel setup and queue declaration before a publish would wait
    forever. Workers are left alone; their consumer connections idle by design.
    """
    timeout = _step_seconds()
    options = celery_app.conf.broker_transport_options or {}
    celery_app.conf.broker_transport_options = {**options, "read_timeout": timeout, "write_timeout": timeout}


def publish(task: Task, kwargs: dict[str, Any], task_id: str) -> None:
    step = _step_seconds()
    try:
        # The pool holds a connection for every thread that may publish (broker_pool_limit), so
        # this never waits behind publishes stuck on a blocked broker.
        with celery_app.producer_pool.acquire(block=True, timeout=step) as producer:
            task.apply_async(
                kwargs=kwargs,
                task_id=task_id,
                producer=producer,
                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0},
                confirm_timeout=step,
            )
    except (MessageNacked, OperationalError, OSError, LimitExceeded) as exc:
        # A nack is how a queue at its length bound refuses a message (x-overflow reject-publish);
        # kombu retries it like a lost connection and raises what it ends with.
        detail = QUEUE_FULL if _caused_by(exc, MessageNacked) else BROKER_DOWN
        raise DependencyUnavailable("rabbitmq", detail) from exc


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    while exc is not None:
        if isinstance(exc, kind):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
