"""`make bench`: the request path through nginx, from many client addresses, beside its
anchors measured in the same run, with the ratios the targets are set in.

    python -m benchmarks.bench [--env-file .env] [--clients 48] [--seconds 10] [--smoke]

Uses the compose stack of the env file (brings it up with scripts/up.sh when it is not
running), adds the anchors (benchmarks/compose.bench.yml, benchmarks/nginx-bench.conf),
drives every path with wrk from `--clients` network namespaces (benchmarks/clients.py), then
the users' mix with locust at each of `--users` (benchmarks/users.py), on the stack and on the
seed's "before" (benchmarks/anchors/before_app.py). Writes results.json, report.md and two
plots to benchmarks/results/<UTC time>/. Everything it added is removed at the end. Needs
root (network namespaces), wrk and locust.

Absolute figures on a shared 2-CPU machine move by ±30 % between runs: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.clients import ClientNetwork
from benchmarks.cpu import CpuProfile
from benchmarks.load import wrk
from benchmarks.plots import latency_against_users, throughput_per_path
from benchmarks.users import run_users

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
BENCH_SERVICES = ("bench-bare", "bench-uncached", "bench-probe", "bench-before")
SUBMIT_BODY = {"data": "bench", "iterations": 1}
# compose prefers the process environment to the env file: pass only what it needs.
PASSED = ("PATH", "HOME", "LANG", "DOCKER_HOST", "DOCKER_CONFIG")
CLEAN_ENV = {name: os.environ[name] for name in PASSED if name in os.environ}

# (name, numerator, denominator, target): every ratio the issue sets, from this run's figures.
TARGETS = [
    ("stack /health ÷ bare FastAPI /health, through the same nginx", "health", "bare", 0.70),
    ("cached read ÷ stack /health", "cached_read", "health", 0.60),
    ("cached read ÷ uncached read", "cached_read", "uncached_read", 3.0),
    ("uncached read ÷ raw find_one, same concurrency", "uncached_read", "raw_find_one", 0.60),
    ("submit (202) ÷ raw Celery publish", "submit", "raw_publish", 0.50),
]


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


class Stack:
    """The compose stack with the benchmark's services added."""

    def __init__(self, env_file: Path) -> None:
        self.env_file = env_file.resolve()
        self.env = read_env(self.env_file)
        self.project = self.env.get("COMPOSE_PROJECT_NAME", "microservices")
        self.base = [
            "docker",
            "compose",
            "--project-directory",
            str(REPO_ROOT),
            "-f",
            str(REPO_ROOT / "docker-compose.yml"),
            "-f",
            str(REPO_ROOT / "benchmarks/compose.bench.yml"),
            "--env-file",
            str(self.env_file),
            "-p",
            self.project,
        ]
        self.api_key = self.env["API_KEYS"].split(",")[0]

    def compose(self, *args: str, timeout: float = 900) -> str:
        result = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout, env=CLEAN_ENV)
        if result.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)}: {result.stderr[-2000:]}")
        return result.stdout

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).split()[0]

    def running(self) -> bool:
        try:
            return bool(self.compose("ps", "-q", "api", timeout=60).strip())
        except RuntimeError:
            return False


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def add_anchors(stack: Stack) -> str:
    stack.compose("up", "-d", "--no-deps", *BENCH_SERVICES)
    nginx = stack.container("nginx")
    subprocess.run(
        ["docker", "cp", str(REPO_ROOT / "benchmarks/nginx-bench.conf"), f"{nginx}:/etc/nginx/enabled/bench.conf"],
        check=True,
        capture_output=True,
    )
    subprocess.run(["docker", "exec", nginx, "nginx", "-s", "reload"], check=True, capture_output=True)
    return nginx


def remove_anchors(stack: Stack, nginx: str) -> None:
    subprocess.run(["docker", "exec", nginx, "rm", "-f", "/etc/nginx/enabled/bench.conf"], capture_output=True)
    subprocess.run(["docker", "exec", nginx, "nginx", "-s", "reload"], capture_output=True)
    stack.compose("rm", "-sf", *BENCH_SERVICES)


