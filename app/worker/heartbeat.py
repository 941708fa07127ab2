"""A worker's liveness, as a file its consumer touches while it is connected to the broker.

The container health check (`python -m app.healthcheck worker`) reads the file's age
(app/core/liveness.py) instead of asking the worker over the broker: a `celery ping` from a fresh
process cost about 1.7 s of CPU per probe (the app's imports, and a broadcast that every worker
answers). The file exists only while the consumer runs: it is removed when the broker
connection is lost (Celery restarts the consumer's steps) and when the worker stops, and it
goes stale if the worker's event loop hangs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from celery import bootsteps

from app.core import liveness


class Heartbeat(bootsteps.StartStopStep):
    """Touches `<WORKER_HEARTBEAT_DIR>/<node name>` every few seconds once tasks are consumed."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.path: Path | None = None
        self.tref: Any = None

    def start(self, c: Any) -> None:
        from app.core.config import get_settings

        directory = get_settings().worker_heartbeat_dir
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / c.hostname
        self._touch()
        self.tref = c.timer.call_repeatedly(liveness.INTERVAL_SECONDS, self._touch)

    def _touch(self) -> None:
        if self.path is not None:
            self.path.touch()

    def stop(self, c: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    shutdown = stop
