"""Liveness (`/health`, no dependency calls) and readiness (`/health/ready`, every dependency).

Readiness through the load balancer (the request carries nginx's X-Forwarded-For) says only
ready or not: each check's error names internal addresses. Its details go to callers inside,
which reach a replica directly (the deploy gate, `fleet health`, the container's health check),
and to callers with an API key. Each process checks at most once per VERDICT_SECONDS, whoever
asks and however often: a flood of readiness calls costs the dependencies nothing more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pymongo
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from kombu import Connection

from app import __version__
from app.core import metrics
from app.core.config import get_settings
from app.core.security import key_matches
from app.data import cache, mongo
from app.worker.celery_app import celery_app

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 1.0
VERDICT_SECONDS = 1.0

_verdict: tuple[float, dict[str, dict[str, Any]]] | None = None
_checking = asyncio.Lock()


@router.get("/health")
async def liveness() -> dict[str, str]:
    """The process is up and serving; says nothing about its dependencies."""
    return {"status": "ok", "version": __version__}


def _mongodb() -> None:
    with pymongo.timeout(CHECK_TIMEOUT_SECONDS):
        mongo.get_client().admin.command("ping")
    mongo.ensure_indexes()


def _redis() -> None:
    cache.get_client().ping()


def _result_backend() -> None:
    celery_app.backend.client.ping()


def _broker() -> None:
    with Connection(get_settings().celery_broker_url, connect_timeout=CHECK_TIMEOUT_SECONDS) as connection:
        connection.connect()


def _checks() -> dict[str, Callable[[], None]]:
    settings = get_settings()
    checks = {"mongodb": _mongodb, "redis": _redis, "rabbitmq": _broker}
    if settings.celery_result_backend.rsplit("/", 1)[0] != settings.redis_url.rsplit("/", 1)[0]:
        checks["result_backend"] = _result_backend
    return checks


async def _run(check: Callable[[], None]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.to_thread(check), timeout=CHECK_TIMEOUT_SECONDS + 0.5)
    except TimeoutError:
        return {"status": "error", "error": f"no answer within {CHECK_TIMEOUT_SECONDS + 0.5:.1f}s"}
    except Exception as exc:  # noqa: BLE001 - any failure makes the dependency not ready
        return {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


async def _results() -> dict[str, dict[str, Any]]:
    """Every check's result, at most VERDICT_SECONDS old; callers that come while a check runs
    wait for it instead of starting their own."""
    global _verdict
    async with _checking:
        if _verdict is None or time.monotonic() - _verdict[0] >= VERDICT_SECONDS:
            checks = _checks()
            for dependency in checks:
                metrics.READINESS_CHECKS.labels(dependency=dependency).inc()
            results = await asyncio.gather(*(_run(check) for check in checks.values()))
            _verdict = time.monotonic(), dict(zip(checks, results, strict=True))
        return _verdict[1]


@router.get("/health/ready", responses={503: {"description": "A dependency is not ready"}})
async def readiness(request: Request) -> JSONResponse:
    """Checks every dependency in parallel with short timeouts; 503 names the ones that failed,
    to callers inside or with an API key."""
    results = await _results()
    ready = all(result["status"] == "ok" for result in results.values())
    content: dict[str, Any] = {"status": "ready" if ready else "unavailable"}
    if "x-forwarded-for" not in request.headers or key_matches(request.headers.get("x-api-key")):
        content |= {"version": __version__, "checks": results}
    return JSONResponse(status_code=200 if ready else 503, content=content)
