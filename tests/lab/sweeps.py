"""`fleet-health --json` on the lab, for the tests that sweep it: one sweep, what it says of a
host, what fails, and a wait until the fleet is green that says what stayed red."""

from __future__ import annotations

import json

from conftest import Lab
from helpers import wait_for


def sweep(lab: Lab, *args: str) -> tuple[int, dict]:
    result = lab.fleet_health("--json", *args)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def checks_of(report: dict, host: str) -> dict[str, dict]:
    return {c["check"]: c for h in report["hosts"] if h["host"] == host for c in h["checks"]}


def failing(report: dict) -> dict[str, list[str]]:
    return {
        h["host"]: [f"{c['check']}: {c['detail']}" for c in h["checks"] if c["status"] == "fail"]
        for h in report["hosts"]
        if any(c["status"] == "fail" for c in h["checks"])
    }


def wait_green(lab: Lab, timeout: float = 120, interval: float = 3) -> dict:
    last: list[dict] = []

    def green():
        code, report = sweep(lab)
        last[:] = [report]
        return report if code == 0 else None

    try:
        return wait_for(green, timeout=timeout, interval=interval, what="a healthy fleet")
    except AssertionError as exc:  # say what stayed red, or short of a member (at risk)
        if not last:
            raise AssertionError(f"{exc}; no sweep") from None
        short = [
            f"{h['host']} {c['check']}: {c['detail']}"
            for h in last[0]["hosts"]
            for c in h["checks"]
            if c.get("data", {}).get("cluster_short")
        ]
        unreachable = [h["host"] for h in last[0]["hosts"] if not h["reachable"]]
        raise AssertionError(
            f"{exc}; last sweep {last[0]['status']}: failing {failing(last[0])}; short {short}; "
            f"unreachable {unreachable}"
        ) from None
