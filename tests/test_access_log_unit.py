"""ACCESS_LOG: which requests the API writes an access line for (in-process, on a small app)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from app.api import middleware
from app.api.middleware import RequestContextMiddleware
from app.core.logging import configure_logging


async def answering_app(scope, receive, send) -> None:
    """Answers the status named by the path (/200, /404, ...); /slow answers 200 after a pause."""
    name = scope["path"].strip("/")
    if name == "slow":
        await asyncio.sleep(0.2)
    status = 200 if name == "slow" else int(name)
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def logged_paths(mode: str, paths: list[str], capsys) -> list[str]:
    configure_logging("INFO")
    capsys.readouterr()
    app = RequestContextMiddleware(answering_app, max_body_bytes=1024, access_log=mode)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for path in paths:
            await client.get(path)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    return [line["path"] for line in lines if line["message"] == "request"]


PATHS = ["/200", "/201", "/404", "/422", "/503", "/slow"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("all", PATHS),
        ("errors", ["/404", "/422", "/503", "/slow"]),
        ("off", []),
    ],
)
async def test_access_log_modes(mode, expected, capsys, monkeypatch):
    monkeypatch.setattr(middleware, "SLOW_REQUEST_SECONDS", 0.1)
    assert await logged_paths(mode, PATHS, capsys) == expected


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
