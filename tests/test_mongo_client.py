"""The app's MongoDB client carries what a replica set's failover must not lose (app/data/mongo.py):
majority and journaled write concern, retryable writes and reads from the primary, whatever
MONGO_URL says; and it writes and reads with them on the real server (the stand-in, or a mongod
given by URL), and what it was told is written survives the server's crash."""

from __future__ import annotations

import time

import pytest
from pymongo import ReadPreference
from pymongo.errors import PyMongoError
from pymongo.write_concern import WriteConcern

from app.core.config import get_settings
from app.data import mongo
from devstack.servers import MongoServer

# Far under pymongo's default wait for a server (30 s), far over the API's MONGO_TIMEOUT_MS.
LETS_GO_WITHIN_SECONDS = 8


@pytest.fixture
def client_of(stack, monkeypatch):
    def make(url: str):
        for name, value in stack.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("MONGO_URL", url)
        get_settings.cache_clear()
        mongo.close_client()
        return mongo.get_client()

    yield make
    mongo.close_client()
    get_settings.cache_clear()


def test_majority_writes_retried_and_primary_reads_whatever_the_url_says(stack, client_of, unique):
    separator = "&" if "?" in stack.mongo_url else "?"
    client = client_of(f"{stack.mongo_url}{separator}w=1&retryWrites=false&readPreference=secondaryPreferred")
    assert client.write_concern == WriteConcern(w="majority", j=True)
    assert client.read_preference == ReadPreference.PRIMARY
    assert client.options.retry_writes is True
    items = client[get_settings().mongo_db]["client_options_probe"]
    name = unique("majority")
    items.insert_one({"name": name})  # acknowledged by the server with w: majority
    assert items.find_one({"name": name}, {"_id": 0}) == {"name": name}
    items.delete_many({"name": name})


def test_what_a_single_server_acknowledged_survives_its_crash(client_of, tmp_path):
    """A single server (compose, the lab's) SIGKILLed right after acknowledging writes: every one
    is there when it starts again. Acknowledged from the journal's memory buffer, the last ~50 ms
    of them were lost (22 to 50 of 300 here), as an acknowledged create was when the lab's host
    died."""
    server = MongoServer(tmp_path / "mongo").start()
    try:
        items = client_of(server.url())[server.database]["crash_probe"]
        acknowledged = [items.insert_one({"n": n}).inserted_id for n in range(300)]
        server.kill()
        mongo.close_client()
        server.start()
        kept = {doc["_id"] for doc in client_of(server.url())[server.database]["crash_probe"].find({}, {"_id": 1})}
        lost = [n for n, ident in enumerate(acknowledged) if ident not in kept]
        assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged writes lost: {lost[:10]}"
    finally:
        server.stop()


def test_a_process_lets_go_of_a_database_that_is_down_within_its_timeout(stack, client_of, tmp_path):
    """Closing the client ends its sessions on the server, which waited 30 s for a server that
    is down: an API worker recycled during a MongoDB outage took that long to exit, and its
    replica accepted no connection meanwhile. Now the wait is the API's own timeout."""
    server = MongoServer(tmp_path / "mongo", database=stack.mongo_db).start()
    try:
        probe = client_of(server.url())[stack.mongo_db]["close_probe"]
        probe.insert_one({"session": "pooled"})  # the client now holds a session to end
        assert probe.find_one({}, {"_id": 0}) == {"session": "pooled"}
    finally:
        server.stop()
    with pytest.raises(PyMongoError):
        probe.find_one({})
    started = time.monotonic()
    mongo.close_client()
    took = time.monotonic() - started
    assert took < LETS_GO_WITHIN_SECONDS, f"closing the client took {took:.1f} s with MongoDB down"
