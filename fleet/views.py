"""What the fleet runs, has run and says, read from every host at once over SSH: `fleet details`
(containers, images, the deploy lock), `fleet audit` (the release histories, merged) and
`fleet logs` (a service's container logs, each line named by its host)."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any

from fleet import remote
from fleet.inventory import Target

# Each service: the tier whose hosts run it and its container's name (the roles' *_container).
SERVICES = {
    "api": ("api", "api"),
    "worker": ("workers", "worker"),
    "beat": ("workers", "beat"),
    "nginx": ("lb", "nginx"),
    "mongodb": ("data", "mongodb"),
    "redis": ("data", "redis"),
    "redis-sentinel": ("data", "redis-sentinel"),  # its log tells of failovers (+switch-master)
    "rabbitmq": ("data", "rabbitmq"),
}
CONTAINER_TIERS = sorted({tier for tier, _ in SERVICES.values()})
LOCK_FILE = "deploy.lock/holder.json"  # under the state directory (roles/deploy_lock)


def in_tiers(targets: list[Target], tiers: list[str]) -> list[Target]:
    return [t for t in targets if set(t.tiers) & set(tiers)]


def columns(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + row[-1] for row in rows)


def cat_if_there(path: str) -> str:
    return f"sh -c {shlex.quote(f'cat {shlex.quote(path)} 2>/dev/null || true')}"


async def lock_holder(targets: list[Target]) -> dict[str, Any] | None:
    """Who holds the deploy lock (its holder.json), or None when it is free."""
    hosts = [t for t in targets if t.facts.get("lock_host")]
    answers = await remote.run(hosts, lambda t: cat_if_there(f"{t.facts['state_dir']}/{LOCK_FILE}"))
    for answer in answers:
        if not answer.ok:
            return {"error": f"{answer.target.name}: {answer.error}"}
        if answer.output.strip():
            return {"host": answer.target.name, **json.loads(answer.output)}
    return None


def describe_lock(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "deploy lock: free"
    if "error" in holder:
        return f"deploy lock: unknown ({holder['error']})"
    why = f": {holder['message']}" if holder.get("message") else ""
    return f"deploy lock: held by {holder.get('by')} since {holder.get('since')} ({holder.get('playbook')}{why})"


async def details(targets: list[Target], as_json: bool) -> int:
    """Per host, every container with its image and status; and the deploy lock."""
    hosts = in_tiers(targets, CONTAINER_TIERS)
    answers = await remote.run(hosts, lambda t: "docker ps --all --no-trunc --format '{{json .}}'")
    holder = await lock_holder(targets)
    found = []
    for answer in sorted(answers, key=lambda a: (a.target.tier, a.target.name)):
        containers = [json.loads(line) for line in answer.output.splitlines() if line.strip()]
        found.append(
            {
                "host": answer.target.name,
                "tiers": answer.target.tiers,
                "error": answer.error,
                "containers": [
                    {"name": c["Names"], "image": c["Image"], "state": c["State"], "status": c["Status"]}
                    for c in sorted(containers, key=lambda c: c["Names"])
                ],
            }
        )
    if as_json:
        print(json.dumps({"hosts": found, "deploy_lock": holder}, indent=2))
    else:
        rows = [("HOST", "TIER", "CONTAINER", "STATUS", "IMAGE")]
        for host in found:
            if host["error"]:
                rows.append((host["host"], ",".join(host["tiers"]), "-", "UNREACHABLE", host["error"]))
            for c in host["containers"]:
                rows.append((host["host"], ",".join(host["tiers"]), c["name"], c["status"], c["image"]))
        print(columns(rows))
        print(f"\n{describe_lock(holder)}")
    return 1 if any(h["error"] for h in found) else 0


async def audit(targets: list[Target], as_json: bool) -> int:
    """Every host's release history (roles/release: history.jsonl), merged, oldest first."""
    hosts = in_tiers(targets, ["api", "workers"])
    answers = await remote.run(hosts, lambda t: cat_if_there(f"{t.facts['state_dir']}/history.jsonl"))
    entries = sorted(
        (json.loads(line) for a in answers for line in a.output.splitlines() if line.strip()),
        key=lambda e: (e.get("time", ""), e.get("host", "")),
    )
    failed = [a for a in answers if not a.ok]
    if as_json:
        print(json.dumps({"history": entries, "unreachable": {a.target.name: a.error for a in failed}}, indent=2))
    else:
        rows = [("TIME", "HOST", "PLAYBOOK", "BY", "IMAGES")]
        for e in entries:
            images = ", ".join(f"{name}={image}" for name, image in sorted(e.get("images", {}).items()))
            rows.append((e.get("time", "?"), e.get("host", "?"), e.get("playbook", "?"), e.get("by", "?"), images))
        print(columns(rows) if entries else "no release recorded yet: `fleet setup` or `fleet deploy` records one")
        for answer in failed:
            print(f"{answer.target.name}: history not read: {answer.error}", file=sys.stderr)
    return 1 if failed else 0


async def logs(targets: list[Target], service: str, follow: bool, lines: int) -> int:
    """The service's container logs from every host of its tier that runs it, each line named
    by its host; with `follow`, new lines as they come until interrupted."""
    tier, container = SERVICES[service]
    hosts = in_tiers(targets, [tier])
    width = max((len(t.name) for t in hosts), default=0)
    follow_flag = " --follow" if follow else ""
    script = (
        f"docker container inspect {container} >/dev/null 2>&1 || exit 0; "
        f"exec docker logs --timestamps --tail {lines}{follow_flag} {container} 2>&1"
    )

    def write(host: str, line: str) -> None:
        print(f"{host.ljust(width)} | {line}", flush=True)

    return await remote.stream(hosts, lambda t: f"sh -c {shlex.quote(script)}", write)
