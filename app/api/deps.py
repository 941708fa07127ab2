"""What routes depend on: authentication per kind of access, and the failures that come with
each dependency, documented once so every route's OpenAPI entry lists them."""

from __future__ import annotations

from typing import Any

from fastapi import Depends
from pydantic import BaseModel

from app.core.config import Settings
from app.core.security import require_api_key


class ErrorBody(BaseModel):
    detail: str


class DependencyErrorBody(ErrorBody):
    dependency: str


# Writes always need a key.
WRITE_ACCESS = [Depends(require_api_key)]

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody, "description": "Missing or invalid API key"}}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body could not be decoded"},
    413: {"model": ErrorBody, "description": "The body is larger than MAX_BODY_BYTES"},
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": DependencyErrorBody, "description": "A dependency (named in `dependency`) is unavailable"}
}
IDEMPOTENCY_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "Conflicts with the current state, or a request with the same "
        "Idempotency-Key is still running (Retry-After says when to try again)",
    },
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "Not found"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "Conflicts with the current state"}
}


def read_access(settings: Settings) -> dict[str, Any]:
    """The options of a router of read routes: the key check and its 401 when AUTH_PROTECT_READS
    is on, nothing otherwise. Given when the app is created, so that the OpenAPI schema says
    exactly what this server enforces."""
    if settings.auth_protect_reads:
        return {"dependencies": WRITE_ACCESS, "responses": AUTH_ERRORS}
    return {}
