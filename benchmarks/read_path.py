"""Read-path benchmark: raw MongoDB `find_one`/s, item reads/s through the API without the
cache and with it, measured in one run on the same data, with the ratios.

    python -m benchmarks.read_path [--duration 10] [--concurrency 16] [--mongo-url URL]

Starts its own servers (as the tests do): Redis, RabbitMQ, SecantusDB (or the given
mongod), and two gunicorn servers of the app, one with CACHE_ENABLED=false. Results are
printed and written to benchmarks/results/read_path-<time>.json. The load generator runs on
the same machine as the servers, so absolute numbers are a floor; compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pymongo
from bson import ObjectId

from devstack.servers import ApiServer
from devstack.stack import Stack

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def bench_mongo(url: str, database: str, ids: list[ObjectId], duration: float, threads: int) -> dict:
    client = pymongo.MongoClient(url, maxPoolSize=threads)
    items = client[database].items
    items.find_one({"_id": ids[0]})
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def run() -> None:
        local = []
        rng = random.Random()
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            assert items.find_one({"_id": rng.choice(ids)}) is not None
            local.append(time.perf_counter() - started)
        with lock:
            latencies.extend(local)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    client.close()
    return summarize(latencies, duration, errors=0)


async def bench_http(base_url: str, ids: list[str], duration: float, concurrency: int) -> dict:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10) as client:
        deadline = time.perf_counter() + duration

        async def run() -> None:
            nonlocal errors
            rng = random.Random()
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.get(f"/api/items/{rng.choice(ids)}")
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        await asyncio.gather(*(run() for _ in range(concurrency)))
    return summarize(latencies, duration, errors)


def summarize(latencies: list[float], duration: float, errors: int) -> dict:
    ordered = sorted(latencies)
    return {
        "ops": len(ordered),
        "ops_per_second": round(len(ordered) / duration, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
        "errors": errors,
    }


def warm(base_url: str, ids: list[str]) -> list[str]:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        return [client.get(f"/api/items/{i}").headers.get("x-cache", "") for i in ids]


def main() -> None:
    parser = argparse.ArgumentParser(description="MongoDB vs uncached vs cached item reads")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--api-workers", type=int, default=2, help="gunicorn workers per API server")
    parser.add_argument("--mongo-url", default=os.environ.get("BENCH_MONGO_URL"))
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-"))
    stack = Stack(root, mongo_url=args.mongo_url, settings={"LOG_LEVEL": "WARNING"}, api_workers=args.api_workers)
    uncached = None
    try:
        stack.start_services()
        stack.api.start()
        uncached = ApiServer(root / "api-uncached", {**stack.env, "CACHE_ENABLED": "false"}, workers=args.api_workers)
        uncached.start()

        with pymongo.MongoClient(stack.mongo_url) as client:
            items = client[stack.mongo_db].items
            now = datetime.now(UTC)
            run = os.urandom(3).hex()
            result = items.insert_many(
                [
                    {
                        "name": f"bench-{run}-{n}",
                        "description": "x" * 200,
                        "price": n / 10,
                        "quantity": n,
                        "tags": ["bench", f"t{n % 10}"],
                        "created_at": now,
                        "updated_at": now,
                    }
                    for n in range(args.items)
                ]
            )
        ids = list(result.inserted_ids)
        str_ids = [str(i) for i in ids]
        assert set(warm(stack.api.url, str_ids)) <= {"MISS", "HIT"}
        assert set(warm(uncached.url, str_ids[:10])) == {"BYPASS"}

        print(
            f"{args.items} items, {args.duration:.0f}s each, concurrency {args.concurrency}, "
            f"{args.api_workers} gunicorn workers per API, {os.cpu_count()} CPUs\n",
            flush=True,
        )
        results = {
            "mongodb_find_one": bench_mongo(stack.mongo_url, stack.mongo_db, ids, args.duration, args.concurrency),
            "api_uncached": asyncio.run(bench_http(uncached.url, str_ids, args.duration, args.concurrency)),
            "api_cached": asyncio.run(bench_http(stack.api.url, str_ids, args.duration, args.concurrency)),
        }
    finally:
        if uncached is not None:
            uncached.stop()
        stack.stop()

    raw, cold, hot = (results[k]["ops_per_second"] for k in ("mongodb_find_one", "api_uncached", "api_cached"))
    ratios = {
        "cached_vs_uncached": round(hot / cold, 2),
        "uncached_vs_raw_db": round(cold / raw, 2),
        "cached_vs_raw_db": round(hot / raw, 2),
    }
    print(f"{'path':<20}{'ops/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, figures in results.items():
        print(
            f"{name:<20}{figures['ops_per_second']:>12.1f}{figures['p50_ms']:>10.2f}"
            f"{figures['p99_ms']:>10.2f}{figures['errors']:>8}"
        )
    print("\nratios: " + ", ".join(f"{k} {v}x" for k, v in ratios.items()))

    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"read_path-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "mongo": "external" if args.mongo_url else "secantusdb",
                "parameters": vars(args) | {"mongo_url": None},
                "results": results,
                "ratios": ratios,
            },
            indent=2,
        )
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
