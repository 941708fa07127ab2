"""What routes depend on: authentication per kind of access, and the failures that come with
each dependency, documented once so every route's OpenAPI entry lists them."""

from __future__ import annotations

from typing import Any

from fastapi import Depends
from pydantic import BaseModel

from app.core.config import get_settings
from app.core.security import require_api_key


class ErrorBody(BaseModel):
    detail: str


class DependencyErrorBody(ErrorBody):
    dependency: str


_settings = get_settings()

# Writes always need a key; reads only when AUTH_PROTECT_READS is on (read once at start-up,
# so the OpenAPI schema says exactly what this server enforces).
WRITE_ACCESS = [Depends(require_api_key)]
READ_ACCESS = WRITE_ACCESS if _settings.auth_protect_reads else []

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody, "description": "Missing or invalid API key"}}
READ_AUTH_ERRORS = AUTH_ERRORS if _settings.auth_protect_reads else {}
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
