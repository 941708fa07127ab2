#!/usr/bin/env python3
"""The health checks of one host, run on the host itself (as root, for Docker).

    sudo python3 - '{"host": ..., "groups": [...], ...}' < probe.py

Both `fleet-health` (over SSH) and `ansible/health.yml` (ansible.builtin.script) run this
same file, so the two agree by construction. Standard library only: hosts have python3.
Prints one JSON object: {"host", "checks": [{check, status, detail, took_ms, data}]}, status
ok, warn or fail; `data` carries what the fleet view adds up, and `cluster_short: true` on a
warning that a cluster serves short of a member (the sweep's "at risk").

Input (JSON, first argument):
  host, groups          inventory name and groups (the tiers it is in)
  private_ip            this host's private address
  app_image, images     the app image and {mongodb, redis, rabbitmq, nginx} images
  api_hosts             private addresses of the API hosts (the load balancer checks them)
  api_port              the API's port on its hosts
  queues                the app's task queues, each of which a worker must consume
  redis_member          this data node runs Redis (each of a primary and replicas, or the first)
  redis_nodes           how many data nodes run Redis
  sentinel              the primary's name to this node's Redis Sentinel, or "" (none runs)
  sentinel_port         the Sentinels' port
  rabbitmq_member       this data node runs RabbitMQ (each of a cluster, or the first)
  rabbitmq_management_port  its management API's port on the private address
  mongodb_member        this data node runs MongoDB (the stack's mongodbMembers: the first ones)
  beat                  this worker host runs beat
  replica_set           the MongoDB replica-set name, or ""
  backlog_warn          queue depth that counts as a backlog
  budget                seconds the probe has: the sweep's deadline for this host, less what
                        connecting took (every check's command is cut to what is left of it)
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from typing import Any

CHECK_TIMEOUT = 12.0  # a sweep cuts it to what is left of its deadline for the host
DISK_WARN, DISK_FAIL = 0.80, 0.92
MEMORY_WARN, MEMORY_FAIL = 0.10, 0.03  # available fraction
RUNS_CONTAINERS = ("lb", "api", "workers", "data")
DATA_VOLUME = "/srv/data"  # a data node's data volume (ansible/roles/data_volume)


class Failed(Exception):
    pass


class NoAnswer(Failed):
    """A command that gave no answer within its time (killed by `timeout`)."""


class Warned(Exception):
    pass


class Short(Warned):
    """A cluster that still serves, but without one of its members (down, cut off or catching
    up): nothing fails yet, and one more loss would stop it."""


_deadline = time.monotonic() + CHECK_TIMEOUT + 25  # main() sets it from the sweep's budget


def time_left(seconds: float) -> float:
    """`seconds`, or what is left of the host's deadline if less. A check that outlived the
    sweep's deadline made the whole host look unreachable ("ssh: gave no answer") when one slow
    command was the news; cut to the deadline, the check reports itself."""
    return max(0.5, min(seconds, _deadline - time.monotonic()))


def sh(*command: str, timeout: float = CHECK_TIMEOUT) -> str:
    return answer(subprocess.run(command, capture_output=True, text=True, timeout=time_left(timeout)))


def answer(result: subprocess.CompletedProcess) -> str:
    """A command's output, or its last line of complaint as the failure."""
    if result.returncode != 0:
        raise Failed((result.stderr or result.stdout).strip().splitlines()[-1:] or [f"exit {result.returncode}"])
    return result.stdout.strip()


def http(
    url: str,
    timeout: float = 4.0,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    limit: int = 2000,
) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our own hosts
    try:
        with urllib.request.urlopen(request, timeout=time_left(timeout), context=context) as response:  # noqa: S310
            return response.status, response.read(limit).decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read(2000).decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        raise Failed(f"{url}: {getattr(error, 'reason', error)}") from None


# --- every host --------------------------------------------------------------------------


