"""The health sweep (`fleet health`, or `fleet-health`): every host of an environment checked
over SSH, in seconds.

    fleet-health -i ansible/inventory/pulumi.py          (PULUMI_OUTPUTS_FILE or PULUMI_STACK)
    fleet-health -i ansible/inventory/example.yml --json
    fleet-health -i ansible/inventory/pulumi.py --watch 10

Exit code: 0 healthy (warnings allowed), 1 degraded (a check failed), 2 down (a host is
unreachable), 3 at risk (nothing failed, but a cluster serves short of a member: one more loss
would stop it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from fleet.inventory import InventoryError, Target, load
from fleet.sweep import HostResult, Sweeper

# "at risk" came last: the codes scripts already knew keep their meaning.
EXIT = {"healthy": 0, "degraded": 1, "down": 2, "at risk": 3}
EPILOG = (
    "Exit code: 0 healthy, 1 degraded (a check failed), 2 down (a host is unreachable), "
    "3 at risk (a cluster short of a member)."
)
MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}


def fleet_checks(results: list[HostResult], previous: dict[str, int] | None) -> list[dict[str, Any]]:
    """What no single host can tell: exactly one beat, and whether the backlog grows."""
    checks = []
    workers = [r for r in results if "workers" in r.target.tiers]
    if workers:
        beats = [r.target.name for r in workers for c in r.checks if c["check"] == "beat" and c["data"].get("beat")]
        unknown = [r.target.name for r in workers if not r.reachable]
        if len(beats) == 1:
            checks.append({"check": "beat", "status": "ok", "detail": f"exactly one beat, on {beats[0]}"})
        elif not beats and unknown:
            checks.append(
                {"check": "beat", "status": "fail", "detail": f"no beat found; {', '.join(unknown)} unreachable"}
            )
        else:
            found = ", ".join(beats) or "none"
            checks.append(
                {"check": "beat", "status": "fail", "detail": f"{len(beats)} beats running ({found}); want 1"}
            )
    depths = queue_depths(results)
    if depths and previous:
        growing = {q: (previous[q], d) for q, d in depths.items() if q in previous and d > previous[q] > 0}
        if growing:
            detail = ", ".join(f"{q} {a} -> {b}" for q, (a, b) in growing.items())
            checks.append({"check": "backlog", "status": "warn", "detail": f"queues growing: {detail}"})
    for check in checks:
        check.setdefault("took_ms", 0)
    return checks


def queue_depths(results: list[HostResult]) -> dict[str, int]:
    for result in results:
        for check in result.checks:
            if check["check"] == "data:rabbitmq" and "queues" in check.get("data", {}):
                return check["data"]["queues"]
    return {}


def verdict(results: list[HostResult], fleet: list[dict[str, Any]]) -> str:
    if any(not r.reachable for r in results):
        return "down"
    if any(c["status"] == "fail" for r in results for c in r.checks) or any(c["status"] == "fail" for c in fleet):
        return "degraded"
    if any(c["status"] == "warn" and c.get("data", {}).get("cluster_short") for r in results for c in r.checks):
        return "at risk"
    return "healthy"


def table(
    results: list[HostResult], fleet: list[dict[str, Any]], status: str, took: float, problems: bool = False
) -> str:
    """One row per check; with `problems`, only the checks that are not ok."""
    shown = ("warn", "fail") if problems else tuple(MARK)
    rows = [("HOST", "TIER", "CHECK", "STATUS", "TOOK", "DETAIL")]
    for result in sorted(results, key=lambda r: (r.target.tier, r.target.name)):
        for check in (c for c in result.checks if c["status"] in shown):
            spent = "-" if check.get("took_ms") is None else f"{check['took_ms']}ms"
            row = (
                result.target.name,
                result.target.tier,
                check["check"],
                MARK[check["status"]],
                spent,
                check["detail"],
            )
            rows.append(row)
    for check in (c for c in fleet if c["status"] in shown):
        rows.append(("(fleet)", "-", check["check"], MARK[check["status"]], "-", check["detail"]))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    # Nothing to show (--problems on a healthy fleet): the summary line alone, no header.
    lines = []
    if len(rows) > 1:
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + f"  {row[5]}" for row in rows]
        lines.append("")
    counts = {s: sum(c["status"] == s for r in results for c in r.checks) for s in MARK}
    unreachable = [r.target.name for r in results if not r.reachable]
    lines.append(
        f"{status.upper()}: {len(results)} host{'' if len(results) == 1 else 's'}, "
        f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail"
        + (f"; unreachable: {', '.join(unreachable)}" if unreachable else "")
        + f"; sweep took {took:.1f}s"
    )
    return "\n".join(lines)


def as_json(results: list[HostResult], fleet: list[dict[str, Any]], status: str, took: float) -> str:
    return json.dumps(
        {
            "status": status,
            "exit_code": EXIT[status],
            "took_s": round(took, 2),
            "hosts": [
                {
                    "host": r.target.name,
                    "tiers": r.target.tiers,
                    "address": r.target.address,
                    "reachable": r.reachable,
                    "took_s": round(r.took_s, 2),
                    "checks": r.checks,
                }
                for r in results
            ],
            "fleet": fleet,
        },
        indent=2,
    )


async def run(targets: list[Target], args: argparse.Namespace) -> int:
    previous: dict[str, int] | None = None
    code = 0
    sweeps = 0
    while True:
        started = time.monotonic()
        results = await Sweeper(host_timeout=args.timeout).sweep(targets)
        took = time.monotonic() - started
        fleet = fleet_checks(results, previous)
        previous = queue_depths(results) or previous
        status = verdict(results, fleet)
        code = EXIT[status]
        if args.json:
            print(as_json(results, fleet, status, took), flush=True)
        else:
            print(table(results, fleet, status, took, args.problems), flush=True)
        sweeps += 1
        if not args.watch or (args.count and sweeps >= args.count):
            return code
        print(flush=True)
        await asyncio.sleep(args.watch)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sweep's options, shared by `fleet-health` and `fleet health`."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--problems", action="store_true", help="in the table, only the checks that are not ok")
    parser.add_argument("--watch", type=float, metavar="N", help="sweep again every N seconds")
    parser.add_argument("--count", type=int, metavar="M", help="with --watch: stop after M sweeps")
    parser.add_argument(
        "--timeout", type=float, default=15.0, metavar="S", help="deadline per host, in seconds (default 15)"
    )
    parser.add_argument("--limit", metavar="GROUP", help="only the hosts of this group (lb, api, workers, data, ...)")
    parser.add_argument(
        "--backlog-warn", type=int, default=1000, metavar="N", help="queue depth reported as a backlog (default 1000)"
    )


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Sweep as `args` say; the exit code says how the fleet is."""
    if args.watch is not None and args.watch <= 0:
        parser.error("--watch needs a positive number of seconds")
    if args.count is not None and args.count <= 0:
        parser.error("--count needs a positive number of sweeps")
    if args.timeout <= 0:
        parser.error("--timeout needs a positive number of seconds")
    try:
        targets = load(args.inventory, backlog_warn=args.backlog_warn)
    except InventoryError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 2
    if args.limit:
        targets = [t for t in targets if args.limit in t.tiers or t.name == args.limit]
        if not targets:
            print(f"{parser.prog}: no host matches --limit {args.limit}", file=sys.stderr)
            return 2
    try:
        return asyncio.run(run(targets, args))
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fleet-health",
        description="Check every host of an environment over SSH (the same as `fleet health`).",
        epilog=EPILOG,
    )
    parser.add_argument(
        "-i", "--inventory", required=True, help="an Ansible inventory: ansible/inventory/pulumi.py, a static file, ..."
    )
    add_arguments(parser)
    return check(parser, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
