"""One sweep: every host at once over SSH (asyncssh), each with its own deadline.

A host is connected (through its jump host when the inventory says so; one jump connection
serves every host behind it), runs fleet/probe.py with sudo, and its answer is parsed. A host
that does not answer in time is reported unreachable and never holds up the others.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from fleet.inventory import Target

PROBE = (Path(__file__).resolve().parent / "probe.py").read_text()
# Seconds of a host's deadline kept for the probe's start (sudo, python3) and its answer's way back.
PROBE_MARGIN = 2.5
CLOCK_WARN, CLOCK_FAIL = 1.0, 5.0  # seconds of skew


@dataclass
class HostResult:
    target: Target
    reachable: bool
    checks: list[dict[str, Any]] = field(default_factory=list)
    took_s: float = 0.0


def failure(check: str, detail: str, took: float | None = None, status: str = "fail") -> dict[str, Any]:
    return {
        "check": check,
        "status": status,
        "detail": detail,
        "took_ms": None if took is None else round(took * 1000),
        "data": {},
    }


def explain(error: BaseException, where: str, user: str | None) -> str:
    """A connection error in words an operator can act on."""
    if isinstance(error, asyncssh.HostKeyNotVerifiable):
        return (
            f"unknown or changed host key for {where}: check it, then add it to known_hosts "
            f"(for example by connecting once with ssh)"
        )
    if isinstance(error, asyncssh.PermissionDenied):
        return f"{where} refused the SSH key for user {user or '(default)'}: check ansible_user and the key"
    if isinstance(error, asyncssh.DisconnectError):
        return f"{where} closed the connection: {error.reason}"
    if isinstance(error, TimeoutError):
        return f"{where} did not answer in time"
    if isinstance(error, OSError):
        return f"cannot reach {where}: {error.strerror or error}"
    return f"{where}: {type(error).__name__}: {error}"


async def read_clock(connection: asyncssh.SSHClientConnection) -> tuple[str, float, float]:
    """The host's clock and the moments we asked and heard back.

    The process is started first and only then asked for the time, so the round trip is one
    line each way, not a channel set-up (which would bias the midpoint)."""
    async with connection.create_process("read line && date +%s.%N") as process:
        sent = time.time()
        process.stdin.write("\n")
        answer = await process.stdout.readline()
        return answer, sent, time.time()


def clock_check(answer: str, sent: float, received: float) -> dict[str, Any]:
    """The host's clock against ours, at the middle of the round trip."""
    try:
        skew = float(answer.strip()) - (sent + received) / 2
    except ValueError:
        return failure("clock", f"could not read the host's clock: {answer.strip()!r}", status="warn")
    state = "ok" if abs(skew) < CLOCK_WARN else "warn" if abs(skew) < CLOCK_FAIL else "fail"
    return {
        "check": "clock",
        "status": state,
        "detail": f"{skew:+.3f}s from this machine",
        "took_ms": round((received - sent) * 1000),
        "data": {"skew_s": skew},
    }


