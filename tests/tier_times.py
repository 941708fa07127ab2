"""The time of each tier of the suite (lint, service, infra, e2e, lab), printed at the end of a
run: the sum of each test's setup, call and teardown, so a tier's servers, compose stack or lab
count in the tier that starts them. `make test` passes the time ruff took as LINT_SECONDS. Tests
spread over several processes (pytest-xdist) add up to more than the run took: its wall-clock
time is printed too."""

from __future__ import annotations

import os
import time
from collections import defaultdict

import pytest

TIERS = ("lint", "service", "infra", "e2e", "lab")
seconds: dict[str, float] = defaultdict(float)
started = time.monotonic()


def tier(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    if path.startswith(("tests/e2e/", "tests/lab/", "tests/infra/")):
        return path.split("/")[1]
    return "lint" if path == "tests/test_ansible_lint.py" else "service"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    seconds[tier(report.nodeid)] += report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    lint = os.environ.get("LINT_SECONDS", "")
    ruff = int(lint) if lint.isdigit() else 0
    if lint.isdigit():
        seconds["lint"] += ruff
    if not seconds:
        return

    def line(name: str, spent: float, note: str = "") -> None:
        minutes, rest = divmod(round(spent), 60)
        terminalreporter.write_line(f"{name:<8} {minutes:3d} min {rest:02d} s{note}")

    terminalreporter.section("time by tier")
    for name in TIERS:
        if name in seconds:
            line(name, seconds[name])
    line("total", sum(seconds.values()))
    note = " (this run and ruff before it)" if lint.isdigit() else " (this run)"
    line("wall", time.monotonic() - started + ruff, note)
