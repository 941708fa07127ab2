"""The shipped Redis policy: under memory pressure cache entries are evicted, task results are
kept until their TTL; the app's user may not reconfigure, flush or inspect the server."""

from __future__ import annotations

import secrets

import pytest
import redis

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


@pytest.mark.parametrize(
    "command",
    [
        ("CONFIG", "SET", "maxmemory-policy", "noeviction"),
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("KEYS", "*"),
        ("ACL", "LIST"),
        ("INFO",),
        ("SHUTDOWN", "NOSAVE"),
        ("REPLICAOF", "127.0.0.2", "6379"),
    ],
)
def test_the_apps_user_cannot_reconfigure_flush_or_inspect_redis(stack, command):
    """The internet-facing API's password (REDIS_URL) reads and writes keys, and nothing more."""
    with redis.Redis.from_url(stack.env["REDIS_URL"], socket_timeout=2) as app:
        app.set("acl-probe", "kept", ex=60)
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.execute_command(*command)
        assert app.get("acl-probe") == b"kept"
    with stack.redis.client() as admin:
        assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-ttl"


def test_only_the_users_passwords_open_redis(stack):
    for url in (
        f"redis://127.0.0.1:{stack.redis.port}/0",  # no password: the default user has one
        f"redis://:{stack.redis.password}@127.0.0.1:{stack.redis.port}/0",  # the app's, as the default user
        f"redis://app:{stack.redis.admin_password}@127.0.0.1:{stack.redis.port}/0",  # the operators', as the app
    ):
        with (
            redis.Redis.from_url(url, socket_timeout=2) as client,
            pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)),
        ):
            client.ping()
