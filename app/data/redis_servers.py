"""Where Redis is: the one server a URL names, or the primary that Redis Sentinel names.

With REDIS_SENTINELS set, every Redis client of the app (the cache, Celery's results, beat's
lock) asks the Sentinels for the primary of REDIS_SENTINEL_MASTER, and asks again when it loses
it: a connection refused, or a demoted primary answering READONLY (redis-py then drops the
connection), so the client's next attempt reaches the new primary. REDIS_URL and
CELERY_RESULT_BACKEND still give the user, password and database; their host is not used.
Without Sentinels, the URLs are used as they are (compose, the tests, a single data node).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.connection import parse_url

from app.core.config import Settings, get_settings


def _sentinel_kwargs(settings: Settings, timeout: float | None) -> dict[str, Any]:
    """How a client talks to the Sentinels themselves: their own password, and a bound on each
    question, so that an unreachable Sentinel costs one timeout before the next is asked."""
    return {
        "password": settings.redis_sentinel_password.get_secret_value() or None,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }


def _credentials(url: str) -> dict[str, Any]:
    """The user, password and database of a Redis URL (its host is Sentinel's to give)."""
    parsed = parse_url(url)
    return {key: parsed[key] for key in ("username", "password", "db") if parsed.get(key) is not None}


def _client(module: Any, sentinel_module: Any, url: str, options: dict[str, Any]) -> Any:
    settings = get_settings()
    if not settings.redis_sentinels:
        return module.Redis.from_url(url, **options)
    sentinel = sentinel_module.Sentinel(
        settings.redis_sentinels, sentinel_kwargs=_sentinel_kwargs(settings, options.get("socket_timeout"))
    )
    return sentinel.master_for(settings.redis_sentinel_master, **_credentials(url), **options)


def client(url: str, **options: Any) -> redis.Redis:
    """A client of the server at `url`, or of the Sentinels' primary, with redis-py's `options`."""
    return _client(redis, redis.sentinel, url, options)


def async_client(url: str, **options: Any) -> redis.asyncio.Redis:
    """`client`, for asyncio."""
    return _client(redis.asyncio, redis.asyncio.sentinel, url, options)


def result_backend(settings: Settings) -> tuple[str, str, dict[str, Any]]:
    """Celery's result backend: the name of its class in app.worker.celery_app, its URL, and what
    it adds to the transport options. With Sentinels, Celery's own form of URL:
    `sentinel://user:password@host:port/db;...`, and the primary's name."""
    if not settings.redis_sentinels:
        return "LiveStateBackend", settings.celery_result_backend, {}
    credentials = _credentials(settings.celery_result_backend)
    user = quote(credentials.get("username") or "", safe="")
    password = quote(credentials.get("password") or "", safe="")
    auth = f"{user}:{password}@" if password else ""
    db = credentials.get("db", 0)
    url = ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in settings.redis_sentinels)
    return (
        "LiveStateSentinelBackend",
        url,
        {
            "master_name": settings.redis_sentinel_master,
            "sentinel_kwargs": _sentinel_kwargs(settings, settings.broker_timeout_seconds),
        },
    )


def redbeat(settings: Settings) -> tuple[str, dict[str, Any]]:
    """RedBeat's URL and its options (its lock and schedule live beside the results). RedBeat
    goes through Sentinel for a `redis-sentinel` URL with `sentinels` among its options."""
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.broker_timeout_seconds,
        "socket_timeout": settings.broker_timeout_seconds,
    }
    if not settings.redis_sentinels:
        return settings.celery_result_backend, options
    return "redis-sentinel://", options | _credentials(settings.celery_result_backend) | {
        "sentinels": settings.redis_sentinels,
        "service_name": settings.redis_sentinel_master,
        "sentinel_kwargs": _sentinel_kwargs(settings, settings.broker_timeout_seconds),
    }
