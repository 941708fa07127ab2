"""`make bench` in smoke mode against the e2e stack: a second or so per path, two client
addresses, both scenarios and the held connections. It proves the benchmark runs and reports
every path and target; the figures themselves come from `make bench`. Then shedding through
nginx: the same stack's API, overloaded, answers 503 with Retry-After at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from devstack.servers import REPO_ROOT

PATHS = {
    "static",
    "bare",
    "health",
    "health_one_address",
    "health_while_held",
    "cached_read",
    "uncached_read",
    "submit",
    "raw_find_one",
    "raw_publish",
    "tasks_end_to_end",
}


def test_the_benchmark_runs_and_reports_every_path(compose_stack, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench",
            "--smoke",
            "--env-file",
            str(compose_stack.env_file),
            "--results-dir",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    directory = Path(result.stderr.strip().splitlines()[-1].split("results in ", 1)[1])
    document = json.loads((directory / "results.json").read_text())
    assert set(document["paths"]) == PATHS
    for name, row in document["paths"].items():
        assert row["per_second"] > 0, (name, row)
        if "statuses" in row:  # a wrk path: its non-2xx answers, by status
            assert sum(row["statuses"].values()) == row["non_2xx"], (name, row)
    targets = {row["target"]: row for row in document["targets"]}
    # 5 path ratios; the light mix: p99 and CPU per answer; overload: answered and shed p99 (no
    # goodput: one step); heavy: users held; connections: held, and /health meanwhile.
    assert len(targets) == 12, sorted(targets)
    assert all(row["value"] != "n/a" for row in targets.values()), targets
    # Each measurement says where the CPU went: the stack's API replicas served /health.
    assert all(row["cpu"]["machine_busy"] > 0 for row in document["paths"].values())
    assert document["paths"]["health"]["cpu"]["services"]["api"] > 0
    # The users' mix ran on the stack and on the seed's "before", and requests were answered.
    for scenario in ("users", "heavy"):
        for system in ("stack", "before"):
            (run,) = document[scenario][system]
            assert run["requests"] > 0 and run["by_kind"], (scenario, system, run)
    # The heavy scenario followed the stack's task backlog until it drained.
    (heavy,) = document["heavy"]["stack"]
    assert heavy["backlog"]["samples"] and heavy["backlog"]["drain_seconds"] is not None, heavy["backlog"]
    held = document["connections"]
    assert held["opened"] == held["connections"] == 40 and held["errors"] == 0, held
    report = (directory / "report.md").read_text()
    assert "| cached_read |" in report and "| target | value | goal | met |" in report
    assert "## Heavy scenario" in report and "## Connections" in report
    assert "| stack |" in report and "| before |" in report and "## Where the CPU went" in report
    assert "| CPU per answer |" in report
    for plot in ("latency-users.png", "throughput.png"):
        assert (directory / plot).read_bytes().startswith(b"\x89PNG"), plot
    # Everything it added is gone: the anchors, the nginx server, the client network.
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=e2e", "--filter", "name=bench-"],
        capture_output=True,
        text=True,
    )
    assert not left.stdout.strip(), left.stdout
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count("bench-c") == 0
