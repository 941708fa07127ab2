"""Raw anchors, run inside the stack (bench-probe, on the backend network, with the app's
settings): MongoDB find_one and Celery publish without the API in between.

    python -m benchmarks.anchors.probe find_one --threads 32 --seconds 10 --ids ID,ID,...
    python -m benchmarks.anchors.probe publish --threads 32 --seconds 10
    python -m benchmarks.anchors.probe tasks --threads 8 --seconds 10
    python -m benchmarks.anchors.probe backlog --seconds 900

Prints one JSON object: operations per second and latency percentiles; for `backlog`, the
task queues' depth once a second until a line on stdin says the load ended and the queues
are empty again (or `--seconds` passed): its peak and how long it took to drain.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
from collections.abc import Callable

from bson import ObjectId


def measure(operation: Callable[[random.Random], None], threads: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def run() -> None:
        rng, local, failed = random.Random(), [], []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                operation(rng)
            except Exception as error:  # noqa: BLE001 - counted and reported, like wrk's errors
                failed.append(f"{type(error).__name__}: {str(error)[:200]}")
                continue
            local.append(time.perf_counter() - started)
        with lock:
            latencies.extend(local)
            errors.extend(failed)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return {
        "per_second": round(len(latencies) / elapsed, 1),
        "operations": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "threads": threads,
        **percentiles(latencies),
    }


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50, p90 and p99 in milliseconds of latencies in seconds (zeros when there are none)."""
    if len(latencies) > 1:
        quantiles = statistics.quantiles(latencies, n=100)
    else:
        quantiles = (latencies or [0.0]) * 99
    return {f"p{p}_ms": round(quantiles[p - 1] * 1000, 2) for p in (50, 90, 99)}


def find_one(threads: int, seconds: float, ids: list[str]) -> dict:
    from app.data.mongo import collection

    items = collection("items")
    keys = [ObjectId(i) for i in ids]
    items.find_one({"_id": keys[0]})
    return measure(lambda rng: items.find_one({"_id": rng.choice(keys)}), threads, seconds)


def publish(threads: int, seconds: float) -> dict:
    """A message to the default queue through the app's producer pool, with the broker's
    confirm, as a submit publishes; Celery's built-in `accumulate`, which the workers run
    and drop at once."""
    from app.worker.celery_app import celery_app

    def send(_: random.Random) -> None:
        celery_app.send_task("celery.accumulate", args=(1,), queue="default", ignore_result=True)

    send(random.Random())  # connect first
    return measure(send, threads, seconds)


def tasks(threads: int, seconds: float) -> dict:
    """End-to-end tasks on the stack's broker and workers: `process_data` with one iteration,
    recorded and published as a submit does it (no HTTP), for `seconds`; then every task is
    waited for. Its rate is tasks finished per second, its latency submitted to finished."""
    import uuid

    from app.api.publishing import publish
    from app.data import task_records
    from app.worker.tasks import process_data

    issued: list[str] = []
    lock = threading.Lock()

    def send(_: random.Random) -> None:
        task_id = f"bench-{uuid.uuid4()}"
        task_records.issue(task_id, "process", "default")
        publish(process_data, {"data": "bench", "iterations": 1}, task_id)
        with lock:
            issued.append(task_id)

    sent = measure(send, threads, seconds)
    deadline = time.monotonic() + 300
    records: list[dict] = []
    while time.monotonic() < deadline:
        records = [task_records.get(task_id) or {} for task_id in issued]
        if all(record.get("finished_at") for record in records):
            break
        time.sleep(1)
    done = [record for record in records if record.get("state") == "SUCCESS"]
    if not done:
        return {"per_second": 0.0, "operations": 0, "threads": threads, **percentiles([])}
    first = min(record["submitted_at"] for record in done)
    last = max(record["finished_at"] for record in done)
    latencies = [(record["finished_at"] - record["submitted_at"]).total_seconds() for record in done]
    return {
        "per_second": round(len(done) / max((last - first).total_seconds(), 1e-3), 1),
        "operations": len(done),
        "submitted": len(issued),
        "submitted_per_second": sent["per_second"],
        "threads": threads,
        **percentiles(latencies),
    }


def backlog(seconds: float) -> dict:
    """Messages waiting in the app's task queues (ready, not yet taken by a worker), sampled
    once a second by a passive declare, which costs the broker almost nothing."""
    import sys

    from app.worker.celery_app import celery_app

    ended = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), ended.set()), daemon=True).start()
    names = [queue.name for queue in celery_app.conf.task_queues]
    samples: list[tuple[float, int]] = []
    load_seconds = None
    started = time.monotonic()
    with celery_app.connection_for_write() as connection:
        channel = connection.default_channel
        while (at := time.monotonic() - started) < seconds:
            depth = sum(channel.queue_declare(queue=name, passive=True).message_count for name in names)
            samples.append((round(at, 1), depth))
            if ended.is_set():
                load_seconds = load_seconds if load_seconds is not None else at
                if depth == 0:
                    break
            time.sleep(1)
    peak_at, peak = max(samples, key=lambda sample: sample[1])
    return {
        "peak": peak,
        "peak_at_seconds": peak_at,
        "load_seconds": load_seconds,
        # From the load's end until the queues were empty (None: not within --seconds).
        "drain_seconds": round(at - load_seconds, 1) if load_seconds is not None and samples[-1][1] == 0 else None,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["find_one", "publish", "tasks", "backlog"])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--ids", default="")
    args = parser.parse_args()
    if args.what == "find_one":
        result = find_one(args.threads, args.seconds, args.ids.split(","))
    elif args.what == "backlog":
        result = backlog(args.seconds)
    elif args.what == "publish":
        result = publish(args.threads, args.seconds)
    else:
        result = tasks(args.threads, args.seconds)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
