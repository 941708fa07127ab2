"""The read-through item cache in the real Redis."""

from __future__ import annotations

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
