"""The read-through item cache in the real Redis."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.data.cache import item_key


def test_second_read_is_a_cache_hit(api, cache_redis, unique):
    item = api.post("/api/items", json={"name": unique(), "price": 3.0}).json()
    assert cache_redis.get(item_key(item["id"])) is None

    first = api.get(f"/api/items/{item['id']}")
    assert first.headers["x-cache"] == "MISS"
    assert cache_redis.exists(item_key(item["id"]))
    assert 0 < cache_redis.ttl(item_key(item["id"])) <= 60

    second = api.get(f"/api/items/{item['id']}")
    assert second.headers["x-cache"] == "HIT"
    assert second.json() == first.json()


def test_update_invalidates_the_entry(api, cache_redis, unique):
    item = api.post("/api/items", json={"name": unique(), "price": 3.0}).json()
    api.get(f"/api/items/{item['id']}")
    assert api.get(f"/api/items/{item['id']}").headers["x-cache"] == "HIT"

    api.patch(f"/api/items/{item['id']}", json={"price": 4.0})
    assert not cache_redis.exists(item_key(item["id"]))
    after = api.get(f"/api/items/{item['id']}")
    assert after.headers["x-cache"] == "MISS"
    assert after.json()["price"] == 4.0
    assert api.get(f"/api/items/{item['id']}").json()["price"] == 4.0


def test_delete_invalidates_the_entry(api, cache_redis, unique):
    item = api.post("/api/items", json={"name": unique()}).json()
    api.get(f"/api/items/{item['id']}")
    assert cache_redis.exists(item_key(item["id"]))
    api.delete(f"/api/items/{item['id']}")
    assert not cache_redis.exists(item_key(item["id"]))
    assert api.get(f"/api/items/{item['id']}").status_code == 404


def test_missing_items_are_not_cached(api, cache_redis):
    missing = "0" * 24
    assert api.get(f"/api/items/{missing}").status_code == 404
    assert not cache_redis.exists(item_key(missing))


@pytest.mark.parametrize("write", ["patch", "delete"])
def test_a_read_that_missed_never_fills_over_a_write_that_came_after_it(api, cache_redis, unique, monkeypatch, write):
    """The race, made to happen: a read has taken the old document from MongoDB, then a write
    lands and invalidates, then the read fills. The write must win."""
    from app.data import cache

    monkeypatch.setattr(cache, "_async_client", None)  # one made in this test's event loop
    item = api.post("/api/items", json={"name": unique(), "price": 3.0}).json()
    old_body = json.dumps(item).encode()

    async def load_then_write() -> bytes:
        path = f"/api/items/{item['id']}"
        answer = api.patch(path, json={"price": 4.0}) if write == "patch" else api.delete(path)
        assert answer.status_code in (200, 204), answer.text
        return old_body  # what MongoDB gave the read before the write

    assert asyncio.run(cache.read_through(item["id"], load_then_write)) == (old_body, "MISS")
    assert cache_redis.get(item_key(item["id"])) is None
    after = api.get(f"/api/items/{item['id']}")
    if write == "patch":
        assert after.json()["price"] == 4.0 and after.headers["x-cache"] == "MISS"
        assert api.get(f"/api/items/{item['id']}").headers["x-cache"] == "HIT"  # and the cache still fills
    else:
        assert after.status_code == 404


def test_no_read_begun_after_a_write_was_answered_serves_what_it_replaced(api, stack, unique):
    """Readers on one item while it is changed 60 times and then deleted."""
    item = api.post("/api/items", json={"name": unique(), "quantity": 0}).json()
    path = f"/api/items/{item['id']}"
    deleted = 1_000_000  # newer than every quantity
    answered: list[tuple[float, int]] = [(0.0, 0)]  # (when a write was answered, the quantity it set)
    reads: list[tuple[float, int]] = []  # (when a read began, the quantity it saw)
    done = threading.Event()

    def reader() -> None:
        with httpx.Client(base_url=stack.api.url, timeout=10) as client:
            while not done.is_set() and len(reads) < 20_000:
                began = time.monotonic()
                answer = client.get(path)
                reads.append((began, answer.json()["quantity"] if answer.status_code == 200 else deleted))

    with ThreadPoolExecutor(3) as pool:
        readers = [pool.submit(reader) for _ in range(3)]
        try:
            for quantity in range(1, 61):
                assert api.patch(path, json={"quantity": quantity}).status_code == 200
                answered.append((time.monotonic(), quantity))
            assert api.delete(path).status_code == 204
            answered.append((time.monotonic(), deleted))
            time.sleep(0.3)
        finally:
            done.set()
        for each in readers:
            each.result()
    stale = []
    for began, seen in reads:
        latest = max(quantity for at, quantity in answered if at < began)
        if seen < latest:
            stale.append((round(began, 3), seen, latest))
    assert len(reads) > 200 and sum(seen == deleted for _, seen in reads) > 10, len(reads)
    assert not stale, f"{len(stale)} of {len(reads)} reads served an older item: {stale[:5]}"
