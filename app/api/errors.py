"""Errors that every route shares, answered as JSON: dependencies that are down become 503.
Anything unhandled is answered 500 by the request middleware (app/api/middleware.py), which keeps
the request id on the response and in the log line."""

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
INTERNAL_ERROR_DETAIL = "Internal server error; see the logs for this request id."


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
    raise exc  # anything else is a bug: the request middleware answers 500 with the request id


HTTP_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


async def _method_not_allowed(request: Request, exc: HTTPException) -> Response:
    # Allow lists every method some route serves on this path (GET and POST /api/items are two
    # routes), found by asking the routes themselves, whatever they are nested in.
    routes = request.app.router.routes
    allowed = [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return JSONResponse({"detail": exc.detail}, status_code=405, headers={"Allow": ", ".join(allowed)})


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 405:
        return await _method_not_allowed(request, exc)
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DependencyUnavailable, _dependency_unavailable)
    app.add_exception_handler(PyMongoError, _mongo_error)
