"""The request middleware's last resort: an unhandled error is a JSON 500 that keeps the request
id, in the response and in the log line (checked in-process, on an app that fails on purpose)."""

from __future__ import annotations

import json

import httpx
import pytest

from app.api.middleware import RequestContextMiddleware
from app.core.logging import configure_logging


async def failing_app(scope, receive, send) -> None:
    raise RuntimeError("a bug")


@pytest.mark.anyio
async def test_an_unhandled_error_is_a_500_with_the_request_id(capsys):
    configure_logging("INFO")  # the app's JSON lines, written to the (captured) stderr
    app = RequestContextMiddleware(failing_app, max_body_bytes=1024, access_log="errors")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/anything", headers={"X-Request-ID": "trace-500"})
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error; see the logs for this request id."}
    assert response.headers["x-request-id"] == "trace-500"
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    error = next(line for line in lines if line["message"] == "unhandled error")
    assert error["request_id"] == "trace-500" and "RuntimeError: a bug" in error["exc_info"]
    access = next(line for line in lines if line["message"] == "request")
    assert access["request_id"] == "trace-500" and access["status"] == 500


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
