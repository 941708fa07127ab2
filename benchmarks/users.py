"""Users with think time, the seed's headline: locust, distributed over the client addresses.

A locust master runs here, on the client network's gateway address; one locust worker runs
in each client namespace (benchmarks/clients.py), so the users reach nginx from as many
addresses as there are workers, each under nginx's per-address limit like real users. The
master merges every worker's figures, so the percentiles are locust's own, not averages.

The workload is benchmarks/locustfile.py (reads 70 %, creates 15 %, submits 10 %, status
polls 5 %, 1 s think time); requests the API shed are counted apart. Statistics are reset
once every user is running: the figures are those of the steady state, the ramp-up left out.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.clients import NICE, ClientNetwork

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
SHED = "shed"  # the name benchmarks/locustfile.py records shed requests under
LOCUST = [sys.executable, "-m", "locust"]
MASTER_PORT = 5557
SPAWN_RATE = 100  # users started per second


def run_users(
    clients: ClientNetwork, host: str, users: int, seconds: float, env: dict[str, str], workers: int | None = None
) -> dict:
    """`users` users against `host` (http://address[:port][/prefix]) for `seconds` once all are
    running; returns the aggregate and per-request-kind figures."""
    workers = min(workers or clients.count, clients.count, users)
    with tempfile.TemporaryDirectory(prefix="bench-locust-") as scratch:
        prefix = Path(scratch) / "stats"
        common = ["-f", str(LOCUSTFILE)]
        master = subprocess.Popen(
            [
                *NICE,
                *LOCUST,
                *common,
                "--loglevel",
                "INFO",  # says when a worker missed its heartbeats
                "--master",
                "--master-bind-host",
                clients.gateway,
                "--master-bind-port",
                str(MASTER_PORT),
                "--headless",
                "--expect-workers",
                str(workers),
                "--expect-workers-max-wait",
                "60",
                "-u",
                str(users),
                "-r",
                str(SPAWN_RATE),
                "-t",
                f"{seconds + users / SPAWN_RATE:.0f}s",
                "--reset-stats",
                "--stop-timeout",
                "5",
                "--host",
                host,
                "--csv",
                str(prefix),
                "--only-summary",
            ],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(1)  # the master listens before the workers call it
        processes = [
            subprocess.Popen(
                clients.command(
                    index,
                    [
                        *LOCUST,
                        *common,
                        "--loglevel",
                        "WARNING",
                        "--worker",
                        "--master-host",
                        clients.gateway,
                        "--master-port",
                        str(MASTER_PORT),
                    ],
                ),
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for index in range(workers)
        ]
        try:
            output, _ = master.communicate(timeout=seconds + users / SPAWN_RATE + 180)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            if master.poll() is None:
                master.kill()
        stats = prefix.with_name("stats_stats.csv")
        if not stats.exists():
            raise RuntimeError(f"locust wrote no statistics (exit {master.returncode}): {output[-1500:]}")
        # A worker starved of CPU misses heartbeats; the master then hands its users to the
        # others, whose addresses may go over nginx's per-address limit (429s).
        lost = output.count("setting state to missing")
        return {**summarize(stats, users, workers), "workers_missed_heartbeats": lost}


def summarize(stats: Path, users: int, workers: int) -> dict:
    rows = {row["Name"]: row for row in csv.DictReader(stats.open())}

    def figures(row: dict) -> dict:
        return {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "per_second": round(float(row["Requests/s"]), 1),
            "p50_ms": float(row["50%"]),
            "p95_ms": float(row["95%"]),
            "p99_ms": float(row["99%"]),
            "max_ms": float(row["Max Response Time"]),
        }

    total = rows.pop("Aggregated")
    # Why requests failed, most frequent first: "read: HTTPError('503 ...')".
    failed = stats.with_name("stats_failures.csv")
    reasons = [
        (f"{row['Name']}: {row['Error']}", int(row["Occurrences"]))
        for row in (csv.DictReader(failed.open()) if failed.exists() else [])
    ]
    by_kind = {name: figures(row) for name, row in rows.items()}
    shed = by_kind.get(SHED, {"requests": 0, "p99_ms": 0.0, "per_second": 0.0})
    answered = [kind for name, kind in by_kind.items() if name != SHED and kind["requests"]]
    return {
        "users": users,
        "client_addresses": workers,
        **figures(total),
        "by_kind": by_kind,
        # The requests that were not shed: each kind's p99 is under a bound only if at most 1 % of
        # its requests are over it, and then so are at most 1 % of all, so the largest p99 of the
        # kinds bounds the answered requests' p99.
        "answered_p99_ms": max((kind["p99_ms"] for kind in answered), default=0.0),
        "ok_per_second": round(sum(k["per_second"] * (1 - k["failures"] / k["requests"]) for k in answered), 1),
        "shed": shed["requests"],
        "shed_p99_ms": shed["p99_ms"],
        "failure_reasons": dict(sorted(reasons, key=lambda pair: -pair[1])[:5]),
    }