class Connections:
    """SSH connections to the fleet's hosts, each through its jump host when the inventory says
    so; one jump connection serves every host behind it. `close()` closes the jump hosts."""

    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self._jumps: dict[tuple, asyncio.Task] = {}

    def _options(self, target: Target) -> dict[str, Any]:
        options: dict[str, Any] = {"connect_timeout": self.connect_timeout, "keepalive_interval": 5}
        if target.ssh_configs:
            options["config"] = target.ssh_configs
        if target.key:
            options["client_keys"] = [str(Path(target.key).expanduser())]
        if target.known_hosts:
            known_hosts = Path(target.known_hosts).expanduser()
            if not known_hosts.exists():
                # asyncssh would read a missing file as no host keys; say what records them.
                raise JumpError(
                    f"no host keys yet in {known_hosts} (the inventory's UserKnownHostsFile): "
                    "`fleet setup` records each host's key the first time it connects"
                )
            options["known_hosts"] = str(known_hosts)
        return options

    async def _jump(self, target: Target) -> asyncssh.SSHClientConnection:
        user, _, hostport = target.jump.rpartition("@")
        host, _, port = hostport.partition(":")
        key = (target.jump, tuple(target.ssh_configs), target.key, target.known_hosts)
        if key not in self._jumps:
            self._jumps[key] = asyncio.ensure_future(
                asyncssh.connect(host, port=int(port or 22), username=user or target.user, **self._options(target))
            )
        try:
            return await asyncio.shield(self._jumps[key])
        except (TimeoutError, OSError, asyncssh.Error) as error:
            raise JumpError(explain(error, f"jump host {target.jump}", user or target.user)) from None

    async def connect(self, target: Target) -> asyncssh.SSHClientConnection:
        tunnel = await self._jump(target) if target.jump else None
        return await asyncssh.connect(
            target.address, port=target.port, username=target.user, tunnel=tunnel, **self._options(target)
        )

    def close(self) -> None:
        for task in self._jumps.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()
            else:
                task.cancel()
        self._jumps.clear()


class Sweeper:
    def __init__(self, host_timeout: float = 15.0, connect_timeout: float | None = None) -> None:
        self.host_timeout = host_timeout
        # One deadline per host by default: a separate, shorter one for the SSH handshake made
        # hosts of a busy machine, slow to shake hands but alive, look unreachable.
        self.connections = Connections(min(connect_timeout or host_timeout, host_timeout))

    async def _probe(self, target: Target) -> HostResult:
        started = time.monotonic()
        try:
            connection = await self.connections.connect(target)
        except JumpError as error:
            return HostResult(target, False, [failure("ssh", str(error), time.monotonic() - started)])
        connected = time.monotonic() - started
        async with connection:
            clock = await read_clock(connection)
            # The probe's checks are cut to what is left of this host's deadline, less the time
            # its start and answer take: a slow check then says so itself.
            budget = self.host_timeout - (time.monotonic() - started) - PROBE_MARGIN
            facts = target.facts | {"budget": round(max(1.0, budget), 1)}
            command = "sudo -n python3 - " + shlex.quote(json.dumps(facts))
            result = await connection.run(command, input=PROBE, check=False)
        checks = [
            {
                "check": "ssh",
                "status": "ok",
                "detail": f"connected as {target.user or 'default user'}",
                "took_ms": round(connected * 1000),
                "data": {},
            }
        ]
        if result.exit_status != 0:
            stderr = (result.stderr or "").strip().splitlines()
            hint = " (the SSH user needs passwordless sudo)" if any("password" in line for line in stderr) else ""
            checks.append(failure("probe", f"probe exited {result.exit_status}: {' '.join(stderr[-2:])}{hint}"))
            return HostResult(target, True, checks, time.monotonic() - started)
        answer = json.loads(result.stdout)
        checks.append(clock_check(*clock))
        return HostResult(target, True, checks + answer["checks"], time.monotonic() - started)

    async def host(self, target: Target) -> HostResult:
        started = time.monotonic()
        try:
            return await asyncio.wait_for(self._probe(target), timeout=self.host_timeout)
        except (TimeoutError, OSError, asyncssh.Error) as error:
            elapsed = time.monotonic() - started
            detail = explain(error, target.address, target.user)
            if isinstance(error, TimeoutError):
                detail = f"{target.address} gave no answer within {elapsed:.0f}s"
            return HostResult(
                target, False, [failure("ssh", detail, time.monotonic() - started)], time.monotonic() - started
            )
        except (ValueError, KeyError) as error:  # a probe that printed something else
            return HostResult(
                target, True, [failure("probe", f"unreadable answer: {error}")], time.monotonic() - started
            )

    async def sweep(self, targets: list[Target]) -> list[HostResult]:
        try:
            return list(await asyncio.gather(*(self.host(t) for t in targets)))
        finally:
            self.connections.close()


class JumpError(Exception):
    pass
