"""Raw throughput with wrk, one wrk process per client address (wrk cannot choose its source
address, so each runs in its own network namespace: benchmarks/clients.py).

Each address is held to nginx's per-address limit (100 requests/s, burst 100) like any
client. Each connection therefore waits between requests (wrk's `delay()`), so that an address
offers at most 95 % of its limit: a client that sent faster would only collect 429s, and those
cost nginx the CPU the path needs. A run's ceiling is thus about 95 × the number of addresses;
the result says when a path reached it (`limited`).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass

from benchmarks.clients import ClientNetwork

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
PER_ADDRESS_LIMIT = 100  # nginx/nginx.conf: limit_req_zone ... rate=100r/s
PACE = 0.95  # of the limit, per address


@dataclass
class Throughput:
    path: str
    per_second: float  # answered requests per second, all addresses together
    ok_per_second: float  # of them 2xx or 3xx
    requests: int
    non_2xx: int
    statuses: dict[str, int]  # the non-2xx answers by status, to tell shed load from failures
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    clients: int
    connections: int
    limited: bool  # near the per-address ceiling: the path may be faster than measured

    def as_dict(self) -> dict:
        return asdict(self)


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * UNITS[unit]


def parse(output: str) -> dict:
    """The figures of one wrk --latency run."""
    requests, seconds = re.search(r"(\d+) requests in ([\d.]+)(m?s)", output).group(1, 2)
    unit = re.search(r"\d+ requests in [\d.]+(m?s)", output).group(1)
    duration = float(seconds) * (60 if unit == "m" else 1)
    percentiles = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", output, re.M)}
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    statuses = {code: int(n) for code, n in re.findall(r"^status (\d+) (\d+)$", output, re.M) if code[0] not in "23"}
    return {
        "requests": int(requests),
        "seconds": duration,
        "non_2xx": non_2xx,
        "statuses": statuses,
        "socket_errors": errors,
        **{f"p{p}": v for p, v in percentiles.items()},
    }


def wrk(
    clients: ClientNetwork,
    url: str,
    *,
    path_name: str,
    seconds: float,
    connections: int = 2,
    headers: dict[str, str] | None = None,
    body: dict | None = None,
    addresses: range | None = None,
    paced: bool = True,
) -> Throughput:
    """`connections` kept-alive connections from every client address (or those of
    `addresses`), for `seconds`, each paced under the address's limit unless `paced` is off;
    with `body`, a JSON POST."""
    addresses = addresses or range(clients.count)
    header_args = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as script:
        script.write(lua(connections, body, paced))
        script.flush()
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "--latency", "-s", script.name]
        argv += [*header_args, url]
        processes = [
            subprocess.Popen(clients.command(index, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for index in addresses
        ]
        runs = []
        for process in processes:
            output, _ = process.communicate(timeout=seconds + 60)
            if process.returncode != 0:
                raise RuntimeError(f"wrk failed: {output[-500:]}")
            runs.append(parse(output))
    total = sum(run["requests"] for run in runs)
    non_2xx = sum(run["non_2xx"] for run in runs)
    duration = max(run["seconds"] for run in runs)

    def weighted(key: str) -> float:
        # wrk reports percentiles per process; weight each by its requests (an approximation).
        return sum(run[key] * run["requests"] for run in runs) / max(total, 1)

    ok_rate = (total - non_2xx) / duration
    statuses: dict[str, int] = {}
    for run in runs:
        for code, count in run["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    return Throughput(
        path=path_name,
        per_second=round(total / duration, 1),
        ok_per_second=round(ok_rate, 1),
        requests=total,
        non_2xx=non_2xx,
        statuses=dict(sorted(statuses.items())),
        socket_errors=sum(run["socket_errors"] for run in runs),
        p50_ms=round(weighted("p50"), 2),
        p90_ms=round(weighted("p90"), 2),
        p99_ms=round(weighted("p99"), 2),
        clients=len(addresses),
        connections=len(addresses) * connections,
        limited=ok_rate >= 0.9 * PACE * PER_ADDRESS_LIMIT * len(addresses),
    )


# Each answer's status is counted in wrk's thread and printed at the end ("status 503 12").
COUNT_STATUSES = """\
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do io.write(string.format("status %d %d\\n", status, count)) end
  end
end
"""


def lua(connections: int, body: dict | None, paced: bool = True) -> str:
    """wrk's script: the pause between a connection's requests (none if not `paced`), the POST
    if any, and the count of answers by status."""
    pause_ms = connections * 1000 / (PACE * PER_ADDRESS_LIMIT)
    lines = [COUNT_STATUSES, *([f"function delay() return {pause_ms:.1f} end"] if paced else [])]
    if body is not None:
        lines += [
            'wrk.method = "POST"',
            f"wrk.body = {json.dumps(json.dumps(body))}",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    return "\n".join(lines) + "\n"
