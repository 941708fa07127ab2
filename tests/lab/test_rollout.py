"""The Ansible rollout on the local lab: converge, idempotence, flows across hosts, rolling
deploys (a good one, a broken one, a rollback), tier isolation and passwords."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter

import httpx
import pytest
from conftest import TIMINGS, Lab, failed_hosts
from helpers import shed, wait_for

from topology import VERSION

NEW_VERSION = "0.2.0"


class SteadyLoad:
    """A user's reads of one item through the load balancer, ~25 per second, until stopped;
    counts failures. A user request, not /health/ready: readiness answers 503 whenever a
    dependency check takes over a second, which a CPU-starved lab does now and then whatever
    the deploy does. It is the client the API documents: a read shed for overload (503 with a
    `reason` and Retry-After, nothing done) is sent again after the delay, and counted apart (at
    most 1 % may be);
    the lab's hosts share two CPUs, so a host starting containers slows its neighbours."""

    def __init__(self, lab: Lab) -> None:
        self.url = lab.lb_url
        self.headers = {"X-API-Key": lab.outputs["secrets"]["api_key"]}
        self.served = 0
        self.sent_again = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10) as client:
            created = client.post("/api/items", json={"name": f"steady-{time.time_ns()}", "price": 1.0})
            path = created.headers["location"]
            while not self._stop.is_set():
                try:
                    response = self._read(client, path)
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {response.text[:120]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.served += 1
                time.sleep(0.04)

    def _read(self, client: httpx.Client, path: str, attempts: int = 5) -> httpx.Response:
        for _ in range(attempts - 1):
            response = client.get(path)
            if not shed(response):
                return response
            self.sent_again += 1
            time.sleep(float(response.headers["retry-after"]))
        return client.get(path)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def versions_by_host(lab: Lab, requests: int = 20) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    with httpx.Client(base_url=lab.lb_url, timeout=10) as client:
        for _ in range(requests):
            response = client.get("/health")
            seen.setdefault(response.headers["x-served-by"], set()).add(response.json()["version"])
    return seen


def test_a_clean_controller_reached_every_host_without_a_prompt(converged: Lab):
    """`fleet setup` (the converged fixture) started with no known_hosts and stdin closed: every
    host's key, the bastion's too, was accepted once, into the file the stack names."""
    known_hosts = converged.dir / "known_hosts"
    variables = converged.outputs["ansible_inventory"]["all"]["vars"]
    assert f"UserKnownHostsFile={known_hosts}" in variables["ansible_ssh_common_args"]
    addresses = [converged.outputs["bastion_public_ip"]]
    addresses += [h["private_ip"] for tier in ("lb", "api", "workers", "data") for h in converged.hosts(tier)]
    for address in addresses:
        found = subprocess.run(["ssh-keygen", "-F", address, "-f", str(known_hosts)], capture_output=True, text=True)
        assert found.returncode == 0, f"{address} is not in {known_hosts}"


def test_site_converges_and_a_second_run_changes_nothing(converged: Lab):
    again = converged.fleet("setup")
    TIMINGS.append(f"fleet setup (site.yml) again, nothing to do: {again.seconds:.0f}s")
    assert again.returncode == 0 and not failed_hosts(again), again.output[-4000:]
    changed = {host: r["changed"] for host, r in again.recap.items() if r["changed"]}
    assert not changed, f"not idempotent: {changed}"


def test_crud_and_async_across_hosts(converged: Lab):
    api_hosts = {h["name"] for h in converged.hosts("api")}
    worker_hosts = {h["name"] for h in converged.hosts("workers")}
    key = converged.outputs["secrets"]["api_key"]
    with httpx.Client(base_url=converged.lb_url, headers={"X-API-Key": key}, timeout=15) as api:
        created = api.post("/api/items", json={"name": f"lab-{time.time_ns()}", "price": 2.5})
        assert created.status_code == 201, created.text
        item = api.get(created.headers["location"])
        assert item.json() == created.json()
        assert api.patch(created.headers["location"], json={"price": 3.0}).json()["price"] == 3.0

        submitted = api.post("/api/async/process", json={"data": "across hosts", "iterations": 20})
        assert submitted.status_code == 202
        submitted_on = submitted.headers["x-served-by"]
        assert submitted_on in api_hosts

        def done_and_read_elsewhere():
            status = api.get(submitted.json()["status_url"])
            body = status.json()
            if body["state"] == "SUCCESS" and status.headers["x-served-by"] != submitted_on:
                return body
            return None

        final = wait_for(done_and_read_elsewhere, timeout=120, interval=0.3, what="result read on the other API host")
    assert final["worker"].split("@", 1)[1] in worker_hosts  # ran on a worker host


def deploy_lock(lab: Lab) -> dict | None:
    return lab.fleet_json("details")["deploy_lock"]


def test_rolling_deploy_loses_no_request_and_a_second_deploy_meanwhile_is_refused(converged: Lab):
    # Built, pushed to the stack's registry, and deployed by digest, as a release is.
    image = converged.lab("image", NEW_VERSION).split()[-1]
    assert image.startswith(f"{converged.cloud_registry}/microservices-app@sha256:"), image
    with SteadyLoad(converged) as load:
        started = time.monotonic()
        # To a file: a pipe nobody reads while the second deploy runs could fill and stall the first.
        log = (converged.dir / "fleet-deploy-first.log").open("w+")
        first = subprocess.Popen(
            converged.fleet_command("deploy", image), stdout=log, stderr=subprocess.STDOUT, env=converged.env
        )
        holder = wait_for(lambda: deploy_lock(converged), timeout=120, interval=1, what="the deploy lock taken")
        assert holder["playbook"] == "deploy" and holder["id"].startswith("deploy:"), holder
        second = converged.fleet("deploy", image, timeout=300)
        assert first.poll() is None, "the first deploy ended before the second was tried: the test proves nothing"
        assert deploy_lock(converged)["id"] == holder["id"], "the refused deploy took or freed the first one's lock"
        first.wait(timeout=1800)
        seconds = time.monotonic() - started
        log.seek(0)
        output = log.read()
        log.close()
    TIMINGS.append(
        f"fleet deploy, rolling {NEW_VERSION} to 2 API and 2 worker hosts: {seconds:.0f}s"
        f" ({load.served} reads, {load.sent_again} shed and sent again)"
    )
    assert second.returncode != 0
    assert second.says(f"the deploy lock is held by {holder['by']}") and second.says("nothing was changed")
    assert set(second.recap) == {converged.hosts("lb")[0]["name"]}, "the refused deploy touched other hosts"
    assert first.returncode == 0, output[-6000:]
    assert deploy_lock(converged) is None, "the deploy did not give its lock back"
    assert load.served > 100
    assert not load.failures, f"{len(load.failures)} of {load.served} requests failed: {load.failures[:5]}"
    assert load.sent_again <= load.served // 100, f"{load.sent_again} of {load.served} reads were shed"
    versions = versions_by_host(converged)
    assert set(versions) == {h["name"] for h in converged.hosts("api")}
    assert all(v == {NEW_VERSION} for v in versions.values()), versions
    history = converged.ssh(converged.hosts("workers")[0]["private_ip"], "cat /var/lib/microservices/history.jsonl")
    last = json.loads(history.stdout.splitlines()[-1])
    assert last["images"]["worker"] == image and last["playbook"] == "deploy"
    assert last["image_ids"]["worker"].startswith("sha256:") and last["by"] and last["time"].endswith("Z")


def test_a_broken_image_stops_at_the_first_host_and_is_rolled_back(converged: Lab, tmp_path):
    """Delivered as an archive (a stack with imageDelivery: archive, for hosts without a registry):
    the controller exports it, each host loads it."""
    running = versions_by_host(converged)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        f"FROM microservices-app:{NEW_VERSION}\nUSER root\n"
        "RUN printf '\\nraise SystemExit(\"this release is broken\")\\n' >> /srv/app/api/main.py\nUSER app\n"
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", "microservices-app:broken", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    first_api = converged.hosts("api")[0]["name"]
    archive = converged.variant("archive", imageDelivery="archive")
    previous = converged.fleet_json("details")["hosts"]
    before = next(c["image"] for h in previous if h["host"] == first_api for c in h["containers"] if c["name"] == "api")
    with SteadyLoad(converged) as load:
        run = converged.fleet("deploy", "microservices-app:broken", outputs=archive)
    TIMINGS.append(
        f"fleet deploy of a broken image (archive delivery), stopped and rolled back: {run.seconds:.0f}s"
        f" ({load.served} reads, {load.sent_again} shed and sent again)"
    )
    assert run.returncode != 0
    assert "Copy the archives from the controller" in run.output and "Load the archives" in run.output
    assert f"failed its health gate on {first_api}" in run.output
    assert f"runs {before} again" in run.output
    assert set(failed_hosts(run)) == {first_api}  # stopped there: no other host was touched
    assert not load.failures, f"{len(load.failures)} of {load.served} requests failed: {load.failures[:5]}"
    assert load.sent_again <= load.served // 100, f"{load.sent_again} of {load.served} reads were shed"
    assert versions_by_host(converged) == running
    assert deploy_lock(converged) is None, "the failed deploy kept its lock"


def test_a_held_lock_refuses_a_rollback_until_unlocked(converged: Lab):
    locked = converged.fleet("lock", "-m", "restore drill in progress")
    assert locked.returncode == 0, locked.output[-3000:]
    assert deploy_lock(converged)["message"] == "restore drill in progress"
    again = converged.fleet("lock")
    assert again.returncode != 0 and again.says("restore drill in progress"), again.output[-3000:]
    refused = converged.fleet("rollback")
    assert refused.returncode != 0 and refused.says("(manual: restore drill in progress)"), refused.output[-3000:]
    assert refused.says("free it with `fleet unlock`")
    versions = versions_by_host(converged)
    assert all(v == {NEW_VERSION} for v in versions.values()), versions
    unlocked = converged.fleet("unlock")
    assert unlocked.returncode == 0 and unlocked.says("released the deploy lock of"), unlocked.output[-3000:]
    assert deploy_lock(converged) is None


def test_rollback_returns_to_the_previous_image(converged: Lab):
    with SteadyLoad(converged) as load:
        run = converged.fleet("rollback")
    TIMINGS.append(f"fleet rollback: {run.seconds:.0f}s")
    assert run.returncode == 0 and not failed_hosts(run), run.output[-6000:]
    assert not load.failures, load.failures[:5]
    versions = versions_by_host(converged)
    assert all(v == {VERSION} for v in versions.values()), versions


def can_connect(lab: Lab, from_ip: str, to_ip: str, port: int) -> bool:
    probe = lab.ssh(from_ip, f"timeout 3 bash -c '</dev/tcp/{to_ip}/{port}' && echo open || echo closed")
    assert probe.returncode == 0, probe.stderr
    return probe.stdout.strip() == "open"


@pytest.mark.parametrize("port", [27017, 6379, 5672, 15672])
def test_the_load_balancer_cannot_reach_the_data_tier(converged: Lab, port):
    lb = converged.hosts("lb")[0]["private_ip"]
    api = converged.hosts("api")[0]["private_ip"]
    data = converged.hosts("data")[0]["private_ip"]
    assert not can_connect(converged, lb, data, port), f"the load balancer reaches {data}:{port}"
    if port != 15672:  # the management UI is for the bastion only
        assert can_connect(converged, api, data, port), f"the API host cannot reach {data}:{port}"


def test_only_the_load_balancer_reaches_the_api_port(converged: Lab):
    api = converged.hosts("api")[0]["private_ip"]
    assert can_connect(converged, converged.hosts("lb")[0]["private_ip"], api, 8000)
    assert not can_connect(converged, converged.hosts("workers")[0]["private_ip"], api, 8000)


def test_no_data_service_takes_a_default_or_empty_password(converged: Lab):
    data = converged.hosts("data")[0]["private_ip"]
    probe = f"""
import pymongo, redis, kombu
def mongo(url):
    try:
        pymongo.MongoClient(url, serverSelectionTimeoutMS=3000).app.items.find_one()
        return "accepted"
    except pymongo.errors.OperationFailure:
        return "refused"
def red(password, port=6379):
    try:
        redis.Redis(host="{data}", port=port, password=password, socket_timeout=3).ping()
        return "accepted"
    except (redis.AuthenticationError, redis.ResponseError):
        return "refused"
def amqp(user, password):
    try:
        kombu.Connection(f"amqp://{{user}}:{{password}}@{data}:5672/app", connect_timeout=3).connect()
        return "accepted"
    except Exception:
        return "refused"
print(mongo("mongodb://{data}:27017/?directConnection=true"),
      mongo("mongodb://root:example@{data}:27017/?directConnection=true"),
      mongo("mongodb://admin:admin@{data}:27017/?directConnection=true"),
      red(None), red(""), red("redis"), red(None, 26379), red("redis", 26379),
      amqp("guest", "guest"), amqp("app", ""), amqp("admin", "admin"))
"""
    api = converged.hosts("api")[0]["private_ip"]
    result = converged.ssh(api, f"sudo docker exec -i api python - <<'EOF'\n{probe}\nEOF")
    assert result.returncode == 0, result.stderr
    assert Counter(result.stdout.split()) == {"refused": 11}, result.stdout


def test_the_apps_redis_user_cannot_reconfigure_or_flush(converged: Lab):
    """On the fleet too, the API's REDIS_URL (the app's user) reads and writes keys, and nothing more."""
    probe = """
import os, redis
from app.data import redis_servers
# The app's own client: the primary the Sentinels name, as the app's user (REDIS_URL's).
client = redis_servers.client(os.environ["REDIS_URL"], socket_timeout=3)
client.set("acl-probe", "kept", ex=60)
for command in (("CONFIG", "SET", "maxmemory", "1mb"), ("FLUSHALL",), ("ACL", "LIST")):
    try:
        client.execute_command(*command)
        print("accepted")
    except redis.exceptions.NoPermissionError:
        print("refused")
print(client.get("acl-probe").decode())
"""
    api = converged.hosts("api")[0]["private_ip"]
    result = converged.ssh(api, f"sudo docker exec -i api python - <<'EOF'\n{probe}\nEOF")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["refused", "refused", "refused", "kept"], result.stdout