def disk(_: dict) -> str:
    details = []
    worst = 0.0
    for path in ("/", "/var/lib/docker", DATA_VOLUME):
        if os.path.isdir(path):
            usage = shutil.disk_usage(path)
            used = usage.used / usage.total
            worst = max(worst, used)
            details.append(f"{path} {used:.0%} used, {usage.free / 2**30:.1f} GiB free")
    detail = "; ".join(dict.fromkeys(details))
    if worst >= DISK_FAIL:
        raise Failed(detail)
    if worst >= DISK_WARN:
        raise Warned(detail)
    return detail


def memory(_: dict) -> str:
    info = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            name, value = line.split(":", 1)
            info[name] = int(value.split()[0])
    available = info["MemAvailable"] / info["MemTotal"]
    detail = f"{info['MemAvailable'] / 2**20:.1f} of {info['MemTotal'] / 2**20:.1f} GiB available"
    if available < MEMORY_FAIL:
        raise Failed(detail)
    if available < MEMORY_WARN:
        raise Warned(detail)
    return detail


def load(_: dict) -> str:
    one, five, _fifteen = os.getloadavg()
    cpus = os.cpu_count() or 1
    detail = f"load {one:.2f} / {five:.2f} on {cpus} CPUs"
    if five > 2 * cpus:
        raise Warned(detail)
    return detail


def docker_engine(_: dict) -> str:
    return "Docker " + sh("docker", "info", "--format", "{{.ServerVersion}}")


# --- containers --------------------------------------------------------------------------


def expected_containers(facts: dict) -> dict[str, str]:
    """What this host should run: container name -> image reference."""
    groups, images = set(facts["groups"]), facts.get("images", {})
    expected = {}
    if "lb" in groups:
        expected["nginx"] = images.get("nginx", "")
    if "api" in groups:
        expected["api"] = facts["app_image"]
    if "workers" in groups:
        expected["worker"] = facts["app_image"]
        if facts.get("beat"):
            expected["beat"] = facts["app_image"]
    if "data" in groups:
        if facts.get("mongodb_member"):
            expected["mongodb"] = images.get("mongodb", "")
        if facts.get("redis_member"):
            expected["redis"] = images.get("redis", "")
        if facts.get("sentinel"):
            expected["redis-sentinel"] = images.get("redis", "")
        if facts.get("rabbitmq_member"):
            expected["rabbitmq"] = images.get("rabbitmq", "")
    return expected


_once_lock = threading.Lock()
_once_values: dict[str, Any] = {}


def once(key: str, compute: Callable[[], Any]) -> Any:
    """`compute()` the first time any check asks for `key` (they run in threads), then its value."""
    with _once_lock:
        if key not in _once_values:
            try:
                _once_values[key] = (True, compute())
            except Exception as error:  # noqa: BLE001 - handed to every check that asks
                _once_values[key] = (False, error)
        ok, value = _once_values[key]
    if not ok:
        raise value
    return value


def inspect_containers(names: list[str]) -> dict[str, dict]:
    """`docker inspect` of every name at once, by name (a missing one is left out): one Docker CLI
    start per host and sweep instead of one per container, each a fraction of a CPU second on a
    busy host."""
    result = subprocess.run(
        ("docker", "inspect", *names), capture_output=True, text=True, timeout=time_left(CHECK_TIMEOUT)
    )
    if result.returncode != 0 and not result.stdout.strip().startswith("["):
        answer(result)  # raises: Docker itself did not answer
    return {item["Name"].lstrip("/"): item for item in json.loads(result.stdout or "[]")}


def image_id(image: str) -> str | None:
    try:
        return once(f"image {image}", lambda: sh("docker", "image", "inspect", "--format", "{{.Id}}", image))
    except Failed:
        return None


def containers(facts: dict) -> dict[str, dict]:
    names = [*expected_containers(facts), *(["beat"] if "workers" in facts["groups"] else [])]
    return once("containers", lambda: inspect_containers(list(dict.fromkeys(names))))


