"""Commands on many hosts at once over SSH, connected the way the health sweep connects (through
the jump hosts the inventory names), for `fleet logs`, `details` and `audit`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import asyncssh

from fleet.inventory import Target
from fleet.sweep import Connections, JumpError, explain


@dataclass
class Answer:
    target: Target
    output: str = ""
    error: str = ""  # why the host gave no output: unreachable, or the command failed

    @property
    def ok(self) -> bool:
        return not self.error


async def run(targets: list[Target], command: Callable[[Target], str], timeout: float = 30.0) -> list[Answer]:
    """`command(target)` on every target at once (with sudo), each within `timeout` seconds."""
    connections = Connections(timeout)

    async def one(target: Target) -> Answer:
        try:
            async with asyncio.timeout(timeout):
                async with await connections.connect(target) as connection:
                    result = await connection.run(f"sudo -n {command(target)}", check=False)
        except JumpError as error:
            return Answer(target, error=str(error))
        except (TimeoutError, OSError, asyncssh.Error) as error:
            return Answer(target, error=explain(error, target.address, target.user))
        if result.exit_status != 0:
            stderr = " ".join(str(result.stderr or "").strip().splitlines()[-2:])
            return Answer(target, error=f"exited {result.exit_status}: {stderr}")
        return Answer(target, output=str(result.stdout))

    try:
        return list(await asyncio.gather(*(one(t) for t in targets)))
    finally:
        connections.close()


async def stream(targets: list[Target], command: Callable[[Target], str], write: Callable[[str, str], None]) -> int:
    """`command(target)` on every target at once, each line of its output (stdout and stderr)
    passed to `write(host, line)` as it comes, until every command ends. The exit code is 0
    when every host's command succeeded."""
    connections = Connections(30.0)

    async def one(target: Target) -> bool:
        try:
            async with await connections.connect(target) as connection:
                async with connection.create_process(f"sudo -n {command(target)}", stderr=asyncssh.STDOUT) as process:
                    async for line in process.stdout:
                        write(target.name, line.rstrip("\n"))
                    await process.wait()
                    if process.exit_status:
                        write(target.name, f"(exited {process.exit_status})")
                    return process.exit_status == 0
        except JumpError as error:
            write(target.name, f"({error})")
        except (TimeoutError, OSError, asyncssh.Error) as error:
            write(target.name, f"({explain(error, target.address, target.user)})")
        return False

    try:
        return 0 if all(await asyncio.gather(*(one(t) for t in targets))) else 1
    finally:
        connections.close()
