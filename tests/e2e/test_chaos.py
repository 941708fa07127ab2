"""Chaos: each fault in turn, through nginx, under a steady load of reads, creates and submits
(with Idempotency-Keys, resent after a failure as a careful client does), with gunicorn workers
recycled every few hundred requests throughout. For each fault: every acknowledged create is
readable afterwards, each key made exactly one item, every accepted task reaches SUCCESS, and no
request got a 5xx or no answer at all, apart from the documented 503s naming the dependency
that was down. The figures go to the terminal summary (and the table in docs/failures.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from chaos import Load, final_states, polite_get
from e2e_stack import REPORT, ComposeStack
from helpers import wait_for

ROWS: list[str] = []


@dataclass
class Fault:
    name: str
    inject: Callable[[ComposeStack], None]
    dependency: str | None = None  # the dependency down on purpose: its 503s are documented
    heavy: int = 0  # long tasks first, so that one is running when the fault strikes


def docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True, timeout=300)


def crash(container: str) -> None:
    """SIGKILL the container's main process from the host, as the kernel's OOM killer would.
    (`docker kill` counts as a manual stop, and the restart policy would not bring it back.)"""
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", container], capture_output=True, text=True, check=True
    ).stdout.strip()
    os.kill(int(pid), signal.SIGKILL)


def stop_an_api_replica(stack: ComposeStack) -> None:
    victim = stack.containers("api")[0]
    docker("stop", victim)
    time.sleep(3)
    docker("start", victim)


def kill_an_api_replica(stack: ComposeStack) -> None:
    crash(stack.containers("api")[0])  # its restart policy brings it back


def kill_a_busy_worker(stack: ComposeStack) -> None:
    def busy() -> str | None:
        nodes = [node for node, tasks in stack.active_tasks().items() if tasks]
        # A worker's node name ends with its hostname: the first 12 characters of its container id.
        return next((c for c in stack.containers("worker") for node in nodes if node.endswith("@" + c[:12])), None)

    crash(wait_for(busy, timeout=60, interval=1, what="a worker in the middle of a task"))


def kill_beat(stack: ComposeStack) -> None:
    crash(stack.containers("beat")[0])


def restart(service: str) -> Callable[[ComposeStack], None]:
    return lambda stack: stack.compose("restart", service)


def stop_mongodb_for(seconds: int) -> Callable[[ComposeStack], None]:
    def inject(stack: ComposeStack) -> None:
        stack.compose("stop", "mongodb")
        time.sleep(seconds)
        stack.compose("start", "mongodb")

    return inject


def forget_live_results(stack: ComposeStack, task_ids: list[str]) -> None:
    """Delete the tasks' live results in Redis (kept an hour), as time would: what the status says
    after this comes from the task records in MongoDB alone."""
    keys = [f"celery-task-meta-{task_id}" for task_id in task_ids]
    stack.compose("exec", "-T", "redis", "redis-cli", "-n", "1", "DEL", *keys)


def reload_nginx(stack: ComposeStack) -> None:
    for _ in range(5):
        stack.compose("exec", "-T", "nginx", "nginx", "-s", "reload")
        time.sleep(1)


def recreate_api(stack: ComposeStack) -> None:
    stack.compose("up", "-d", "--no-deps", "--force-recreate", "api")


FAULTS = [
    Fault("API replica stopped", stop_an_api_replica),
    Fault("API replica SIGKILLed", kill_an_api_replica),
    Fault("worker SIGKILLed mid-task", kill_a_busy_worker, heavy=3),
    Fault("beat killed", kill_beat),
    Fault("Redis restarted", restart("redis")),  # nothing answers 503 for Redis: it is the cache and the live view
    Fault("RabbitMQ restarted", restart("rabbitmq"), dependency="rabbitmq"),
    Fault("MongoDB stopped for 20 s", stop_mongodb_for(20), dependency="mongodb"),
    # Longer than a worker waits for its final write (MONGO_WORKER_TIMEOUT_MS, 30 s): the long
    # tasks finish inside the outage and their outcomes go to the broker until MongoDB is back.
    Fault("MongoDB stopped for 60 s", stop_mongodb_for(60), dependency="mongodb", heavy=3),
    Fault("nginx reloaded (5 times)", reload_nginx),
    Fault("api recreated (--force-recreate)", recreate_api),
]


@pytest.fixture(scope="module")
def seeded(compose_stack) -> list[str]:
    def create(n: int) -> str:
        body = {"name": f"chaos-seed-{n}-{time.time_ns()}"}
        # Right after `up`, a replica may still answer 503 (a dependency not yet reached).
        created = wait_for(lambda: (r := api.post("/api/items", json=body)).status_code == 201 and r, timeout=60)
        return created.json()["id"]

    with compose_stack.writer() as api:
        return [create(n) for n in range(8)]


@pytest.fixture(scope="module", autouse=True)
def table():
    yield
    if ROWS:
        REPORT.extend(
            [
                "chaos: fault | requests | 5xx (documented 503) | no answer or other 5xx | 409 retries "
                "| creates acked/readable | tasks accepted/succeeded | recovered after",
                *ROWS,
            ]
        )


def unhandled_errors(stack: ComposeStack) -> list[str]:
    """The API's last "unhandled error" lines (each with its traceback), for a failure's message."""
    log = stack.compose("logs", "--no-log-prefix", "api", "api-standby", check=False).stdout
    return [line[:3000] for line in log.splitlines() if '"unhandled error"' in line][-3:]


def upstream_events(stack: ComposeStack) -> list[str]:
    """For a failure's message: nginx's last complaints about a replica (a timeout names the replica
    and the request), and the replicas' last worker starts, exits and timeouts (gunicorn)."""
    nginx = stack.compose("logs", "--no-log-prefix", "nginx", check=False).stdout
    api = stack.compose("logs", "--timestamps", "api", "api-standby", check=False).stdout
    workers = ("Booting worker", "Worker exiting", "WORKER TIMEOUT", "was sent", "Handling signal")
    return [line[:500] for line in nginx.splitlines() if "upstream" in line][-5:] + [
        line[:300] for line in api.splitlines() if any(event in line for event in workers)
    ][-12:]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_a_fault_under_load_loses_nothing(compose_stack, seeded, fault):
    load = Load(compose_stack.url, compose_stack.api_key, seeded, heavy=fault.heavy).start()
    try:
        time.sleep(4)
        struck = time.monotonic()
        fault.inject(compose_stack)
        over = time.monotonic()
        time.sleep(8)
    finally:
        load.stop()
    compose_stack.wait_healthy()

    with compose_stack.writer() as api:
        unreadable = [
            item for item in load.created.values() if polite_get(api, f"/api/items/{item['id']}").json() != item
        ]
        states = final_states(api, list(load.submitted.values()))
        # Every outcome is in its record, not only in Redis's live result.
        forget_live_results(compose_stack, list(load.submitted.values()))
        unrecorded = [
            task_id
            for task_id in load.submitted.values()
            if (status := polite_get(api, f"/api/tasks/{task_id}").json())["state"] != "SUCCESS"
            or status["result"] is None
        ]
        # A task that did not succeed, as its status says it (with its error), for the message.
        unsuccessful = {t: polite_get(api, f"/api/tasks/{t}").json() for t, s in states.items() if s != "SUCCESS"}
        counted = {"name_prefix": load.prefix, "limit": 1, "count": "true"}
        made = polite_get(api, "/api/items", params=counted).json()["total"]
    tally = load.tally({fault.dependency} if fault.dependency else set())
    succeeded = sum(1 for state in states.values() if state == "SUCCESS")
    fives = sum(count for status, count in tally["statuses"].items() if status and status >= 500)
    recovered = load.recovery(struck, over)
    ROWS.append(
        f"{fault.name} | {tally['requests']} | {fives} ({tally['documented_503']}) | {len(tally['unexpected'])} "
        f"| {tally['in_progress_409']} | {len(load.created)}/{len(load.created) - len(unreadable)} "
        f"| {len(states)}/{succeeded} | {recovered:.1f} s"
    )
    print(f"\n{ROWS[-1]}")

    assert not tally["unexpected"], (
        # When each was sent, in seconds after the fault struck (it was over after `over`).
        f"fault over after {over - struck:.1f} s",
        [
            (round(a.at - struck, 1), a.kind, a.status, round(a.took, 1), a.path, a.error)
            for a in tally["unexpected"][:6]
        ],
        unhandled_errors(compose_stack),
        upstream_events(compose_stack),
    )
    assert not unreadable, unreadable[:3]
    assert succeeded == len(states), unsuccessful
    assert not unrecorded, unrecorded[:5]
    assert len(load.created) > 10 and len(states) > 3, (len(load.created), len(states))
    # Each key got its item back (a retry that found the name taken would be a 409), and made
    # no other: exactly one item per key.
    assert set(load.created) == set(load.attempted), set(load.attempted) - set(load.created)
    assert made == len(load.created)
