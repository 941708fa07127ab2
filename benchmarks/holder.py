"""Holds many kept-alive connections to nginx from one client address (run in a client
namespace: benchmarks/clients.py), for the connections measurement of `make bench`.

    python -m benchmarks.holder ADDRESS --connections 200 --path /health [--poll-seconds 10]

Opens every connection, then sends one request on each, paced under nginx's per-address limit,
and prints "held". Until a line arrives on stdin it goes on sending a request on each
connection every 10 s (--poll-seconds), spread over them, as clients that poll do (nginx closes a
kept-alive connection idle for its keepalive_timeout, 30 s). A connection nginx dropped fails its next
request. Prints one JSON object: connections opened, answers by status, rounds and errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter

from benchmarks.load import PACE, PER_ADDRESS_LIMIT

POLL_SECONDS = 10  # a round's length by default: well under nginx's keepalive_timeout (30 s)


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


async def round_of_requests(streams: list, path: str, poll_seconds: float) -> Counter[str]:
    """One request on every connection, spread over `poll_seconds` (and under the address's
    limit), as clients that poll every `poll_seconds` would send them."""
    statuses: Counter[str] = Counter()
    pause = max(1 / (PACE * PER_ADDRESS_LIMIT), poll_seconds / max(len(streams), 1))

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


async def hold(address: str, port: int, connections: int, path: str, poll_seconds: float) -> dict:
    opened = await asyncio.gather(
        *(asyncio.wait_for(asyncio.open_connection(address, port), 10) for _ in range(connections)),
        return_exceptions=True,
    )
    streams = [stream for stream in opened if not isinstance(stream, BaseException)]
    statuses = await round_of_requests(streams, path, poll_seconds)
    rounds = 1
    print("held", flush=True)
    ended = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
    while not ended.done():
        statuses += await round_of_requests(streams, path, poll_seconds)
        rounds += 1
    for _, writer in streams:
        writer.close()
    return {
        "connections": connections,
        "opened": len(streams),
        "rounds": rounds,
        "statuses": dict(statuses),
        "errors": connections - len(streams) + sum(n for status, n in statuses.items() if status != "200"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--path", default="/health")
    parser.add_argument("--poll-seconds", type=float, default=POLL_SECONDS, help="a round's length")
    args = parser.parse_args()
    held = hold(args.address, args.port, args.connections, args.path, args.poll_seconds)
    print(json.dumps(asyncio.run(held)), flush=True)


if __name__ == "__main__":
    main()