def container(name: str, image: str) -> Callable[[dict], str]:
    def check(facts: dict) -> str:
        state = containers(facts).get(name)
        if state is None:
            raise Failed(f"container {name} does not exist")
        status, running = state["State"]["Status"], state["Config"]["Image"]
        health = (state["State"].get("Health") or {}).get("Status", "no health check")
        if status != "running":
            raise Failed(f"container {name} is {status} (exit code {state['State'].get('ExitCode')})")
        if health != "healthy":
            raise Failed(f"container {name} is running but {health}")
        if image:
            wanted = image_id(image)
            if wanted is None:
                raise Failed(f"container {name} runs {running}, expected image {image} is not here")
            if wanted != state["Image"]:
                raise Failed(f"container {name} runs {running} ({state['Image'][:19]}), expected {image}")
        return f"{name} healthy on {running} ({state['Image'][:19]})"

    return check


def exec_in(name: str, *command: str, timeout: float = CHECK_TIMEOUT) -> str:
    # Under `timeout` in the container too: killing the `docker exec` client leaves its process
    # running in there, and on a busy host the leftovers of each sweep piled up until the next
    # sweep's checks timed out in turn (load 50 on the 2-CPU lab after a data node was killed).
    budget = time_left(timeout + 2)
    seconds = f"{max(0.5, budget - 2):.1f}"
    command = ("docker", "exec", name, "timeout", "-k", "1", seconds, *command)
    result = subprocess.run(command, capture_output=True, text=True, timeout=budget)
    if result.returncode in (124, 137):  # timeout's own, or its KILL after one more second
        raise NoAnswer(f"{command[7]} in {name} gave no answer within {seconds}s")
    output = (result.stderr or result.stdout).strip()
    if result.returncode != 0 and ("is not running" in output or "No such container" in output):
        raise Failed(f"cannot ask {name}: the container is not running")
    return answer(result)


# --- tiers -------------------------------------------------------------------------------


def api_ready(facts: dict) -> str:
    status, body = http(f"http://{facts['private_ip']}:{facts['api_port']}/health/ready")
    if status != 200:
        try:
            failing = [k for k, v in json.loads(body)["checks"].items() if v["status"] != "ok"]
        except (ValueError, KeyError):
            failing = [body[:120]]
        raise Failed(f"/health/ready answered {status}: {', '.join(failing)} not ready")
    return "/health/ready 200"


