"""What the lab's scripts (lab.py, cloud.py) run commands and wait with."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed


class LabError(Exception):
    pass


def run(
    *command: str,
    check: bool = True,
    input: str | None = None,
    timeout: float = 1800,
    env: dict[str, str] | None = None,
) -> str:
    """A command's output; LabError with its tail when it fails. `env` is added to ours."""
    environment = {**os.environ, **env} if env else None
    result = subprocess.run(command, capture_output=True, text=True, input=input, timeout=timeout, env=environment)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(command[:6])}... failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Until `ready()` is true, asking every second; LabError naming `what` after `timeout` seconds."""
    retrying = Retrying(
        stop=stop_after_delay(timeout), wait=wait_fixed(1), retry=retry_if_result(lambda done: not done)
    )
    try:
        retrying(ready)
    except RetryError:
        raise LabError(f"{what} within {timeout:.0f}s") from None
