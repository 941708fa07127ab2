"""Read-through cache for single items in Redis.

Entries live `CACHE_TTL_SECONDS` and are deleted after every write to their item. Redis is
an optimisation here, never a dependency: every failure falls back to MongoDB, and after
one failure the cache is skipped for `CACHE_RETRY_AFTER_SECONDS` so that an unreachable
Redis does not add its timeout to every request.

Staleness bound: if Redis is unreachable while an item is written, its entry cannot be
deleted and may be served for at most one TTL after Redis comes back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from app import metrics
from app.core.config import get_settings

log = logging.getLogger(__name__)

KEY_PREFIX = "cache:item:"

_lock = threading.Lock()
_client: redis.Redis | None = None
_skip_until = 0.0


def item_key(item_id: str) -> str:
    return KEY_PREFIX + item_id


def get_client() -> redis.Redis:
    """The process's Redis client (redis-py's pool re-creates connections after a fork)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                settings = get_settings()
                _client = redis.Redis.from_url(
                    settings.redis_url,
                    socket_connect_timeout=settings.cache_timeout_seconds,
                    socket_timeout=settings.cache_timeout_seconds,
                    health_check_interval=30,
                    max_connections=200,
                )
    return _client


def _available() -> bool:
    return get_settings().cache_enabled and time.monotonic() >= _skip_until


def _failed(operation: str, exc: Exception) -> None:
    global _skip_until
    _skip_until = time.monotonic() + get_settings().cache_retry_after_seconds
    metrics.CACHE_REQUESTS.labels(result="error").inc()
    log.warning("cache %s failed, serving from MongoDB", operation, extra={"error": str(exc)})


def get_or_load(item_id: str, load: Callable[[], dict[str, Any] | None]) -> tuple[dict[str, Any] | None, str]:
    """Return (document, cache status) where status is HIT, MISS or BYPASS."""
    if not _available():
        return load(), "BYPASS"
    key = item_key(item_id)
    try:
        cached = get_client().get(key)
    except redis.RedisError as exc:
        _failed("read", exc)
        return load(), "BYPASS"
    if cached is not None:
        metrics.CACHE_REQUESTS.labels(result="hit").inc()
        return json.loads(cached), "HIT"
    metrics.CACHE_REQUESTS.labels(result="miss").inc()
    document = load()
    if document is not None:
        try:
            get_client().set(key, json.dumps(document), ex=get_settings().cache_ttl_seconds)
        except redis.RedisError as exc:
            _failed("fill", exc)
    return document, "MISS"


def invalidate(item_id: str) -> None:
    """Delete the item's entry; tried (three times) even while reads bypass the cache."""
    if not get_settings().cache_enabled:
        return
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(3),
            wait=wait_fixed(0.05),
            retry=retry_if_exception_type(redis.RedisError),
            reraise=True,
        ):
            with attempt:
                get_client().delete(item_key(item_id))
    except redis.RedisError as exc:
        metrics.CACHE_INVALIDATION_FAILURES.inc()
        _failed("invalidate", exc)
