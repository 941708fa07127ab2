"""API-key authentication: `X-API-Key` must match one of `API_KEYS` (several allow rotation)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import APIKeyHeader

from app.core.config import Settings, get_settings

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="One of the keys in API_KEYS.")


def _check(presented: str | None, settings: Settings) -> None:
    if not settings.api_keys:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="No API key is configured on the server; the operator must set API_KEYS.",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    if not presented:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="Missing API key: send it in the X-API-Key header.",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    # Compare against every key so timing does not reveal which one matched.
    matched = False
    for key in settings.api_key_values:
        matched |= secrets.compare_digest(presented.encode(), key.encode())
    if not matched:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="Invalid API key.", headers={"WWW-Authenticate": "ApiKey"}
        )


PresentedKey = Annotated[str | None, Depends(api_key_header)]
CurrentSettings = Annotated[Settings, Depends(get_settings)]


def require_api_key(presented: PresentedKey, settings: CurrentSettings) -> None:
    """For endpoints that change state."""
    _check(presented, settings)


def require_read_access(presented: PresentedKey, settings: CurrentSettings) -> None:
    """For reads: open unless AUTH_PROTECT_READS is on."""
    if settings.auth_protect_reads:
        _check(presented, settings)
