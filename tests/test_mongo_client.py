"""The app's MongoDB client carries what a replica set's failover must not lose (app/data/mongo.py):
majority write concern, retryable writes and reads from the primary, whatever MONGO_URL says;
and it writes and reads with them on the real server (the stand-in, or a mongod given by URL)."""

from __future__ import annotations

import pytest
from pymongo import ReadPreference
from pymongo.write_concern import WriteConcern

from app.core.config import get_settings
from app.data import mongo


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
    assert client.write_concern == WriteConcern(w="majority")
    assert client.read_preference == ReadPreference.PRIMARY
    assert client.options.retry_writes is True
    items = client[get_settings().mongo_db]["client_options_probe"]
    name = unique("majority")
    items.insert_one({"name": name})  # acknowledged by the server with w: majority
    assert items.find_one({"name": name}, {"_id": 0}) == {"name": name}
    items.delete_many({"name": name})
