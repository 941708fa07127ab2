"""`fleet maintain` on the lab: the three data nodes restarted one at a time under a steady load
through the load balancer (reads, and creates and submits each with an Idempotency-Key that the
client keeps until it has an answer). Nothing acknowledged is lost, and each node is back in its
clusters before the next goes."""

from __future__ import annotations

import time

import httpx
from chaos import Load, final_states, polite_get
from conftest import TIMINGS, Lab, failed_hosts
from sweeps import wait_green


def started_at(lab: Lab, node: dict) -> dict[str, str]:
    """When each data container on the node last started."""
    command = "sudo docker ps --format '{{.Names}}' | xargs sudo docker inspect -f '{{.Name}} {{.State.StartedAt}}'"
    answer = lab.ssh(node["private_ip"], command)
    assert answer.returncode == 0, answer.stderr
    return dict(line.lstrip("/").split() for line in answer.stdout.splitlines())


def test_maintain_restarts_each_data_node_in_turn_and_loses_nothing(converged: Lab):
    nodes = converged.hosts("data")
    before = {node["name"]: started_at(converged, node) for node in nodes}
    key = converged.outputs["secrets"]["api_key"]
    with httpx.Client(base_url=converged.lb_url, headers={"X-API-Key": key}, timeout=15) as api:
        seeded = [
            api.post("/api/items", json={"name": f"maintain-seed-{n}-{time.time_ns()}"}).json()["id"] for n in range(4)
        ]
    load = Load(converged.lb_url, key, seeded, pause=0.25).start(readers=2, creators=1, submitters=1)
    try:
        started = time.monotonic()
        run = converged.fleet("maintain", timeout=1500)
        seconds = time.monotonic() - started
    finally:
        load.stop()
    assert run.returncode == 0 and not failed_hosts(run), run.output[-6000:]
    # One node at a time: each restarted its data services, in the inventory's order.
    after = {node["name"]: started_at(converged, node) for node in nodes}
    for node in nodes:
        restarted = {name for name, at in after[node["name"]].items() if at != before[node["name"]].get(name)}
        assert {"rabbitmq", "redis", "redis-sentinel"} <= restarted, (node["name"], restarted)
    order = [min(after[node["name"]][c] for c in ("rabbitmq", "redis")) for node in nodes]
    assert order == sorted(order), order
    # The Redis primary was handed over before its node went, and the clusters are whole.
    assert "TASK [Ask the Sentinels to fail over]" in run.output, run.output[-4000:]
    # Each container's health check passes within its start period (RabbitMQ's first is 10 s in).
    wait_green(converged)

    with httpx.Client(base_url=converged.lb_url, headers={"X-API-Key": key}, timeout=15) as api:
        unreadable = [i for i in load.created.values() if polite_get(api, f"/api/items/{i['id']}").json() != i]
        states = final_states(api, list(load.submitted.values()), timeout=240)
    # The lab runs MongoDB on the first data node alone: its restart is a short outage (503).
    tally = load.tally({"mongodb"})
    TIMINGS.append(
        f"fleet maintain, 3 data nodes one at a time: {seconds:.0f}s ({tally['requests']} requests, "
        f"{tally['documented_503']} documented 503s, {len(load.created)} creates, {len(states)} tasks)"
    )
    assert not tally["unexpected"], tally["unexpected"][:6]
    assert not unreadable, unreadable[:3]
    assert set(states.values()) == {"SUCCESS"}, {t: s for t, s in states.items() if s != "SUCCESS"}
    assert set(load.created) == set(load.attempted), set(load.attempted) - set(load.created)
    assert len(load.created) > 5 and len(states) > 3, (len(load.created), len(states))
