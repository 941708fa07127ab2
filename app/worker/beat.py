"""Celery beat's scheduler: RedBeat (schedule and single-instance lock in Redis) that rides out
a Redis outage instead of exiting on the first failed tick."""

from __future__ import annotations

import logging
from typing import Any

import redis
from redbeat import RedBeatScheduler

log = logging.getLogger(__name__)

# How soon to try again while Redis is unreachable; well inside the lock timeout, so the lock
# is extended again as soon as Redis is back.
OUTAGE_RETRY_SECONDS = 2.0


class ResilientRedBeatScheduler(RedBeatScheduler):
    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            return super().tick(*args, **kwargs)
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
