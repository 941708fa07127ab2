"""API-key authentication: `X-API-Key` must match one of `API_KEYS` (several allow rotation)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import APIKeyHeader

from app.core.config import get_settings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="One of the keys in API_KEYS.")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "ApiKey"})


async def require_api_key(presented: Annotated[str | None, Depends(api_key_header)]) -> None:
    # async: a few comparisons, which FastAPI would otherwise send to its thread pool (as it
    # does every sync dependency), a hop that costs more than the check itself.
    settings = get_settings()
    if not settings.api_keys:
        raise _unauthorized("No API key is configured on the server; the operator must set API_KEYS.")
    if not presented:
        raise _unauthorized("Missing API key: send it in the X-API-Key header.")
    if not key_matches(presented):
        raise _unauthorized("Invalid API key.")


def key_matches(presented: str | None) -> bool:
    """Whether the key is one of API_KEYS, compared with every one so that timing does not reveal
    which one matched."""
    matched = False
    for key in get_settings().api_key_values:
        matched |= secrets.compare_digest((presented or "").encode(), key.encode())
    return matched and bool(presented)
