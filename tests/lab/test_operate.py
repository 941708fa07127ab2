"""The operators' read-only verbs on the lab, after the rollout tests have deployed and rolled
back: what runs where (`fleet details`), the merged release history (`fleet audit`), logs
across hosts (`fleet logs`), and `fleet health`."""

from __future__ import annotations

import secrets
import subprocess
import threading
import time

import httpx
from conftest import Lab
from helpers import wait_for


def test_details_names_what_runs_where_and_on_which_image(converged: Lab):
    found = {host["host"]: host for host in converged.fleet_json("details")["hosts"]}
    outputs = converged.outputs
    expected = {
        "lb": {"nginx"},
        "api": {"api"},
        "workers": {"worker"},
        # A node of RabbitMQ's cluster, a Redis server (the primary or a replica) and a Sentinel.
        "data": {"rabbitmq", "redis", "redis-sentinel"},
    }
    for tier, containers in expected.items():
        for host in outputs["hosts"][tier]:
            running = {c["name"]: c for c in found[host["name"]]["containers"] if c["state"] == "running"}
            assert containers <= set(running), f"{host['name']}: {sorted(running)}"
    app = {
        c["image"]
        for tier in ("api", "workers")
        for host in outputs["hosts"][tier]
        for c in found[host["name"]]["containers"]
        if c["name"] in ("api", "worker", "beat")
    }
    assert app == {outputs["app_image"]}, app  # rolled back by the rollout tests
    assert {c["name"] for c in found[outputs["hosts"]["workers"][0]["name"]]["containers"]} >= {"beat"}
    # The lab's stack runs MongoDB on the first data node only (mongodbMembers: 1).
    data = [{c["name"] for c in found[host["name"]]["containers"]} for host in outputs["hosts"]["data"]]
    assert "mongodb" in data[0] and not any("mongodb" in others for others in data[1:]), data
    assert not any(host["error"] for host in found.values())

    table = converged.fleet("details", timeout=120)
    assert table.returncode == 0 and "deploy lock: free" in table.output
    first_api = outputs["hosts"]["api"][0]["name"]
    assert any(line.startswith(first_api) and " api " in line for line in table.output.splitlines()), table.output


def test_audit_merges_every_hosts_history_in_time_order(converged: Lab):
    history = converged.fleet_json("audit")["history"]
    app_hosts = {h["name"] for tier in ("api", "workers") for h in converged.outputs["hosts"][tier]}
    assert {entry["host"] for entry in history} == app_hosts
    assert [e["time"] for e in history] == sorted(e["time"] for e in history)
    # The rollout tests' story, in order, on the first API host.
    first_api = converged.outputs["hosts"]["api"][0]["name"]
    story = [(e["playbook"], e["images"]["api"]) for e in history if e["host"] == first_api]
    first = converged.outputs["app_image"]  # the stack's, by digest
    assert story[0] == ("site", first), story
    deployed = [image for playbook, image in story if playbook == "deploy"]
    assert deployed and deployed[0] != first and deployed[0].split("@")[0] == first.split("@")[0], story
    assert story[-1] == ("rollback", first), story

    table = converged.fleet("audit", timeout=120)
    assert table.returncode == 0 and table.output.splitlines()[0].split()[:4] == ["TIME", "HOST", "PLAYBOOK", "BY"]


def test_logs_come_from_every_host_and_follow_new_lines(converged: Lab):
    api_hosts = [h["name"] for h in converged.hosts("api")]
    # A request that only this test makes: an unknown item, logged as a 404 by whichever API host served it.
    marker = secrets.token_hex(12)
    with httpx.Client(base_url=converged.lb_url, timeout=10) as client:
        assert client.get(f"/api/items/{marker}").status_code == 404
    recent = converged.fleet("logs", "api", "-n", "200", timeout=120)
    assert recent.returncode == 0, recent.output[-3000:]
    hosts = {line.split(" | ", 1)[0].strip() for line in recent.output.splitlines() if " | " in line}
    assert hosts == set(api_hosts), hosts
    assert any(marker in line for line in recent.output.splitlines())

    # Follow: a new request's line arrives while the command runs, then it is stopped.
    follow = subprocess.Popen(
        converged.fleet_command("logs", "api", "-f", "-n", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=converged.env,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(follow.stdout), daemon=True)
    reader.start()
    try:
        followed = secrets.token_hex(12)
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=converged.lb_url, timeout=10) as client:
            while time.monotonic() < deadline and not any(followed in line for line in lines):
                client.get(f"/api/items/{followed}")
                time.sleep(1)
        assert any(followed in line for line in lines), lines[-20:]
        assert follow.poll() is None, "fleet logs -f ended by itself"
    finally:
        follow.terminate()
        follow.wait(timeout=30)
        reader.join(timeout=10)


def test_health_through_the_front_door(converged: Lab):
    # On a busy 2-CPU machine an API replica can answer its readiness late for one sweep (in a
    # CI run, just after `fleet logs -f` on every host): run it again, as an operator would.
    runs: list = []

    def healthy() -> bool:
        runs.append(converged.fleet("health", "--problems", timeout=120))
        return runs[-1].returncode == 0 and "HEALTHY" in runs[-1].output

    try:
        wait_for(healthy, timeout=60, interval=5, what="fleet health saying HEALTHY")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last sweep:\n{runs[-1].output[-3000:]}") from None
