"""fleet-health (and ansible/health.yml) on the converged lab: green, then one fault at a time."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import LAB_NAME, TIMINGS, Lab
from helpers import wait_for, wait_for_task
from sweeps import checks_of, failing, sweep, wait_green

LAB_HOST_IMAGE = "microservices-lab/host:bookworm"


def problem_rows(lab: Lab) -> tuple[list[list[str]], str]:
    """`fleet-health --problems` as (rows split into HOST TIER CHECK STATUS TOOK DETAIL, summary)."""
    lines = lab.fleet_health("--problems").stdout.strip().splitlines()
    if len(lines) == 1:  # nothing but the summary
        return [], lines[0]
    assert lines[0].split() == ["HOST", "TIER", "CHECK", "STATUS", "TOOK", "DETAIL"] and lines[-2] == "", lines
    return [line.split(maxsplit=5) for line in lines[1:-2]], lines[-1]


def lab_hosts(lab: Lab) -> int:
    return sum(len(hosts) for hosts in lab.outputs["hosts"].values())


def test_a_converged_fleet_is_healthy(converged: Lab):
    # Just converged: containers started last are within their health checks' start periods, and
    # the RabbitMQ nodes are still syncing their quorum queues on the busy 2-CPU machine.
    wait_green(converged, timeout=180, interval=5)
    started = time.monotonic()
    result = converged.fleet_health()
    everyone = lab_hosts(converged)
    TIMINGS.append(f"fleet-health sweep of the {everyone} lab hosts: {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith(f"HEALTHY: {everyone} hosts")
    rows, summary = problem_rows(converged)
    # Healthy allows warnings (a busy 2-CPU machine shows its load): no ok row, no FAIL row.
    assert summary.startswith(f"HEALTHY: {everyone} hosts") and all(row[3] == "WARN" for row in rows), rows
    code, report = sweep(converged)
    assert code == 0 and report["status"] == "healthy", failing(report)
    data = checks_of(report, converged.host("data")["name"])
    expected = {"data:volume", "data:mongodb", "data:redis", "data:rabbitmq", "container:mongodb", "disk", "clock"}
    assert expected <= set(data)
    assert data["data:volume"]["detail"].startswith("/srv/data mounted")
    # Each data node runs a RabbitMQ cluster member, a Redis server and a Sentinel; MongoDB runs
    # on the first alone (the lab's mongodbMembers: 1).
    primary_ip = redis_primary(converged)
    for node in converged.hosts("data"):
        checks = checks_of(report, node["name"])
        assert {"data:rabbitmq", "data:redis", "data:sentinel", "container:redis-sentinel"} <= set(checks), checks
        assert ("data:mongodb" in checks) == (node == converged.host("data")), checks
        assert "volatile-ttl" in checks["data:redis"]["detail"]
        primary = node["private_ip"] == primary_ip
        role = "primary with 2 of 2 replicas" if primary else f"replica of {primary_ip}, link up"
        assert checks["data:redis"]["detail"].startswith(role), checks["data:redis"]
        assert checks["data:sentinel"]["detail"].startswith(f"primary {primary_ip}; OK 3 usable Sentinels")
        assert "quorum members online 3 of 3" in checks["data:rabbitmq"]["detail"], checks["data:rabbitmq"]
    worker = checks_of(report, converged.host("workers")["name"])
    assert worker["workers:celery"]["status"] == "ok" and "consuming, heartbeat" in worker["workers:celery"]["detail"]
    lb = checks_of(report, converged.host("lb")["name"])
    assert lb["lb:upstreams"]["detail"] == "all 2 upstream API hosts answer"
    assert [c["detail"] for c in report["fleet"]] == [f"exactly one beat, on {converged.host('workers')['name']}"]


def test_a_stopped_worker_container_is_named_then_recovers(converged: Lab):
    host = converged.host("workers", 1)
    assert converged.ssh(host["private_ip"], "sudo docker stop -t 5 worker").returncode == 0
    try:
        code, report = sweep(converged)
        assert code == 1 and report["status"] == "degraded"
        problems = failing(report)
        assert list(problems) == [host["name"]]
        assert any("container worker is exited" in p for p in problems[host["name"]]), problems
        rows, summary = problem_rows(converged)
        assert summary.startswith(f"DEGRADED: {lab_hosts(converged)} hosts")
        failed = [row for row in rows if row[3] == "FAIL"]
        assert failed and all(row[0] == host["name"] for row in failed), rows
        assert all(row[3] in ("WARN", "FAIL") for row in rows), rows
    finally:
        converged.ssh(host["private_ip"], "sudo docker start worker")
    wait_green(converged)


def test_a_dead_host_is_reported_unreachable_and_the_rest_still_checked(converged: Lab):
    host = converged.host("api", 1)
    container = host["name"]
    subprocess.run(["docker", "pause", container], check=True, capture_output=True)
    try:
        started = time.monotonic()
        code, report = sweep(converged, "--timeout", "10")
        took = time.monotonic() - started
    finally:
        subprocess.run(["docker", "unpause", container], check=True, capture_output=True)
    assert code == 2 and report["status"] == "down"
    unreachable = [h["host"] for h in report["hosts"] if not h["reachable"]]
    assert unreachable == [container]
    assert "gave no answer within 10s" in checks_of(report, container)["ssh"]["detail"]
    assert len([h for h in report["hosts"] if h["reachable"]]) == lab_hosts(converged) - 1  # everyone else
    assert took < 10 + 10, f"the sweep waited {took:.0f}s on one dead host"
    wait_green(converged)


def test_a_rabbitmq_node_down_shows_on_its_data_node_and_the_workers_carry_on(converged: Lab):
    """The first node, which every client names first: the clients fail over to the others."""
    data = converged.host("data")
    assert converged.ssh(data["private_ip"], "sudo docker stop rabbitmq").returncode == 0
    try:
        code, report = sweep(converged)
        problems = failing(report)
        assert code == 1, problems
        assert any("container rabbitmq is exited" in p for p in problems[data["name"]]), problems
        assert any(p.startswith("data:rabbitmq") for p in problems[data["name"]])

        def workers_connected() -> bool:
            workers = [checks_of(sweep(converged)[1], w["name"]) for w in converged.hosts("workers")]
            return all(w["workers:celery"]["status"] == "ok" for w in workers)

        wait_for(workers_connected, timeout=90, interval=5, what="the workers on the other RabbitMQ nodes")
        # Another node, once the workers consume there: nothing of its own fails, and its
        # cluster is short of a member.
        other = converged.host("data", 1)["name"]
        code, report = sweep(converged, "--limit", other)
        cluster = checks_of(report, other)["data:rabbitmq"]
        assert (code, report["status"], cluster["status"]) == (3, "at risk", "warn"), (failing(report), cluster)
        assert "quorum members online 2 of 3" in cluster["detail"], cluster
        # A task submitted through the front door runs meanwhile.
        key = converged.outputs["secrets"]["api_key"]
        with httpx.Client(base_url=converged.lb_url, headers={"X-API-Key": key}, timeout=10) as api:
            task = api.post("/api/async/process", json={"data": "node down", "iterations": 1})
            assert task.status_code == 202, task.text
            assert wait_for_task(api, task.json()["task_id"])["state"] == "SUCCESS"
    finally:
        converged.ssh(data["private_ip"], "sudo docker start rabbitmq")
    wait_green(converged, timeout=180)


def redis_primary(lab: Lab, via: str | None = None) -> str:
    """The address of the Redis primary, as the Sentinels name it (asked from the first data
    node, or from `via`)."""
    node = via or lab.host("data")["private_ip"]
    answer = lab.ssh(node, "sudo docker exec redis-sentinel sh /usr/local/etc/redis/run.sh primary")
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.strip()


def test_a_lost_redis_primary_is_replaced_and_comes_back_as_a_replica(converged: Lab):
    """The Redis primary stops: the Sentinels promote a replica, the app follows it (cached
    reads, task results), fleet health names the stopped server, and once it starts again it
    joins the new primary as a replica."""
    nodes = {node["private_ip"]: node for node in converged.hosts("data")}
    old = redis_primary(converged)
    key = converged.outputs["secrets"]["api_key"]
    assert converged.ssh(old, "sudo docker stop redis").returncode == 0
    started = time.monotonic()
    try:
        wait_for(lambda: redis_primary(converged, via=old) != old, timeout=60, interval=1, what="a replica promoted")
        TIMINGS.append(f"Redis primary stopped, a replica promoted: {time.monotonic() - started:.0f}s")
        new = redis_primary(converged, via=old)
        code, report = sweep(converged, "--limit", "data")
        assert code == 1 and any("container redis is exited" in p for p in failing(report)[nodes[old]["name"]])
        # The new primary's own view: nothing fails, it serves short of a replica.
        survivor = nodes[new]["name"]
        code, report = sweep(converged, "--limit", survivor)
        redis = checks_of(report, survivor)["data:redis"]
        assert (code, report["status"], redis["status"]) == (3, "at risk", "warn"), (failing(report), redis)
        assert redis["detail"].startswith("primary with") and "of 2 replicas" in redis["detail"], redis
        # Through the front door: a create and its cached read, and a task, whose live state
        # goes to the new primary.
        with httpx.Client(base_url=converged.lb_url, headers={"X-API-Key": key}, timeout=10) as api:
            created = api.post("/api/items", json={"name": f"failover-{time.time_ns()}", "price": 1.5})
            assert created.status_code == 201, created.text
            for _ in range(2):  # the first read fills the cache, the second is served from it
                read = api.get(f"/api/items/{created.json()['id']}")
                assert read.status_code == 200 and read.json() == created.json(), read.text
            task = api.post("/api/async/process", json={"data": "redis failover", "iterations": 1})
            assert task.status_code == 202, task.text
            assert wait_for_task(api, task.json()["task_id"])["state"] == "SUCCESS"
        # The app wrote them to the new primary: the cached item (database 0), the task's live
        # state (database 1, Celery's results).
        item_id, task_id = created.json()["id"], task.json()["task_id"]
        for db, pattern in ((0, f"cache:item:*{item_id}"), (1, f"*{task_id}*")):
            held = converged.ssh(new, f"sudo docker exec redis redis-cli -n {db} --scan --pattern '{pattern}'")
            assert held.stdout.strip(), (pattern, held.stdout, held.stderr)
    finally:
        converged.ssh(old, "sudo docker start redis")
    roles = {old: f"replica of {new}, link up", new: "primary with 2 of 2 replicas"}
    last: list = []

    def whole() -> bool:
        code, report = sweep(converged, "--limit", "data")
        found = {address: checks_of(report, node["name"])["data:redis"]["detail"] for address, node in nodes.items()}
        last[:] = [code, found]
        return code == 0 and all(found[address].startswith(role) for address, role in roles.items())

    try:
        wait_for(whole, timeout=120, interval=2, what=f"the data nodes healthy, Redis whole again ({roles})")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last sweep: exit {last}") from None


def test_the_playbook_form_runs_the_same_checks(converged: Lab):
    # All ten hosts probed at once on the 2-CPU machine, with Ansible's own work on each: a check
    # that misses its time there is run again, as an operator would.
    runs: list = []

    def passes() -> bool:
        runs.append(converged.playbook("health.yml"))
        return runs[-1].returncode == 0

    try:
        wait_for(passes, timeout=240, interval=10, what="health.yml passing on the green fleet")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {runs[-1].output[-4000:]}") from None
    healthy = runs[-1]
    assert "exactly one beat" in healthy.output
    host = converged.host("workers", 1)
    converged.ssh(host["private_ip"], "sudo docker stop -t 5 worker")
    try:
        sick = converged.playbook("health.yml")
    finally:
        converged.ssh(host["private_ip"], "sudo docker start worker")
    assert sick.returncode != 0
    assert "container worker is exited" in sick.output
    assert sick.recap[host["name"]]["failed"] == 1
    wait_green(converged)


@pytest.fixture(scope="module")  # once: each start makes new host keys, which ssh would refuse
def many_hosts(converged: Lab) -> list[dict]:
    """Twenty lightweight SSH-only hosts on the lab's private network, reached through the bastion.

    Just sshd, no systemd: twenty more systemd instances would exhaust the machine's inotify
    instances (fs.inotify.max_user_instances) next to the lab's own hosts."""
    key = (converged.dir / "id_ed25519.pub").read_text().strip()
    subnet = ".".join(converged.host("bastion")["private_ip"].split(".")[:2])
    hosts = [{"name": f"{LAB_NAME}-light-{n}", "address": f"{subnet}.2.{100 + n}"} for n in range(1, 21)]
    setup = (
        "useradd --create-home --shell /bin/bash admin && install -d -m 700 -o admin -g admin /home/admin/.ssh"
        f" && echo '{key}' > /home/admin/.ssh/authorized_keys && chown admin /home/admin/.ssh/authorized_keys"
        " && echo 'admin ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-admin"
        " && ssh-keygen -A >/dev/null && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e"
    )
    try:
        for host in hosts:
            subprocess.run(
                [
                    "docker",
                    "run",
                    "-d",
                    "--name",
                    host["name"],
                    "--hostname",
                    host["name"],
                    "--network",
                    f"{LAB_NAME}-private",
                    "--ip",
                    host["address"],
                    "--label",
                    f"microservices.lab={LAB_NAME}",
                    LAB_HOST_IMAGE,
                    "bash",
                    "-c",
                    setup,
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
        for host in hosts:
            wait_for(lambda h=host: converged.ssh(h["address"], "true").returncode == 0, timeout=60, what="sshd")
        yield hosts
    finally:
        subprocess.run(["docker", "rm", "-f", *(h["name"] for h in hosts)], capture_output=True)


def write_inventory(path: Path, lab: Lab, hosts: list[dict], known_hosts: Path | None = None, **extra: str) -> Path:
    """A static inventory of `hosts`, reached as the stack reaches its hosts (its SSH settings)."""
    args = shlex.join(lab.ssh_args())
    if known_hosts:
        args = args.replace(str(lab.dir / "known_hosts"), str(known_hosts))
    inventory = {
        "all": {
            "vars": {"ansible_user": "admin", "ansible_ssh_common_args": args, **extra},
            "children": {
                "fleet": {
                    "hosts": {h["name"]: {"ansible_host": h["address"], "private_ip": h["address"]} for h in hosts}
                }
            },
        }
    }
    path.write_text(json.dumps(inventory))
    return path


def test_a_sweep_over_twenty_hosts_takes_seconds(converged: Lab, many_hosts, tmp_path):
    inventory = write_inventory(tmp_path / "many.yml", converged, many_hosts)  # keys known: the fixture connected
    started = time.monotonic()
    result = converged.fleet_health("--json", inventory=str(inventory))
    took = time.monotonic() - started
    TIMINGS.append(f"fleet-health sweep of {len(many_hosts)} SSH-only hosts through the bastion: {took:.1f}s")
    report = json.loads(result.stdout)
    assert result.returncode == 0, failing(report)
    assert len(report["hosts"]) == 20 and all(h["reachable"] for h in report["hosts"])
    assert took < 10, f"the sweep over 20 hosts took {took:.1f}s"


def test_ssh_problems_get_clear_errors(converged: Lab, tmp_path, many_hosts):
    one = many_hosts[:1]
    # A key the host does not know.
    wrong_key = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True)
    inventory = write_inventory(tmp_path / "wrong-key.yml", converged, one, ansible_ssh_private_key_file=str(wrong_key))
    result = converged.fleet_health(inventory=str(inventory))
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert "refused the SSH key for user admin" in result.stdout

    # A host whose key is not in known_hosts.
    (tmp_path / "empty_known_hosts").write_text("")
    outputs = converged.outputs
    unknown = write_inventory(tmp_path / "unknown.yml", converged, one, known_hosts=tmp_path / "empty_known_hosts")
    result = converged.fleet_health(inventory=str(unknown))
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert f"unknown or changed host key for jump host admin@{outputs['bastion_public_ip']}" in result.stdout
