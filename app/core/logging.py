"""JSON logs for the API, gunicorn and Celery, each record tagged with the request or task id."""

from __future__ import annotations

import contextvars
import logging
import logging.config
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class ContextFilter(logging.Filter):
    """Adds `request_id` (HTTP) and `task_id`/`task_name` (Celery) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        try:
            from celery._state import get_current_task

            task = get_current_task()
        except ImportError:  # pragma: no cover - celery is a hard dependency
            task = None
        if task is not None and task.request.id:
            record.task_id = task.request.id
            record.task_name = task.name
        return True


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A dictConfig that writes one JSON object per line to stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
                "timestamp": False,
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["context"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # gunicorn's own loggers, so that the master and workers log JSON too.
            "gunicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            # uvicorn's access log is replaced by the app's JSON access log (app.api.middleware).
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "pymongo": {"level": "WARNING"},
            "httpx": {"level": "WARNING"},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))
