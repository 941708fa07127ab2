"""The Celery application: RabbitMQ broker, Redis results, and the delivery guarantees.

Nothing is lost when a worker dies: messages are persistent on durable queues, publishing
waits for the broker's confirm, and a task is acknowledged only after it finished
(`task_acks_late`), so the broker redelivers it if the worker is killed mid-task.
"""

from __future__ import annotations

from celery import Celery, signals
from celery.schedules import crontab
from kombu import Exchange, Queue

from app import db
from app.core.config import get_settings
from app.core.logging import configure_logging

DEFAULT_QUEUE = "default"
HEAVY_QUEUE = "heavy"


def _crontab(expression: str) -> crontab:
    minute, hour, day_of_month, month_of_year, day_of_week = expression.split()
    return crontab(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year, day_of_week=day_of_week
    )


def create_celery() -> Celery:
    settings = get_settings()
    app = Celery(
        settings.app_name,
        broker=settings.celery_broker_url,
        backend=settings.celery_result_backend,
        include=["app.tasks"],
    )
    # A topic exchange: RabbitMQ's native delayed delivery (countdowns on quorum queues) needs
    # one; routing keys are the queue names.
    exchange = Exchange("tasks", type="topic", durable=True)
    # Quorum queues are replicated across a RabbitMQ cluster; Celery then turns off global
    # QoS and uses RabbitMQ's native delayed delivery for countdowns (retries).
    queue_arguments = {"x-queue-type": "quorum"} if settings.celery_queue_type == "quorum" else None
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
        broker_connection_retry_on_startup=True,
        broker_heartbeat=30,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # A down broker makes a submit fail fast (503) instead of blocking the request.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        task_queues=(
            Queue(DEFAULT_QUEUE, exchange, routing_key=DEFAULT_QUEUE, durable=True, queue_arguments=queue_arguments),
            Queue(HEAVY_QUEUE, exchange, routing_key=HEAVY_QUEUE, durable=True, queue_arguments=queue_arguments),
        ),
        task_default_queue=DEFAULT_QUEUE,
        task_default_exchange="tasks",
        task_default_routing_key=DEFAULT_QUEUE,
        task_routes={"app.tasks.process_data": {"queue": HEAVY_QUEUE, "routing_key": HEAVY_QUEUE}},
        task_soft_time_limit=settings.task_soft_time_limit_seconds,
        task_time_limit=settings.task_time_limit_seconds,
        task_track_started=True,
        # Results: Redis, one hour; the task record in MongoDB keeps the outcome longer.
        result_expires=settings.result_ttl_seconds,
        result_backend_transport_options={"retry_policy": {"max_retries": 0}},
        redis_socket_connect_timeout=settings.broker_timeout_seconds,
        redis_socket_timeout=settings.broker_timeout_seconds,
        redis_retry_on_timeout=False,
        # Beat: RedBeat keeps the schedule in Redis and holds a lock, so a second beat
        # instance waits as a standby instead of sending every periodic task twice
        # (app.beat: the same, riding out a Redis outage).
        beat_scheduler="app.beat:ResilientRedBeatScheduler",
        redbeat_redis_url=settings.celery_result_backend,
        # Bounded calls, so a tick during a network partition fails (and is retried) rather than hangs.
        redbeat_redis_options={
            "socket_connect_timeout": settings.broker_timeout_seconds,
            "socket_timeout": settings.broker_timeout_seconds,
        },
        redbeat_lock_timeout=settings.beat_lock_timeout_seconds,
        beat_max_loop_interval=min(30, settings.beat_lock_timeout_seconds // 2),
        beat_schedule={
            "cleanup-daily": {
                "task": "app.tasks.cleanup",
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
    db.set_role("worker")


celery_app = create_celery()
