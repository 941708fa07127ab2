"""Failover and persistence of the compose stack: nothing lost."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
from e2e_stack import REPORT, task_result
from helpers import wait_for


def test_stopping_an_api_replica_loses_no_request(compose_stack, unique):
    with compose_stack.writer() as api:
        item = api.post("/api/items", json={"name": unique()}).json()
    failures: list[str] = []
    served = 0
    stop = threading.Event()

    def steady_reads() -> None:
        nonlocal served
        with httpx.Client(base_url=compose_stack.url, timeout=15) as client:
            while not stop.is_set():
                try:
                    response = client.get(f"/api/items/{item['id']}")
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:100]}")
                    served += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                time.sleep(0.04)  # ~25 requests per second, under the rate limit

    loop = threading.Thread(target=steady_reads)
    loop.start()
    victim = compose_stack.containers("api")[1]
    try:
        time.sleep(2)
        subprocess.run(["docker", "stop", victim], check=True, capture_output=True, timeout=60)
        time.sleep(3)  # keep reading with one replica gone
    finally:
        stop.set()
        loop.join(30)
        subprocess.run(["docker", "start", victim], check=True, capture_output=True, timeout=60)
    assert served > 50
    assert not failures, f"{len(failures)} of {served} GETs failed while a replica stopped: {failures[:5]}"
    compose_stack.wait_healthy()


def test_with_no_replica_up_every_request_gets_a_json_answer(compose_stack, unique):
    """nginx's own 502/504 is JSON for reads, plain creates and keyed creates alike (the last two
    go through its named locations: a second pass over the replicas, then the JSON page)."""
    compose_stack.compose("stop", "-t", "1", "api", "api-standby")
    try:
        with compose_stack.writer() as api:
            answers = [
                api.get("/health"),
                api.post("/api/items", json={"name": unique()}),
                api.post("/api/items", json={"name": unique()}, headers={"Idempotency-Key": unique()}),
            ]
    finally:
        compose_stack.compose("start", "api", "api-standby")
    for answer in answers:
        assert answer.status_code in (502, 504), (answer.request.method, answer.status_code, answer.text)
        assert answer.headers["content-type"] == "application/json", answer.text
        assert answer.json()["detail"]
        assert answer.headers["x-request-id"], answer.headers
    compose_stack.wait_healthy()


def test_a_task_survives_its_worker_being_stopped(compose_stack):
    with compose_stack.writer() as api:
        task_id = api.post("/api/async/process", json={"data": "survive", "iterations": 1000}).json()["task_id"]
        wait_for(lambda: api.get(f"/api/tasks/{task_id}").json()["state"] == "PROGRESS", timeout=60, what="running")

        def running_on():
            active = compose_stack.active_tasks()
            return next((node for node, tasks in active.items() if any(t["id"] == task_id for t in tasks)), None)

        node = wait_for(running_on, timeout=30, interval=1, what="the worker running the task")
        hostname = node.split("@", 1)[1]
        victim = next(c for c in compose_stack.containers("worker") if c.startswith(hostname))
        # Two seconds of warm shutdown, then SIGKILL: the unacknowledged task goes back to the queue.
        subprocess.run(["docker", "stop", "-t", "2", victim], check=True, capture_output=True, timeout=60)
        try:
            exit_code = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.ExitCode}}", victim], capture_output=True, text=True
            ).stdout.strip()
            assert exit_code == "137", "the worker was not killed mid-task"
            final = task_result(api, task_id, timeout=300)
        finally:
            subprocess.run(["docker", "start", victim], check=True, capture_output=True, timeout=60)
    assert final["state"] == "SUCCESS", final
    assert final["worker"] not in (None, node), "the task should have finished on another worker"
    compose_stack.wait_healthy()


def test_items_and_queued_tasks_survive_down_and_up(compose_stack, unique):
    with compose_stack.writer() as api:
        item = api.post("/api/items", json={"name": unique(), "price": 7.0}).json()
        compose_stack.compose("stop", "worker")
        queued = [api.post("/api/async/process", json={"data": n, "iterations": 3}).json()["task_id"] for n in range(3)]
        assert all(api.get(f"/api/tasks/{t}").json()["state"] == "PENDING" for t in queued)

    compose_stack.compose("down")  # containers and networks go, volumes stay
    assert not compose_stack.compose("ps", "-q").stdout.strip()
    started = time.monotonic()
    compose_stack.compose("up", "-d", "--wait", timeout=900)
    REPORT.append(f"stack up again after down (no build) in {time.monotonic() - started:.0f}s")

    with compose_stack.writer() as api:
        assert api.get(f"/api/items/{item['id']}").json() == item
        for task_id in queued:
            assert task_result(api, task_id)["state"] == "SUCCESS"
