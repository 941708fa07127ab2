"""Errors that every route shares, answered as JSON: dependencies that are down become 503."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from pymongo.errors import ConnectionFailure, PyMongoError
from starlette.exceptions import HTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"


class DependencyUnavailable(Exception):
    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(detail)
        self.dependency = dependency
        self.detail = detail


def unavailable(dependency: str, detail: str) -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content={"detail": detail, "dependency": dependency},
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


async def _dependency_unavailable(_: Request, exc: DependencyUnavailable) -> JSONResponse:
    log.warning("dependency unavailable", extra={"dependency": exc.dependency, "error": exc.detail})
    return unavailable(exc.dependency, exc.detail)


async def _mongo_error(_: Request, exc: PyMongoError) -> JSONResponse:
    # Connection failures and timeouts mean the database is unreachable or too slow: 503.
    if isinstance(exc, ConnectionFailure) or exc.timeout:
        log.warning("mongodb unavailable", extra={"error": str(exc)[:300]})
        return unavailable("mongodb", "MongoDB is unavailable; try again shortly.")
    return await _unexpected(_, exc)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": "Internal server error; see the logs for this request id."})


async def _method_not_allowed(request: Request, exc: HTTPException) -> Response:
    # Starlette lists only the first matching route's methods in Allow; a path served by
    # several routes (GET and POST /api/items) must list them all.
    allowed: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            allowed |= getattr(route, "methods", None) or set()
    return JSONResponse({"detail": exc.detail}, status_code=405, headers={"Allow": ", ".join(sorted(allowed))})


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 405:
        return await _method_not_allowed(request, exc)
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DependencyUnavailable, _dependency_unavailable)
    app.add_exception_handler(PyMongoError, _mongo_error)
    app.add_exception_handler(Exception, _unexpected)
