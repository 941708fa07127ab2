"""The Celery application: RabbitMQ broker, Redis results, and the delivery guarantees.

Nothing is lost when a worker dies: messages are persistent on durable queues, publishing
waits for the broker's confirm, and a task is acknowledged only after it finished
(`task_acks_late`), so the broker redelivers it if the worker is killed mid-task.

Nothing runs forever either: a task delivered TASK_MAX_DELIVERIES times without being
acknowledged (its worker died, or lost the broker, each time) goes to the dead-letter queue,
where workers record it as failed (app/worker/dead_letters.py). And nothing grows without bound: past
TASK_QUEUE_MAX_LENGTH messages, a queue refuses new ones and submits answer 503.
"""

from __future__ import annotations

import logging

import redis
from celery import Celery, signals
from celery.backends.redis import RedisBackend, SentinelBackend
from celery.schedules import crontab
from kombu import Exchange, Queue

from app.core.config import Settings, get_settings
from app.core.logging import configure_logging
from app.data import mongo, redis_servers

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"
HEAVY_QUEUE = "heavy"
DEAD_LETTER_EXCHANGE = "dead-letters"
DEAD_LETTER_QUEUE = "dead-letters"

# The tasks' names: what messages, the routes, the beat schedule and dead letters carry. Fixed
# strings that keep the module path the tasks were first deployed under (app.tasks), not names
# derived from where the functions live now (app/worker/tasks.py): during a rolling deploy old
# workers and new APIs (or the reverse) exchange messages, and must agree on them.
PROCESS_DATA = "app.tasks.process_data"
GENERATE_REPORT = "app.tasks.generate_report"
NOTIFY = "app.tasks.notify"
CLEANUP = "app.tasks.cleanup"
RECORD_OUTCOME = "app.tasks.record_outcome"


