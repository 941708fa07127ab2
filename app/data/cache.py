"""Read-through cache for single items in Redis.

An entry is the item's response body, JSON as the API sends it: a hit goes out as it is, with
no decoding, validation or encoding, and without a thread (redis.asyncio). Entries live
`CACHE_TTL_SECONDS` and are deleted after every write to their item (by the sync routes,
with the sync client). Redis is an optimisation here, never a dependency: every failure falls
back to MongoDB, and after one failure the cache is skipped for `CACHE_RETRY_AFTER_SECONDS`
so that an unreachable Redis does not add its timeout to every request.

A write never loses to a slower read. Every write bumps the item's generation (a counter in
Redis) as it deletes the entry, and a read that missed fills the entry only if the generation is
still the one it saw before it asked MongoDB (a script, so the check and the fill are one step).
Without that, a read that took the old document and a write that invalidated before the read's
fill would leave the old body, or a deleted item, served for a TTL.

Staleness bound: if Redis is unreachable while an item is written, its entry cannot be
deleted and may be served for at most one TTL after Redis comes back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from redis.backoff import NoBackoff
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from app.core import metrics
from app.core.config import get_settings
from app.data import redis_servers

log = logging.getLogger(__name__)

# v2: the response body (v1 entries held the document, and are left to expire).
KEY_PREFIX = "cache:item:v2:"
GENERATION_PREFIX = "cache:generation:item:"
# How long a generation outlives its item's last write: far longer than a read waits for MongoDB,
# so a read can never see a generation expire between its look and its fill.
GENERATION_SECONDS = 600
# KEYS: entry, generation; ARGV: body, the generation the read saw ("" for none), TTL.
FILL_UNLESS_WRITTEN = """
if (redis.call('GET', KEYS[2]) or '') == ARGV[2] then
    return redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
end
return false
"""

_lock = threading.Lock()
_client: redis.Redis | None = None
_async_client: redis.asyncio.Redis | None = None
_async_client_pid: int | None = None
_skip_until = 0.0


def item_key(item_id: str) -> str:
    return KEY_PREFIX + item_id


def generation_key(item_id: str) -> str:
    return GENERATION_PREFIX + item_id


def _client_options(retry: type[redis.retry.Retry] | type[redis.asyncio.retry.Retry]) -> dict:
    settings = get_settings()
    return {
        "socket_connect_timeout": settings.cache_timeout_seconds,
        "socket_timeout": settings.cache_timeout_seconds,
        "health_check_interval": 30,
        "max_connections": 200,
        # A pooled connection that Redis closed (a restart) is replaced at once, on the same
        # command. `from_url` leaves connections without redis-py's default retry, and a
        # timeout is not retried: it has already spent the cache's budget.
        "retry": retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }


def get_client() -> redis.Redis:
    """The process's Redis client (redis-py's pool re-creates connections after a fork)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = redis_servers.client(get_settings().redis_url, **_client_options(redis.retry.Retry))
    return _client


def get_async_client() -> redis.asyncio.Redis:
    """The process's asyncio client, made on first use, in the event loop that uses it."""
    global _async_client, _async_client_pid
    if _async_client is None or _async_client_pid != os.getpid():
        _async_client = redis_servers.async_client(
            get_settings().redis_url, **_client_options(redis.asyncio.retry.Retry)
        )
        _async_client_pid = os.getpid()
    return _async_client


def _available() -> bool:
    return get_settings().cache_enabled and time.monotonic() >= _skip_until


def _failed(operation: str, exc: Exception) -> None:
    global _skip_until
    _skip_until = time.monotonic() + get_settings().cache_retry_after_seconds
    metrics.CACHE_REQUESTS.labels(result="error").inc()
    log.warning("cache %s failed, serving from MongoDB", operation, extra={"error": str(exc)})


async def read_through(item_id: str, load: Callable[[], Awaitable[bytes | None]]) -> tuple[bytes | None, str]:
    """Return (response body, cache status) where status is HIT, MISS or BYPASS."""
    if not _available():
        return await load(), "BYPASS"
    keys = item_key(item_id), generation_key(item_id)
    client = get_async_client()
    try:
        cached, generation = await client.mget(keys)
    except redis.RedisError as exc:
        _failed("read", exc)
        return await load(), "BYPASS"
    if cached is not None:
        metrics.CACHE_REQUESTS.labels(result="hit").inc()
        return cached, "HIT"
    metrics.CACHE_REQUESTS.labels(result="miss").inc()
    body = await load()
    if body is not None:
        try:
            seen = generation or b""
            await client.eval(FILL_UNLESS_WRITTEN, 2, *keys, body, seen, get_settings().cache_ttl_seconds)
        except redis.RedisError as exc:
            _failed("fill", exc)
    return body, "MISS"


def invalidate(item_id: str) -> None:
    """Delete the item's entry and bump its generation, so that no read that began before
    fills it again; tried (three times) even while reads bypass the cache."""
    if not get_settings().cache_enabled:
        return
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(3),
            wait=wait_fixed(0.05),
            retry=retry_if_exception_type(redis.RedisError),
            reraise=True,
        ):
            with attempt, get_client().pipeline() as step:  # MULTI ... EXEC: all or nothing
                step.incr(generation_key(item_id))
                step.expire(generation_key(item_id), GENERATION_SECONDS)
                step.delete(item_key(item_id))
                step.execute()
    except redis.RedisError as exc:
        metrics.CACHE_INVALIDATION_FAILURES.inc()
        _failed("invalidate", exc)
