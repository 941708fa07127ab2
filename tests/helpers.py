"""Polling helpers for tests (every wait is bounded in time), requests spread over the API's
workers, and the container health check."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx


def wait_for(check: Callable[[], Any], timeout: float = 30, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def wait_for_task(api: httpx.Client, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll the status endpoint until the task reaches a final state."""

    def final() -> dict[str, Any] | None:
        body = api.get(f"/api/tasks/{task_id}").json()
        return body if body["state"] in ("SUCCESS", "FAILURE", "REVOKED") else None

    return wait_for(final, timeout=timeout, interval=0.2, what=f"task {task_id} finished")


def shed(response: httpx.Response) -> bool:
    """A 503 the API's admission control answered (app/api/admission.py): a `reason`, a
    Retry-After, and nothing done, so the same request may be sent again after the delay."""
    return (
        response.status_code == 503
        and "retry-after" in response.headers
        and response.headers.get("content-type", "").startswith("application/json")
        and "reason" in response.json()
    )


def until_final(send: Callable[[], httpx.Response | None], seconds: float) -> httpx.Response | None:
    """Call `send` (a request with an Idempotency-Key, so sending it again is safe) until its answer
    is final, as a careful client does: again after no answer (None), a 503, or an answer with a
    Retry-After (a 409: the first attempt still runs), waiting as that says (at most 5 s). None if
    no final answer came within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = send()
        if response is not None and response.status_code != 503 and "retry-after" not in response.headers:
            return response
        wait = float(response.headers.get("retry-after", 0.5)) if response is not None else 0.5
        time.sleep(min(wait, 5))
    return None


def healthcheck(
    stack: Any, role: str, bind: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m app.healthcheck ROLE`, as a container runs it, against the test stack (with `env`
    over its environment, for another process than the stack's)."""
    from devstack.servers import REPO_ROOT

    env = {
        **os.environ,
        **stack.env,
        "BIND": bind or f"127.0.0.1:{stack.api.port}",
        "PYTHONPATH": str(REPO_ROOT),
        **(env or {}),
    }
    return subprocess.run([sys.executable, "-m", "app.healthcheck", role], env=env, capture_output=True, timeout=30)


def spread_gets(url: str, count: int, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """`count` GETs from 8 threads, each on a new connection, so the kernel spreads them over
    the gunicorn workers."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: httpx.get(url, headers=headers, timeout=10), range(count)))