class LiveState:
    """Celery's results in Redis, as the live view of tasks (state, progress, result) only.

    A task's outcome is recorded in MongoDB first (app/worker/tasks.py), so a write here that cannot
    reach Redis is logged and dropped instead of failing the task: STARTED, a progress report,
    RETRY, or even the result (the record has it) must not turn work into a failure.
    """

    def on_task_call(self, producer, task_id) -> None:  # noqa: ANN001
        """Subscribe to nothing when a task is sent. Celery subscribes the sender to the task's
        result channel in case it waits for the result; nothing here waits (the API answers 202
        and status reads poll; `AsyncResult.get` still subscribes when it is called). It was a
        Redis round trip in every submit, and a Redis restart between the submit's check of the
        result store and its publish made the submit a 500."""

    def store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):  # noqa: ANN001, ANN201
        try:
            return super().store_result(task_id, result, state, traceback, request, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("cannot store the live state %s in Redis (%s); the task record keeps the outcome", state, exc)
            return result


class LiveStateBackend(LiveState, RedisBackend):
    """The live view in one Redis server."""


class LiveStateSentinelBackend(LiveState, SentinelBackend):
    """The live view in the primary that Redis Sentinel names (REDIS_SENTINELS)."""


def queue_arguments(settings: Settings) -> dict[str, object]:
    """The task queues' arguments, fixed when a queue is first declared (see the README on changing them)."""
    arguments: dict[str, object] = {
        "x-max-length": settings.task_queue_max_length,
        "x-overflow": "reject-publish",  # publishing into a full queue is refused (confirm: nack)
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    }
    if settings.celery_queue_type == "quorum":
        arguments |= {
            "x-queue-type": "quorum",
            # Deliveries after the first that may end unacknowledged; the next one dead-letters.
            "x-delivery-limit": settings.task_max_deliveries - 1,
            # Moved only once the dead-letter queue has it (needs reject-publish overflow).
            "x-dead-letter-strategy": "at-least-once",
        }
    return arguments


def retry_policy(settings: Settings) -> dict[str, object]:
    """How the tasks that retry (generate_report, notify, cleanup) do: TASK_MAX_RETRIES, TASK_RETRY_*."""
    return {
        "max_retries": settings.task_max_retries,
        "retry_backoff": settings.task_retry_backoff_seconds,
        "retry_backoff_max": settings.task_retry_backoff_max_seconds,
        "retry_jitter": settings.task_retry_jitter,
    }


def _crontab(expression: str) -> crontab:
    minute, hour, day_of_month, month_of_year, day_of_week = expression.split()
    return crontab(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year, day_of_week=day_of_week
    )


def create_celery() -> Celery:
    settings = get_settings()
    app = Celery(settings.app_name, broker=settings.celery_broker_url, include=["app.worker.tasks"])
    # Redis at CELERY_RESULT_BACKEND, or the Sentinels' primary, through a live-state backend
    # ("class+url"; a backend_cls, since Celery would otherwise take the bare URL from the
    # environment variable).
    backend, results_url, results_options = redis_servers.result_backend(settings)
    app.backend_cls = f"app.worker.celery_app:{backend}+{results_url}"
    redbeat_url, redbeat_options = redis_servers.redbeat(settings)
    # A topic exchange: RabbitMQ's native delayed delivery (countdowns on quorum queues) needs
    # one; routing keys are the queue names.
    exchange = Exchange("tasks", type="topic", durable=True)
    # Quorum queues are replicated across a RabbitMQ cluster; Celery then turns off global
    # QoS and uses RabbitMQ's native delayed delivery for countdowns (retries).
    arguments = queue_arguments(settings)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone=settings.timezone,
        enable_utc=True,
        # Delivery guarantees.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_delivery_mode="persistent",
        broker_transport_options={"confirm_publish": True},
        broker_connection_timeout=settings.broker_timeout_seconds,
        # A pooled connection for each thread of the API's thread pool (anyio's 40), so a publish
        # never waits for another one to end (app/api/publishing.py bounds each publish instead).
        broker_pool_limit=40,
        broker_connection_retry_on_startup=True,
        broker_heartbeat=30,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # A down broker makes a submit fail fast (503) instead of blocking the request.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        task_queues=(
            Queue(DEFAULT_QUEUE, exchange, routing_key=DEFAULT_QUEUE, durable=True, queue_arguments=arguments),
            Queue(HEAVY_QUEUE, exchange, routing_key=HEAVY_QUEUE, durable=True, queue_arguments=arguments),
        ),
        task_default_queue=DEFAULT_QUEUE,
        task_default_exchange="tasks",
        task_default_routing_key=DEFAULT_QUEUE,
        task_routes={PROCESS_DATA: {"queue": HEAVY_QUEUE, "routing_key": HEAVY_QUEUE}},
        task_soft_time_limit=settings.task_soft_time_limit_seconds,
        task_time_limit=settings.task_time_limit_seconds,
        # Set on each of these tasks when Celery creates it (app/worker/tasks.py), as if given to
        # its decorator; process_data has no retries of its own.
        task_annotations={name: retry_policy(settings) for name in (GENERATE_REPORT, NOTIFY, CLEANUP)},
        task_track_started=True,
        # Results: Redis, one hour; the task record in MongoDB keeps the outcome longer.
        result_expires=settings.result_ttl_seconds,
        result_backend_transport_options={"retry_policy": {"max_retries": 0}, **results_options},
        redis_socket_connect_timeout=settings.broker_timeout_seconds,
        redis_socket_timeout=settings.broker_timeout_seconds,
        redis_retry_on_timeout=False,
        # Beat: RedBeat keeps the schedule in Redis and holds a lock, so a second beat
        # instance waits as a standby instead of sending every periodic task twice
        # (app.worker.beat: the same, riding out a Redis outage).
        beat_scheduler="app.worker.beat:ResilientRedBeatScheduler",
        # Bounded calls, so a tick during a network partition fails (and is retried) rather than hangs.
        redbeat_redis_url=redbeat_url,
        redbeat_redis_options=redbeat_options,
        redbeat_lock_timeout=settings.beat_lock_timeout_seconds,
        beat_max_loop_interval=min(30, settings.beat_lock_timeout_seconds // 2),
        beat_schedule={
            "cleanup-daily": {
                "task": CLEANUP,
                "schedule": _crontab(settings.cleanup_crontab),
                "options": {"queue": DEFAULT_QUEUE},
            }
        },
        worker_hijack_root_logger=False,
    )
    return app


@signals.setup_logging.connect
def _json_logging(**_: object) -> None:
    # Connecting to this signal stops Celery from installing its own log handlers.
    configure_logging(get_settings().log_level)


@signals.worker_init.connect
def _worker_role(**_: object) -> None:
    # Workers may run longer database operations than the API (see MONGO_WORKER_TIMEOUT_MS).
    mongo.set_role("worker")


celery_app = create_celery()
# Workers also consume the dead-letter queue, to record what arrives there (app/worker/dead_letters.py).
celery_app.steps["consumer"].add("app.worker.dead_letters:DeadLetterRecorder")
# Their liveness file for the container health check (app/worker/heartbeat.py).
celery_app.steps["consumer"].add("app.worker.heartbeat:Heartbeat")
