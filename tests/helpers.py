"""Polling helpers for tests: every wait is bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable
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
