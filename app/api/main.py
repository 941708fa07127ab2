"""The FastAPI application: `gunicorn -c python:app.api.gunicorn_conf app.api.main:app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pymongo.errors import PyMongoError

from app import __version__
from app.api import errors, health_routes, item_routes, metrics_routes, publishing, task_routes
from app.api.admission import AdmissionControl
from app.api.middleware import RequestContextMiddleware
from app.core.config import get_settings
from app.core.logging import configure_logging
from app.data import mongo

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    try:
        mongo.ensure_indexes()
    except PyMongoError as exc:
        # Start anyway: readiness reports MongoDB, and the indexes are created on first use.
        log.warning("mongodb not reachable at start-up", extra={"error": str(exc)[:300]})
    yield
    mongo.close_client()
    await mongo.close_async_client()


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level)
    app = FastAPI(
        title="Microservices API",
        version=__version__,
        description="Items on MongoDB (synchronous) and background tasks on Celery (asynchronous).",
        lifespan=lifespan,
    )
    publishing.bound_broker_io()
    errors.install(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes, access_log=settings.access_log)
    # Added last, so outermost: a shed request skips the rest of the stack.
    app.add_middleware(
        AdmissionControl,
        max_in_flight=settings.admission_max_in_flight,
        max_lag_ms=settings.admission_max_lag_ms,
    )
    routers = [
        health_routes.router,
        item_routes.router,
        item_routes.read_router(settings),
        task_routes.router,
        task_routes.read_router(settings),
        metrics_routes.router,
    ]
    for router in routers:
        app.include_router(router)
    return app


app = create_app()
