"""Lose a whole host, lose nothing: each data node in turn, then the load balancer that holds
the front door's address, killed (`docker kill` of the lab host: no shutdown, no goodbye) under a
steady load through the front door, and started again.

The load is the chaos suite's (tests/chaos.py): reads, and creates and submits each with an
Idempotency-Key the client keeps until it has an answer. For each fault the test reports what
docs/failures.md tabulates: acknowledged creates lost, acknowledged submits whose task did not
complete, the seconds in which answers were errors, and how long until the fleet was whole again.
The lab runs MongoDB as one server on the first data node, so that node's loss is an outage of
documented 503s; the goal is still nothing lost, for every host."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
from chaos import Load, final_states, polite_get
from conftest import TIMINGS, Lab
from sweeps import sweep, wait_green

# Long enough for the clusters to notice (Sentinel's down-after is 5 s) and for the load to meet
# the outage; the sweep of the fleet during it takes most of this.
OUTAGE_SECONDS = 12
# How long the load goes on once the host is started again (its services coming back).
LOAD_AFTER_START_SECONDS = 15
# The dependencies whose outage an answer may name (a 503 with `dependency`): the host's.
DATA_DEPENDENCIES = {"mongodb", "redis", "rabbitmq"}


def docker(*args: str) -> None:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def front_door_holder(lab: Lab) -> dict:
    """The load balancer that holds the virtual address now (keepalived)."""
    address = lab.outputs["lb_public_ip"]
    for host in lab.hosts("lb"):
        held = lab.ssh(host["private_ip"], f"ip -4 -o addr show | grep -qw {address}")
        if held.returncode == 0:
            return host
    raise AssertionError(f"no load balancer holds {address}")


# When the fleet was last seen whole here (each fault ends by waiting for it): the next fault
# does not sweep again first.
WHOLE_AT: list[float] = []


def lose(lab: Lab, host: dict, allowed_503: set[str]) -> dict:
    """Kill `host` under load, start it again, wait until the fleet is whole; what was lost."""
    if not WHOLE_AT or time.monotonic() - WHOLE_AT[-1] > 120:
        wait_green(lab)
    key = lab.outputs["secrets"]["api_key"]
    with httpx.Client(base_url=lab.lb_url, headers={"X-API-Key": key}, timeout=15) as api:
        seeded = [api.post("/api/items", json={"name": f"loss-{n}-{time.time_ns()}"}).json()["id"] for n in range(4)]
    load = Load(lab.lb_url, key, seeded, pause=0.25).start(readers=2, creators=1, submitters=1)
    try:
        time.sleep(3)
        fault_at = time.monotonic()
        docker("kill", host["name"])
        time.sleep(3)
        # What an operator sees meanwhile: the host named, the fleet down.
        code, report = sweep(lab)
        unreachable = [h["host"] for h in report["hosts"] if not h["reachable"]]
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - fault_at)))
        docker("start", host["name"])
        back_at = time.monotonic()
        time.sleep(LOAD_AFTER_START_SECONDS)  # the load meets the host's return too
    finally:
        load.stop()
    # Then without the load: on the lab, ten hosts share two CPUs, and under it the sweeps' own
    # checks (each a Python or Erlang start in a container) missed their deadlines.
    wait_green(lab, timeout=300, interval=5)
    WHOLE_AT.append(time.monotonic())
    whole_after = WHOLE_AT[-1] - back_at
    with httpx.Client(base_url=lab.lb_url, headers={"X-API-Key": key}, timeout=15) as api:
        unreadable = [i for i in load.created.values() if polite_get(api, f"/api/items/{i['id']}").json() != i]
        states = final_states(api, list(load.submitted.values()), timeout=240)
    tally = load.tally(allowed_503)
    error_seconds, last_error_after = load.errors_since(fault_at)
    figures = {
        "requests": tally["requests"],
        "creates": len(load.created),
        "creates_lost": len(unreadable),
        "creates_unanswered": len(set(load.attempted) - set(load.created)),
        "submits": len(states),
        "submits_not_completed": sum(1 for state in states.values() if state != "SUCCESS"),
        "error_seconds": error_seconds,
        "last_error_after": round(last_error_after, 1),
        "documented_503": tally["documented_503"],
        "unexpected": len(tally["unexpected"]),
        "whole_after_seconds": round(whole_after),
    }
    TIMINGS.append(f"{host['name']} killed for {OUTAGE_SECONDS}s: {figures}")
    assert code == 2 and host["name"] in unreachable, (code, unreachable)
    assert not unreadable, unreadable[:3]
    assert {t: s for t, s in states.items() if s != "SUCCESS"} == {}
    assert set(load.created) == set(load.attempted), set(load.attempted) - set(load.created)
    assert len(load.created) > 3 and len(states) > 3, figures
    return {**figures, "unexpected_answers": tally["unexpected"]}


@pytest.mark.parametrize("index", [0, 1, 2], ids=["data-1", "data-2", "data-3"])
def test_a_data_node_killed_under_load_loses_nothing(converged: Lab, index: int):
    figures = lose(converged, converged.host("data", index), DATA_DEPENDENCIES)
    # nginx keeps answering: the failures are the API's 503s, each naming what is down.
    assert not figures["unexpected_answers"], figures["unexpected_answers"][:6]


def test_the_load_balancer_holding_the_front_door_killed_under_load_loses_nothing(converged: Lab):
    holder = front_door_holder(converged)
    # VRRP goes over the private network: let in from the other load balancers' private addresses
    # alone, never from a public one.
    rules = converged.ssh(holder["private_ip"], "sudo nft list table inet host_firewall | grep vrrp").stdout
    others = [h for h in converged.hosts("lb") if h["name"] != holder["name"]]
    assert all(h["private_ip"] in rules and h["public_ip"] not in rules for h in others), rules
    # A 503 naming a data service is the API's answer to one that was slow on the busy lab, not
    # the fault's: counted, as documented.
    figures = lose(converged, holder, DATA_DEPENDENCIES)
    # The connections open on the dead host are lost with it (no answer): clients send again,
    # with the same key, to the address the other load balancer now holds.
    assert all(a.status is None for a in figures["unexpected_answers"]), figures["unexpected_answers"][:6]
    assert figures["error_seconds"] < OUTAGE_SECONDS, figures
    # It stays with the other one (nopreempt): the host's return costs clients nothing; the host
    # is the standby again, its keepalived running.
    assert front_door_holder(converged)["name"] != holder["name"]
    standby = converged.ssh(holder["private_ip"], "systemctl is-active keepalived")
    assert standby.stdout.strip() == "active", standby.stdout + standby.stderr
