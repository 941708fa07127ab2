"""Redis Sentinel (app/data/redis_servers.py): a primary, a replica and three Sentinels, all real
redis-server processes, with an API, a worker and beat of their own that know only the Sentinels
(their REDIS_URL names no reachable host). The primary is SIGKILLed under a steady load of reads:
no read fails, the cache, the task results and beat's lock move to the new primary by themselves,
and the old primary, started again, rejoins as a replica without an operator."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import wait_for, wait_for_task

from devstack.servers import RedisSentinel, RedisServer, generate_secret
from devstack.stack import Stack

MASTER = "app"


class RedisGroup:
    """The stack's Redis as the first primary, a replica of it, and three Sentinels."""

    def __init__(self, root: Path, primary: RedisServer) -> None:
        self.servers = [
            primary,
            RedisServer(
                root / "replica",
                password=primary.password,
                admin_password=primary.admin_password,
                replica_of=primary.port,
            ),
        ]
        self.password = generate_secret()
        self.sentinels = [RedisSentinel(root / f"sentinel{i}", primary, MASTER, self.password) for i in (1, 2, 3)]

    def start(self) -> None:
        self.servers[1].start()
        for sentinel in self.sentinels:
            sentinel.start()
        # Every Sentinel has found the replica and the two others (they need a quorum of 2).
        wait_for(self._acquainted, timeout=30, interval=0.5, what="the Sentinels knowing the replica and each other")

    def _acquainted(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                master = client.sentinel_master(MASTER)
                if master["num-slaves"] < 1 or master["num-other-sentinels"] < 2:
                    return False
        return True

    def primary(self) -> RedisServer | None:
        """The server every Sentinel calls the primary; None while they disagree (a failover)."""
        ports = {sentinel.primary_port() for sentinel in self.sentinels}
        return next(server for server in self.servers if server.port in ports) if len(ports) == 1 else None

    def role(self, server: RedisServer) -> str:
        with server.client() as client:
            return client.role()[0].decode()

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers[1:]]:
            process.stop()


@pytest.fixture(scope="module")
def sentinel_stack(stack, tmp_path_factory) -> Iterator[tuple[Stack, RedisGroup]]:
    """A stack of its own (its own broker, so that its tasks meet only its worker), on the shared
    MongoDB, whose Redis clients find the primary through the Sentinels alone."""
    root = tmp_path_factory.mktemp("sentinel")
    own = Stack(root, mongo_url=stack.mongo_url, mongo_db=stack.mongo_db, settings={**stack.settings}, api_workers=1)
    group = RedisGroup(root, own.redis)
    password = own.redis.password
    own.configure(
        {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in group.sentinels),
            "REDIS_SENTINEL_MASTER": MASTER,
            "REDIS_SENTINEL_PASSWORD": group.password,
            # The host is Sentinel's to give: a name that resolves nowhere proves nothing uses it.
            "REDIS_URL": f"redis://app:{password}@redis-primary.invalid/0",
            "CELERY_RESULT_BACKEND": f"redis://app:{password}@redis-primary.invalid/1",
            "BEAT_LOCK_TIMEOUT_SECONDS": "6",  # beat renews its lock every 3 s
        }
    )
    try:
        own.start_services()
        group.start()
        own.add_worker("sentinel-worker")
        own.start_app()
        yield own, group
    finally:
        own.stop()
        group.stop()


def cached_read(api: httpx.Client, path: str) -> httpx.Response:
    """A read that the cache answers (the first read fills the entry)."""
    return wait_for(
        lambda: (r := api.get(path)).headers.get("x-cache") == "HIT" and r, timeout=15, what=f"a cache hit on {path}"
    )


def test_the_cache_results_and_beat_follow_the_primary_through_a_failover(sentinel_stack):
    own, group = sentinel_stack
    first = group.primary()
    assert first is own.redis
    headers = {"X-API-Key": own.api_key}
    with httpx.Client(base_url=own.api.url, headers=headers, timeout=10) as api:
        created = api.post("/api/items", json={"name": f"sentinel-{time.time_ns()}", "price": 1.0})
        assert created.status_code == 201, created.text
        path = created.headers["location"]
        cached_read(api, path)
        task = api.post("/api/async/process", json={"data": "before", "iterations": 1}).json()["task_id"]
        assert wait_for_task(api, task)["state"] == "SUCCESS"
        with first.client(1) as results:
            assert results.exists(f"celery-task-meta-{task}")
            assert results.exists("redbeat::lock")

        # A steady load of reads while the primary is killed.
        statuses: Counter[str] = Counter()
        stop = threading.Event()

        def reads() -> None:
            with httpx.Client(base_url=own.api.url, headers=headers, timeout=10) as reader:
                for _ in range(3000):
                    if stop.is_set():
                        return
                    try:
                        statuses[str(reader.get(path).status_code)] += 1
                    except httpx.HTTPError as exc:
                        statuses[type(exc).__name__] += 1
                    time.sleep(0.02)

        reader = threading.Thread(target=reads)
        reader.start()
        try:
            time.sleep(1)
            killed = time.monotonic()
            first.kill()
            second = wait_for(
                lambda: (primary := group.primary()) is not first and primary,
                timeout=30,
                interval=0.2,
                what="a new primary",
            )
            failover = time.monotonic() - killed
            # The cache is used again, on the new primary.
            cached_read(api, path)
            time.sleep(1)
        finally:
            stop.set()
            reader.join(30)
        assert set(statuses) == {"200"}, statuses
        with second.client(0) as cache:
            assert any(key.startswith(b"cache:item:v2:") for key in cache.keys("cache:item:*"))
        # A write invalidates on the new primary: the next read is the new price.
        assert api.patch(path, json={"price": 2.5}).status_code == 200
        assert api.get(path).json()["price"] == 2.5

        # Task results go to the new primary.
        task = api.post("/api/async/process", json={"data": "after", "iterations": 1}).json()["task_id"]
        assert wait_for_task(api, task)["state"] == "SUCCESS"
        with second.client(1) as results:
            assert results.exists(f"celery-task-meta-{task}")
            # Beat renews its lock on the new primary (every 3 s, for 6 s).
            wait_for(
                lambda: 0 < results.pttl("redbeat::lock") and results.pttl("redbeat::lock") > 4000,
                timeout=15,
                interval=0.2,
                what="beat's lock renewed on the new primary",
            )
        assert own.beat.running

        # The old primary, started again, is made a replica of the new one by the Sentinels.
        first.start()
        wait_for(lambda: group.role(first) == "slave", timeout=30, interval=0.5, what="the old primary a replica")
        assert group.primary() is second
    print(f"\nfailover in {failover:.1f}s; reads during it: {dict(statuses)}")
