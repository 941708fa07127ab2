"""Holds many kept-alive connections to nginx from one client address (run in a client
namespace: benchmarks/clients.py), for the connections measurement of `make bench`.

    python -m benchmarks.holder ADDRESS --connections 200 --path /health

Opens every connection, then sends one request on each, paced under nginx's per-address limit,
and prints "held". It keeps them open until a line arrives on stdin, sends a second request on
each (a connection nginx dropped meanwhile fails it), and prints one JSON object: connections
opened, answers by status on each round, and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter

from benchmarks.load import PACE, PER_ADDRESS_LIMIT


async def request(stream: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str) -> str:
    reader, writer = stream
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status_line.split()[1].decode() if status_line else "closed"


async def round_of_requests(streams: list, path: str) -> Counter[str]:
    """One request on every connection, at the address's paced rate."""
    statuses: Counter[str] = Counter()
    pause = 1 / (PACE * PER_ADDRESS_LIMIT)

    async def one(stream: tuple) -> None:
        try:
            statuses[await asyncio.wait_for(request(stream, path), 10)] += 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError, IndexError) as error:
            statuses[type(error).__name__] += 1

    pending = []
    for stream in streams:
        pending.append(asyncio.create_task(one(stream)))
        await asyncio.sleep(pause)
    await asyncio.gather(*pending)
    return statuses


async def hold(address: str, port: int, connections: int, path: str) -> dict:
    opened = await asyncio.gather(
        *(asyncio.wait_for(asyncio.open_connection(address, port), 10) for _ in range(connections)),
        return_exceptions=True,
    )
    streams = [stream for stream in opened if not isinstance(stream, BaseException)]
    first = await round_of_requests(streams, path)
    print("held", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    last = await round_of_requests(streams, path)
    for _, writer in streams:
        writer.close()
    return {
        "connections": connections,
        "opened": len(streams),
        "first": dict(first),
        "last": dict(last),
        "errors": connections - len(streams) + sum(n for s, n in [*first.items(), *last.items()] if s != "200"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--path", default="/health")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(hold(args.address, args.port, args.connections, args.path))), flush=True)


if __name__ == "__main__":
    main()
