"""Celery beat's scheduler: RedBeat (schedule and single-instance lock in Redis) that rides out
a Redis outage instead of exiting on the first failed tick, and keeps a lease file for the
container health check: live while the lock it last extended is (app/core/liveness.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import redis
from redbeat import RedBeatScheduler

from app.core import liveness
from app.core.config import get_settings

log = logging.getLogger(__name__)

# How soon to try again while Redis is unreachable; well inside the lock timeout, so the lock
# is extended again as soon as Redis is back.
OUTAGE_RETRY_SECONDS = 2.0


class ResilientRedBeatScheduler(RedBeatScheduler):
    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            wait = super().tick(*args, **kwargs)
        except redis.exceptions.LockNotOwnedError:
            # The lock expired while Redis was away. Free, it is ours again; held by another beat,
            # carrying on would send every periodic task twice, so exit and let the restart policy
            # bring this one back as a standby.
            if self.lock.acquire(blocking=False):
                log.warning("beat's lock expired during a Redis outage; it was free and is held again")
                return 0.1
            log.critical("beat's lock expired during a Redis outage and another beat holds it now; exiting")
            raise
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            retry = min(OUTAGE_RETRY_SECONDS, self.max_interval)
            log.warning("beat cannot reach Redis (%s); nothing is sent until it is back, next try in %.0fs", exc, retry)
            return retry
        # The tick began by extending the lock by lock_timeout: it is held until then at least.
        liveness.renew(self._lease, self.lock_timeout)
        return wait

    def close(self) -> None:
        self._lease.unlink(missing_ok=True)
        super().close()

    @property
    def _lease(self) -> Path:
        return liveness.beat_lease(get_settings().worker_heartbeat_dir)
