"""The shipped Redis memory policy: under memory pressure cache entries are evicted, task
results are kept until their TTL."""

from __future__ import annotations

import secrets

import pytest

from devstack.servers import RedisServer


@pytest.fixture
def small_redis(tmp_path):
    server = RedisServer(tmp_path, maxmemory="4mb").start()
    yield server
    server.stop()


def test_cache_entries_are_evicted_before_task_results(small_redis):
    client = small_redis.client()
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-ttl"
    results = [f"celery-task-meta-{i}" for i in range(300)]
    for key in results:
        client.set(key, secrets.token_hex(256), ex=3600)
    client.set("redbeat:cleanup-daily", "schedule")  # no TTL: never evicted

    written = 0
    while written < 20_000 and client.info("stats")["evicted_keys"] < 2_000:
        pipe = client.pipeline()
        for _ in range(100):
            pipe.set(f"cache:item:{written:06d}", secrets.token_hex(256), ex=60)
            written += 1
        pipe.execute()

    evicted = client.info("stats")["evicted_keys"]
    assert evicted >= 2_000, f"only {evicted} evictions after {written} cache writes"
    assert sum(client.exists(key) for key in results) == len(results)
    assert client.exists("redbeat:cleanup-daily")