def nginx_itself(_: dict) -> str:
    # The health endpoint listens on the container's internal port 8081, never published.
    exec_in("nginx", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8081/nginx-health")
    try:
        exec_in("nginx", "test", "-e", "/etc/nginx/enabled/tls.conf")
    except NoAnswer:
        raise
    except Failed:
        url = "http://127.0.0.1/health"
    else:
        url = "https://127.0.0.1/health"  # port 80 only redirects
    # The certificate names the public domain, not 127.0.0.1: this checks nginx, not the name.
    status, _body = http(url, context=ssl._create_unverified_context())  # noqa: S323
    if status != 200:
        raise Failed(f"{url} through nginx answered {status}")
    return f"nginx answers, {url} through it 200"


def upstreams(facts: dict) -> str:
    down = []
    for address in facts.get("api_hosts", []):
        try:
            status, _body = http(f"http://{address}:{facts['api_port']}/health", timeout=3)
            if status != 200:
                down.append(f"{address} answered {status}")
        except Failed as error:
            down.append(str(error))
    if down:
        raise Failed(f"{len(down)} of {len(facts['api_hosts'])} upstream API hosts down: {'; '.join(down)}")
    return f"all {len(facts['api_hosts'])} upstream API hosts answer"


def mongodb(facts: dict) -> str:
    # mongosh in mongo:7; the SecantusDB stand-in has mongo-ping (and no replica set).
    script = (
        "if command -v mongosh >/dev/null; then mongosh --quiet --eval 'JSON.stringify(db.hello())'; "
        "else mongo-ping && echo '{}'; fi"
    )
    output = exec_in("mongodb", "sh", "-c", script)
    hello = json.loads(output.splitlines()[-1] or "{}")
    if facts.get("replica_set"):
        if hello.get("setName") != facts["replica_set"]:
            raise Failed(f"not a member of replica set {facts['replica_set']} (hello: {str(hello)[:120]})")
        role = "primary" if hello.get("isWritablePrimary") else "secondary" if hello.get("secondary") else "not ready"
        if role == "not ready":
            raise Failed(f"replica set {facts['replica_set']}: member neither primary nor secondary")
        return f"ping ok; replica set {facts['replica_set']}: {role}, primary {hello.get('primary')}"
    return "ping ok"


def data_volume(_: dict) -> str:
    if not os.path.ismount(DATA_VOLUME):
        raise Failed(f"{DATA_VOLUME} is not mounted: Docker, and with it every data service, will not start")
    usage = shutil.disk_usage(DATA_VOLUME)
    return f"{DATA_VOLUME} mounted, {usage.free / 2**30:.1f} GiB free"


def redis(facts: dict) -> str:
    # One `docker exec` for the four questions (the first that fails ends it, and says why).
    script = (
        "redis-cli ping; echo @@; redis-cli config get maxmemory-policy; echo @@; "
        "redis-cli info memory; redis-cli info replication"
    )
    pong, policy_lines, info_lines = exec_in("redis", "sh", "-ec", script).split("@@\n")
    if pong.strip() != "PONG":
        raise Failed("redis did not answer PONG")
    policy = policy_lines.strip().splitlines()[-1]
    info = dict(line.strip().split(":", 1) for line in info_lines.splitlines() if ":" in line)
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    role, problem = redis_role(info, int(facts.get("redis_nodes") or 1) - 1)
    detail = f"{role}; policy {policy}; {used / 2**20:.0f} of {limit / 2**20:.0f} MiB"
    if policy != "volatile-ttl":
        raise Failed(detail + " (expected volatile-ttl: task results could be evicted)")
    if problem:
        raise Short(detail)
    if limit and used > 0.9 * limit:
        raise Warned(detail)
    return detail


def redis_role(info: dict[str, str], replicas: int) -> tuple[str, bool]:
    """What this server is in its replication, and whether that is short of whole: a primary
    with fewer replicas than the other Redis nodes, or a replica cut off from its primary."""
    if info.get("role") == "master":
        connected = int(info.get("connected_slaves", 0))
        return f"primary with {connected} of {replicas} replicas", connected < replicas
    link = info.get("master_link_status", "down")
    last_io = info.get("master_last_io_seconds_ago", "?")
    role = f"replica of {info.get('master_host')}, link {link}, last heard {last_io} s ago"
    return role, link != "up" or info.get("master_sync_in_progress") == "1"


def sentinel(facts: dict) -> str:
    """This node's Sentinel: the primary it names, and whether enough Sentinels see it to fail over."""
    ask = ("redis-sentinel", "redis-cli", "-p", str(facts["sentinel_port"]), "sentinel")
    primary = exec_in(*ask, "get-master-addr-by-name", facts["sentinel"]).splitlines()
    quorum = exec_in(*ask, "ckquorum", facts["sentinel"]).strip()
    if not primary:
        raise Failed(f"the Sentinel knows no primary named {facts['sentinel']} ({quorum})")
    detail = f"primary {primary[0]}; {quorum}"
    if not quorum.startswith("OK"):
        raise Short(detail + ": a lost primary would not be replaced")
    return detail


def rabbitmq(facts: dict) -> tuple[str, dict]:
    """The node, its cluster and the task queues, from the management API on this node's private
    address (the administrator's credentials are the container's own). The CLI said the same
    at the cost of an Erlang VM's start per sweep (seconds of CPU on a busy host, 10 s on the
    2-CPU lab); a peer that died without a word is still waited for until Erlang notices (up to
    75 s), and the check then gives no answer within its time instead of the host looking
    unreachable."""
    config = (containers(facts).get("rabbitmq") or {}).get("Config", {})
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    user, password = env.get("RABBITMQ_DEFAULT_USER"), env.get("RABBITMQ_DEFAULT_PASS")
    if not (user and password):
        raise Failed("cannot ask RabbitMQ: its container has no administrator (RABBITMQ_DEFAULT_USER/PASS)")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    api = f"http://{facts['private_ip']}:{facts.get('rabbitmq_management_port', 15672)}/api"

    def ask(path: str) -> list[dict]:
        status, body = http(f"{api}/{path}", timeout=8, headers=auth, limit=2_000_000)
        if status != 200:
            raise Failed(f"the management API answered {status} to /api/{path.split('?')[0]}: {body[:120]}")
        return json.loads(body)

    nodes = ask("nodes?columns=name,running,partitions,mem_alarm,disk_free_alarm")
    listing = ask(f"queues/{facts.get('vhost', 'app')}?columns=name,messages,consumers,members,online")
    running = [n["name"] for n in nodes if n.get("running")]
    detail = f"nodes running {len(running)} of {len(nodes)}"
    partitioned = {n["name"]: n["partitions"] for n in nodes if n.get("partitions")}
    if partitioned:
        cut = "; ".join(f"{name} cut off from {', '.join(peers)}" for name, peers in partitioned.items())
        raise Failed(f"{detail}; partitioned: {cut}")
    alarms = [f"{n['name']} {kind}" for n in nodes for kind in ("mem_alarm", "disk_free_alarm") if n.get(kind)]
    if alarms:
        raise Failed(detail + f"; resource alarm ({', '.join(alarms)}): publishers are blocked")
    queues = {q["name"]: q for q in listing}
    depths = {name: q.get("messages") or 0 for name, q in queues.items() if name in facts["queues"]}
    detail += "; queues " + ", ".join(f"{n}={d}" for n, d in sorted(depths.items()))
    members, short = quorum_members([queues[name] for name in facts["queues"] if name in queues])
    detail += members
    idle = [name for name in facts["queues"] if name in queues and queues[name].get("consumers") == 0]
    if idle:
        raise Failed(detail + f"; no worker consumes {', '.join(idle)}")
    backlog = [name for name, depth in depths.items() if depth >= facts.get("backlog_warn", 1000)]
    if backlog:
        detail += f"; backlog on {', '.join(backlog)}"
    if short or len(running) < len(nodes):
        raise Short(detail, {"queues": depths})
    if backlog:
        raise Warned(detail, {"queues": depths})
    return detail, {"queues": depths}


def quorum_members(queues: list[dict]) -> tuple[str, bool]:
    """How many of the task queues' quorum members are online (a node of the cluster down or cut
    off takes its members with it), and whether any queue is short of one. Classic queues (a
    single node) have none."""
    quorum = [q for q in queues if isinstance(q.get("members"), list) and q["members"]]
    if not quorum:
        return "", False
    online = min(len(q.get("online") or []) for q in quorum)
    members = max(len(q["members"]) for q in quorum)
    short = [q["name"] for q in quorum if len(q.get("online") or []) < len(q["members"])]
    return f"; quorum members online {online} of {members}" + (f" ({', '.join(short)})" if short else ""), bool(short)


# Where each worker node's consumer touches its file while connected to the broker, and when the
# file counts as stale (app/core/liveness.py, which the probe, run on hosts without the app, cannot import).
HEARTBEAT_DIR = "/tmp/celery-heartbeat"  # noqa: S108 - the container's private tmpfs
HEARTBEAT_STALE_SECONDS = 20


def celery_worker(_: dict) -> str:
    """The worker's consumer, by the file it touches every few seconds while it consumes (which
    the container's health check reads too). A `celery inspect ping` from a new process said as
    much over the broker at ~1.7 s of CPU per host and sweep: on a busy host, more than the
    sweep's deadline."""
    ages = exec_in(
        "worker",
        "sh",
        "-c",
        f'cd {HEARTBEAT_DIR} 2>/dev/null || exit 0; now=$(date +%s); for f in *; do [ -e "$f" ] && '
        'echo "$((now - $(stat -c %Y "$f"))) $f"; done; exit 0',
    )
    nodes = {name: int(age) for age, _, name in (line.partition(" ") for line in ages.splitlines()) if name}
    fresh = {name: age for name, age in nodes.items() if age < HEARTBEAT_STALE_SECONDS}
    if not fresh:
        stale = ", ".join(f"{name} {age} s ago" for name, age in nodes.items()) or "none"
        raise Failed(f"no worker consumes (last heartbeats: {stale}): the broker is down, or the worker hangs")
    return "; ".join(f"{name} consuming, heartbeat {age} s ago" for name, age in sorted(fresh.items()))


def beat_presence(facts: dict) -> tuple[str, dict]:
    """Report (never fail) whether beat runs here; the fleet must have exactly one."""
    try:
        running = bool((containers(facts).get("beat") or {}).get("State", {}).get("Running"))
    except Failed:
        running = False
    return ("beat running" if running else "no beat"), {"beat": running}


# --- running them ------------------------------------------------------------------------


def plan(facts: dict) -> dict[str, Callable[[dict], Any]]:
    groups = set(facts["groups"])
    checks: dict[str, Callable[[dict], Any]] = {"disk": disk, "memory": memory, "load": load}
    if groups & set(RUNS_CONTAINERS):
        checks["docker"] = docker_engine
        for name, image in expected_containers(facts).items():
            checks[f"container:{name}"] = container(name, image)
    if "api" in groups:
        checks["api:ready"] = api_ready
    if "lb" in groups:
        checks["lb:nginx"] = nginx_itself
        checks["lb:upstreams"] = upstreams
    if "data" in groups:
        checks["data:volume"] = data_volume
        if facts.get("mongodb_member"):
            checks["data:mongodb"] = mongodb
        if facts.get("redis_member"):
            checks["data:redis"] = redis
        if facts.get("sentinel"):
            checks["data:sentinel"] = sentinel
        if facts.get("rabbitmq_member"):
            checks["data:rabbitmq"] = rabbitmq
    if "workers" in groups:
        checks["workers:celery"] = celery_worker
        checks["beat"] = beat_presence
    return checks


def outcome(check: Callable[[dict], Any], facts: dict) -> tuple[str, str, dict]:
    """(status, detail, data): a check returns a detail, or (detail, data) for the fleet view."""
    try:
        returned = check(facts)
        detail, data = returned if isinstance(returned, tuple) else (returned, {})
        return "ok", detail, data
    except Warned as warning:
        data = warning.args[1] if len(warning.args) > 1 else {}
        return "warn", str(warning.args[0]), data | ({"cluster_short": True} if isinstance(warning, Short) else {})
    except Failed as failure:
        detail = failure.args[0]
        return "fail", " ".join(detail) if isinstance(detail, list) else str(detail), {}
    except subprocess.TimeoutExpired as timeout:
        return "fail", f"timed out after {timeout.timeout:.0f}s: {' '.join(map(str, timeout.cmd))[:80]}", {}
    except Exception as error:  # noqa: BLE001 - a probe reports, it does not crash
        return "fail", f"{type(error).__name__}: {error}", {}


def run_one(name: str, check: Callable[[dict], Any], facts: dict) -> dict[str, Any]:
    started = time.monotonic()
    status, detail, data = outcome(check, facts)
    took = round((time.monotonic() - started) * 1000)
    return {"check": name, "status": status, "detail": detail, "took_ms": took, "data": data}


def main() -> int:
    global _deadline  # noqa: PLW0603 - one deadline for the whole run, read by every check
    facts: dict[str, Any] = json.loads(sys.argv[1])
    if facts.get("budget"):
        _deadline = time.monotonic() + float(facts["budget"])
    checks = plan(facts)
    results = []
    deadline = _deadline + 1  # every command is cut to the deadline; this waits for their end
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        futures = {name: pool.submit(run_one, name, check, facts) for name, check in checks.items()}
        for name, future in futures.items():
            try:
                results.append(future.result(timeout=max(0.1, deadline - time.monotonic())))
            except TimeoutError:
                results.append({"check": name, "status": "fail", "detail": "no answer in time", "took_ms": None})
    print(json.dumps({"host": facts["host"], "checks": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
