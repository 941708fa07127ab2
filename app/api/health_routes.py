"""Liveness (`/health`, no dependency calls) and readiness (`/health/ready`, every dependency)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pymongo
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from kombu import Connection

from app import __version__
from app.core.config import get_settings
from app.data import cache, mongo
from app.worker.celery_app import celery_app

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 1.0


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


def _results() -> None:
    celery_app.backend.client.ping()


def _broker() -> None:
    with Connection(get_settings().celery_broker_url, connect_timeout=CHECK_TIMEOUT_SECONDS) as connection:
        connection.connect()


def _checks() -> dict[str, Callable[[], None]]:
    settings = get_settings()
    checks = {"mongodb": _mongodb, "redis": _redis, "rabbitmq": _broker}
    if settings.celery_result_backend.rsplit("/", 1)[0] != settings.redis_url.rsplit("/", 1)[0]:
        checks["result_backend"] = _results
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


@router.get("/health/ready", responses={503: {"description": "A dependency is not ready"}})
async def readiness() -> JSONResponse:
    """Checks every dependency in parallel with short timeouts; 503 names the ones that failed."""
    checks = _checks()
    results = dict(zip(checks, await asyncio.gather(*(_run(check) for check in checks.values())), strict=True))
    ready = all(result["status"] == "ok" for result in results.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "unavailable", "version": __version__, "checks": results},
    )
