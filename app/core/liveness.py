"""The liveness files of the Celery side, which the container health check reads with one stat.

Only the standard library here: `python -m app.healthcheck` imports this module and nothing of the
app, so a probe costs Python's start-up (~0.03 s of CPU) instead of the app's imports (0.4 s for a
worker's, 0.8 s for beat's). That lets the image probe every few seconds, and a rolling deploy,
which waits for each new container to be healthy, sees it healthy seconds after it is.

- A worker node's file: touched every INTERVAL_SECONDS while its consumer is connected to the
  broker (app/worker/heartbeat.py); stale after STALE_AFTER_SECONDS.
- Beat's lease: after each tick that extended its lock, its modification time is set to when that
  lock runs out (app/worker/beat.py). Live while that time is ahead: a standby waiting for the
  lock never writes it, and one that can no longer extend its lock lets it lapse with the lock.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

# Settings.worker_heartbeat_dir reads the same variable, with this default.
DIRECTORY_VARIABLE = "WORKER_HEARTBEAT_DIR"
DEFAULT_DIRECTORY = Path("/tmp/celery-heartbeat")  # noqa: S108 - the container's private tmpfs
INTERVAL_SECONDS = 5.0
STALE_AFTER_SECONDS = 4 * INTERVAL_SECONDS


def directory() -> Path:
    return Path(os.environ.get(DIRECTORY_VARIABLE) or DEFAULT_DIRECTORY)


def beat_lease(workers: Path) -> Path:
    """Beside the workers' directory, so that no worker counts it as a node."""
    return workers.with_name(f"{workers.name}-beat")


def fresh_nodes(workers: Path, now: float | None = None) -> list[str]:
    """The worker nodes on this host whose consumer touched its file lately."""
    now = time.time() if now is None else now
    fresh = []
    with contextlib.suppress(FileNotFoundError):  # no worker yet, or one removing its file now
        for path in workers.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime < STALE_AFTER_SECONDS:
                    fresh.append(path.name)
    return fresh


def renew(lease: Path, seconds: float) -> None:
    """The lease runs `seconds` from now."""
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.touch()
    until = time.time() + seconds
    os.utime(lease, (until, until))


def live(lease: Path, now: float | None = None) -> bool:
    try:
        return lease.stat().st_mtime > (time.time() if now is None else now)
    except FileNotFoundError:
        return False