def wait_answering(url: str, timeout: float = 120, headers: dict | None = None, body: dict | None = None) -> None:
    """Until `url` answers 2xx (a POST of `body` if given)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if body is None:
                response = httpx.get(url, headers=headers, timeout=5)
            else:
                response = httpx.post(url, headers=headers, json=body, timeout=5)
            if response.is_success:
                return
            last = f"{response.status_code}"
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer 2xx within {timeout:.0f}s (last: {last})")


def seed_items(url: str, api_key: str, count: int) -> list[str]:
    """`count` items to read. Each create carries an Idempotency-Key, so one that met a busy
    stack (a 503 right after an earlier run's load) is sent again without a duplicate."""
    ids = []
    stamp = int(time.time())
    with httpx.Client(base_url=url, headers={"X-API-Key": api_key}, timeout=10) as client:
        for number in range(count):
            name = f"bench-{stamp}-{number}"
            for attempt in range(5):
                response = client.post(
                    "/api/items", json={"name": name, "price": 1.5}, headers={"Idempotency-Key": name}
                )
                if response.status_code < 500 or attempt == 4:
                    break
                time.sleep(1)
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


def probe(stack: Stack, what: str, threads: int, seconds: float, ids: list[str]) -> dict:
    output = stack.compose(
        "exec",
        "-T",
        "bench-probe",
        "python",
        "-m",
        "benchmarks.anchors.probe",
        what,
        "--threads",
        str(threads),
        "--seconds",
        str(seconds),
        "--ids",
        ",".join(ids),
        timeout=seconds + 420,
    )
    return json.loads(output.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> Path:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: apt install wrk (make deps installs it)")
    stack = Stack(args.env_file)
    if not stack.running():
        log("the stack is not running: scripts/up.sh")
        up = {**os.environ, "ENV_FILE": str(stack.env_file)}
        subprocess.run([str(REPO_ROOT / "scripts/up.sh")], check=True, env=up)
    port = stack.env.get("HTTP_PORT", "80")
    public = f"http://127.0.0.1:{port}"
    nginx = add_anchors(stack)
    results: dict[str, dict] = {}
    try:
        wait_answering(f"{public}/health")
        ids = seed_items(public, stack.api_key, 5 if args.smoke else 200)
        key = {"X-API-Key": stack.api_key}
        with ClientNetwork("bench", args.subnet, args.clients, nginx) as clients:
            at = clients.nginx_address
            paths = {
                "static": (f"http://{at}:8090/static", {}, None),
                "bare": (f"http://{at}:8090/bare/health", {}, None),
                "health": (f"http://{at}/health", {}, None),
                "cached_read": (f"http://{at}/api/items/{ids[0]}", key, None),
                "uncached_read": (f"http://{at}:8090/uncached/api/items/{ids[0]}", key, None),
                # The smallest task: the submit path, not the work, is what is measured.
                "submit": (f"http://{at}/api/async/process", key, SUBMIT_BODY),
            }
            for url, headers, body in paths.values():
                wait_answering(url, headers=headers, body=body)  # the anchors have just started
            wait_answering(f"http://{at}:8090/before/health")
            # The floor: what the stack and its anchors cost this machine with no request at all.
            quiet(stack)
            with CpuProfile(stack.project) as idle:
                time.sleep(max(args.seconds, 5))
            for name, (url, headers, body) in paths.items():
                log(f"{name}: {url}")
                quiet(stack)
                with CpuProfile(stack.project) as profile:
                    row = wrk(
                        clients,
                        url,
                        path_name=name,
                        seconds=args.seconds,
                        connections=args.connections,
                        headers=headers,
                        body=body,
                    ).as_dict()
                results[name] = {**row, "cpu": profile.result}
            users = users_steps(stack, clients, at, ids, args)
        concurrency = results["uncached_read"]["connections"]
        for name, what, threads in (
            ("raw_find_one", "find_one", concurrency),
            ("raw_publish", "publish", concurrency),
            ("tasks_end_to_end", "tasks", 8),
        ):
            log(f"{name}, {threads} threads")
            quiet(stack)
            with CpuProfile(stack.project) as profile:
                row = probe(stack, what, threads, args.seconds, ids)
            results[name] = {**row, "cpu": profile.result}
    finally:
        remove_anchors(stack, nginx)
    return write(results, users, idle.result, args)


def quiet(stack: Stack, timeout: float = 600) -> None:
    """Waits until the workers have no task left from an earlier measurement, so that one
    measurement's backlog does not take the next one's CPU."""
    deadline = time.monotonic() + timeout
    listing = ["exec", "-T", "rabbitmq", "rabbitmqctl", "-q", "list_queues", "-p", "app", "name", "messages"]
    while time.monotonic() < deadline:
        rows = [line.split() for line in stack.compose(*listing, timeout=60).splitlines()[1:]]
        waiting = sum(int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit())
        if waiting == 0:
            return
        time.sleep(2)
    raise RuntimeError(f"the queues still held {waiting} messages after {timeout:.0f}s")


def users_steps(stack: Stack, clients: ClientNetwork, at: str, ids: list[str], args: argparse.Namespace) -> dict:
    """The users' mix at each step, on the stack and on the seed's "before"."""
    env = {"BENCH_API_KEY": stack.api_key, "BENCH_ITEM_IDS": ",".join(ids)}
    systems = {"stack": (f"http://{at}", ""), "before": (f"http://{at}:8090", "/before")}
    steps: dict[str, list[dict]] = {system: [] for system in systems}
    for system, (host, prefix) in systems.items():
        for users in args.users:
            log(f"{users} users on the {system}")
            quiet(stack)
            with CpuProfile(stack.project) as profile:
                run = run_users(
                    clients, host, users, args.user_seconds, {**env, "BENCH_PREFIX": prefix}, args.user_addresses
                )
            steps[system].append({**run, "cpu": profile.result})
            log(f"  p50 {run['p50_ms']:g} ms, p99 {run['p99_ms']:g} ms, {run['failures']} failures")
    return steps


def write(results: dict[str, dict], users: dict[str, list[dict]], idle: dict, args: argparse.Namespace) -> Path:
    directory = args.results_dir / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    directory.mkdir(parents=True, exist_ok=True)
    ratios = []
    for label, top, bottom, target in TARGETS:
        # No successful operation underneath (an anchor that failed): no ratio, not a huge one.
        value = rate(results[top]) / rate(results[bottom]) if rate(results[bottom]) > 0 else None
        met = value is not None and value >= target
        ratios.append({"ratio": label, "value": value and round(value, 3), "target": target, "met": met})
    most = {system: max(runs, key=lambda run: run["users"]) for system, runs in users.items()}
    headline = {
        "users": most["stack"]["users"],
        "p99_ms": most["stack"]["p99_ms"],
        "failures": most["stack"]["failures"],
        "met": most["stack"]["p99_ms"] < 100 and most["stack"]["failures"] == 0,
        # How much faster the stack answers the same users than the seed's "before" did.
        "before_p99_ms": most["before"]["p99_ms"],
        "before_failures": most["before"]["failures"],
        "p99_before_over_stack": round(most["before"]["p99_ms"] / max(most["stack"]["p99_ms"], 0.1), 1),
        "rate_stack_over_before": round(most["stack"]["per_second"] / max(most["before"]["per_second"], 0.1), 2),
    }
    document = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {
            "clients": args.clients,
            "seconds": args.seconds,
            "connections_per_client": args.connections,
            "users": args.users,
            "user_seconds": args.user_seconds,
            "user_addresses": args.user_addresses,
        },
        "idle_cpu": idle,
        "paths": results,
        "ratios": ratios,
        "users": users,
        "headline": headline,
    }
    (directory / "results.json").write_text(json.dumps(document, indent=2))
    latency_against_users(users, directory / "latency-users.png")
    throughput_per_path({name: rate(row) for name, row in results.items()}, directory / "throughput.png")
    (directory / "report.md").write_text(markdown(document))
    print((directory / "report.md").read_text())
    return directory


def rate(row: dict) -> float:
    """Successful operations per second: wrk's 2xx/3xx answers, or a probe's operations."""
    return row.get("ok_per_second", row["per_second"])


def markdown(document: dict) -> str:
    settings = document["settings"]
    lines = [
        f"# Benchmark {document['at']}",
        "",
        f"{document['machine']['cpus']} CPUs; {settings['clients']} client addresses, "
        f"{settings['seconds']:g} s per path. Requests per second that were answered 2xx/3xx; "
        "latency percentiles per wrk process, weighted by requests.",
        "",
        "| path | ok/s | p50 ms | p90 ms | p99 ms | non-2xx | errors | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, row in document["paths"].items():
        notes = ["at the per-address ceiling"] if row.get("limited") else []
        if "threads" in row:
            notes.append(f"inside the stack, {row['threads']} threads")
        if row.get("statuses"):
            notes.append("non-2xx: " + ", ".join(f"{count} × {code}" for code, count in row["statuses"].items()))
        note = "; ".join(notes)
        lines.append(
            f"| {name} | {rate(row):,.0f} | {row['p50_ms']} | {row['p90_ms']} | {row['p99_ms']} | "
            f"{row.get('non_2xx', 0)} | {row.get('socket_errors', row.get('errors', 0))} | {note} |"
        )
    lines += ["", "| ratio | value | target | met |", "| --- | ---: | ---: | --- |"]
    for ratio in document["ratios"]:
        met = "yes" if ratio["met"] else "no"
        value = "n/a" if ratio["value"] is None else f"{ratio['value']:.2f}"
        lines.append(f"| {ratio['ratio']} | {value} | {ratio['target']:.2f} | {met} |")
    headline = document["headline"]
    lines += [
        "",
        f"## {headline['users']} users, 1 s think time (reads 70 %, creates 15 %, submits 10 %, polls 5 %)",
        "",
        "| system | users | req/s | p50 ms | p95 ms | p99 ms | failures |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for system, runs in document["users"].items():
        for run in runs:
            lines.append(
                f"| {system} | {run['users']} | {run['per_second']:,.0f} | {run['p50_ms']:g} | {run['p95_ms']:g} "
                f"| {run['p99_ms']:g} | {run['failures']} |"
            )
    met = "met" if headline["met"] else "not met"
    lines += [
        "",
        f"Target p99 < 100 ms with 0 errors at {headline['users']} users: {met} "
        f"(p99 {headline['p99_ms']:g} ms, {headline['failures']} failures). The seed's before at the same "
        f"users: p99 {headline['before_p99_ms']:g} ms, {headline['before_failures']} failures; "
        f"its p99 is {headline['p99_before_over_stack']:g}× the stack's, and the stack answers "
        f"{headline['rate_stack_over_before']:g}× its requests per second.",
        "",
        *failure_lines(document),
        "## Where the CPU went (the profile: why a path runs at the rate it does)",
        "",
        "Machine: share of both CPUs busy during the measurement. CPU per answer: the busy CPU "
        "(every part) divided by the answers, in ms; a machine that only served this path could "
        f"answer at most {document['machine']['cpus']} × 1000 ÷ that per second. Then each part's "
        "share of the busy CPU: compose services, the load tools (wrk, locust) and the rest "
        "(dockerd, the kernel's network path).",
        "",
        "| measurement | machine busy | CPU per answer | biggest parts of the busy CPU |",
        "| --- | ---: | ---: | --- |",
        *cpu_rows(document),
        "",
        "![latency against users](latency-users.png)",
        "![throughput per path](throughput.png)",
    ]
    return "\n".join(lines) + "\n"


def failure_lines(document: dict) -> list[str]:
    """Why the users' requests failed, per step that had failures."""
    lines = [
        f"- {run['users']} users, {system}: "
        + ", ".join(f"{count} × {reason}" for reason, count in run.get("failure_reasons", {}).items())
        for system, runs in document["users"].items()
        for run in runs
        if run["failures"]
    ]
    return ["Why requests failed:", "", *lines, ""] if lines else []


def cpu_rows(document: dict) -> list[str]:
    measurements = [("no load (the floor)", {"cpu": document["idle_cpu"]})]
    measurements += [(name, row) for name, row in document["paths"].items()]
    measurements += [
        (f"{run['users']} users, {system}", run) for system, runs in document["users"].items() for run in runs
    ]
    rows = []
    for name, row in measurements:
        cpu = row.get("cpu")
        if not cpu:
            continue
        parts = {**cpu["services"], "load tools": cpu["load_tools"], "rest": cpu["rest"]}
        busy = max(sum(parts.values()), 1e-9)
        biggest = sorted(parts.items(), key=lambda pair: -pair[1])[:5]
        shares = ", ".join(f"{part} {100 * used / busy:.0f} %" for part, used in biggest)
        answered = row.get("ok_per_second", row.get("per_second")) or 0
        per_answer = f"{1000 * busy / cpu['seconds'] / answered:.2f} ms" if answered else "-"
        rows.append(f"| {name} | {100 * cpu['machine_busy']:.0f} % | {per_answer} | {shares} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", type=Path, default=REPO_ROOT / ".env")
    # 48 addresses offer up to 4,500 requests/s under the per-address limit, more than any
    # path but nginx's own answer can take on 2 CPUs; more only adds waiting connections.
    parser.add_argument("--clients", type=int, default=48, help="client addresses for wrk (network namespaces)")
    parser.add_argument("--connections", type=int, default=2, help="kept-alive connections per address")
    parser.add_argument("--seconds", type=float, default=10, help="per path")
    parser.add_argument(
        "--users", type=lambda text: [int(n) for n in text.split(",")], default=[100, 250, 500, 1000], help="steps"
    )
    parser.add_argument("--user-seconds", type=float, default=30, help="per step, once every user runs")
    # 1000 users at 1 request/s each stay under the limit from 12 addresses (83/s each);
    # each address is a locust process, and each process costs CPU the stack would use.
    parser.add_argument("--user-addresses", type=int, default=12, help="client addresses for the users (locust)")
    parser.add_argument("--subnet", default="172.28.240", help="a free /24 for the client addresses")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the run's directory goes")
    parser.add_argument("--smoke", action="store_true", help="a few seconds in all: does it run, does it report")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.seconds, args.users, args.user_seconds, args.user_addresses = 2, 1, [4], 2, 2
    try:
        directory = run(args)
    except RuntimeError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    log(f"results in {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
