"""MongoDB: one pooled client per process, the collections, and their indexes.

pymongo clients must not cross a fork, and both gunicorn and Celery's prefork pool fork
after import; the client is therefore created lazily and re-created when the pid changes.
The API's hottest read (one item) also has PyMongo's async client, so it waits for MongoDB
on the event loop instead of holding a thread of the pool.
"""

from __future__ import annotations

import logging
import os
import threading

import pymongo
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

from app.core.config import get_settings

log = logging.getLogger(__name__)

ITEMS = "items"
TASKS = "tasks"
REPORTS = "reports"
MAINTENANCE = "maintenance_runs"
IDEMPOTENCY_KEYS = "idempotency_keys"

_lock = threading.Lock()
_client: pymongo.MongoClient | None = None
_client_pid: int | None = None
_async_client: pymongo.AsyncMongoClient | None = None
_async_client_pid: int | None = None
_indexes_ready = False

# Set by the Celery worker at start-up: workers allow longer operations than the API.
_role = "api"


def set_role(role: str) -> None:
    global _role
    _role = role


def _client_options(kind: str) -> dict:
    settings = get_settings()
    timeout_ms = settings.mongo_timeout_ms if _role == "api" else settings.mongo_worker_timeout_ms
    return {
        "minPoolSize": settings.mongo_min_pool_size,
        "maxPoolSize": settings.mongo_max_pool_size,
        # timeoutMS bounds every operation end to end (server selection included).
        "timeoutMS": timeout_ms,
        "connectTimeoutMS": min(timeout_ms, 2000),
        # timeoutMS does not bound close(): it ends the client's sessions on the server, and
        # with the server down waited for one for pymongo's default 30 s. An API worker that
        # gunicorn recycled during an outage took that long to exit, and its replacement was
        # only forked then: with both of a replica's workers in that state, nothing accepted
        # its connections and nginx gave up on them (504) after 30 s.
        "serverSelectionTimeoutMS": timeout_ms,
        "appname": f"{settings.app_name}-{_role}{kind}",
        "tz_aware": True,
        # What a replica set's failover must not lose: a write is acknowledged once a majority
        # of members hold it (a new primary has it), a write cut off by the failover is sent
        # again once to the new primary, and reads see only what the primary has. These win
        # over the same options in MONGO_URL.
        "w": "majority",
        # ... and once it is in their journals on disk. A replica set's majority implies it (the
        # default writeConcernMajorityJournalDefault); a single server (compose, the lab) acked a
        # write still in the journal's buffer, and a host that died lost the last ~50 ms of them
        # (the lab's host-loss test: 1 of 81 acknowledged creates).
        "journal": True,
        "retryWrites": True,
        "readPreference": "primary",
    }


def get_client() -> pymongo.MongoClient:
    global _client, _client_pid, _indexes_ready
    pid = os.getpid()
    if _client is not None and _client_pid == pid:
        return _client
    with _lock:
        if _client is None or _client_pid != pid:
            _client = pymongo.MongoClient(get_settings().mongo_url, **_client_options(""))
            _client_pid = pid
            _indexes_ready = False
    return _client


def get_async_client() -> pymongo.AsyncMongoClient:
    """The process's async client; made on first use, in the event loop that uses it."""
    global _async_client, _async_client_pid
    if _async_client is None or _async_client_pid != os.getpid():
        _async_client = pymongo.AsyncMongoClient(get_settings().mongo_url, **_client_options("-async"))
        _async_client_pid = os.getpid()
    return _async_client


def async_collection(name: str) -> AsyncCollection:
    """For reads only: the indexes come from the sync client (ensure_indexes)."""
    return get_async_client()[get_settings().mongo_db][name]


def close_client() -> None:
    global _client, _client_pid
    with _lock:
        if _client is not None and _client_pid == os.getpid():
            _client.close()
        _client = None
        _client_pid = None


async def close_async_client() -> None:
    global _async_client, _async_client_pid
    if _async_client is not None and _async_client_pid == os.getpid():
        await _async_client.close()
    _async_client = None
    _async_client_pid = None


def get_db() -> Database:
    return get_client()[get_settings().mongo_db]


def collection(name: str) -> Collection:
    ensure_indexes()
    return get_db()[name]


# MongoDB's codes for an index that exists with other options (a non-TTL one, here).
INDEX_OPTIONS_CONFLICT = (85, 86)


def _expiring(collection: Collection, field: str) -> None:
    """A TTL index on `field` (documents removed once that date passed), named after the field;
    an index of that name made without TTL (by an earlier release) is turned into one in place."""
    try:
        collection.create_index(field, name=field, expireAfterSeconds=0)
    except OperationFailure as exc:
        if exc.code not in INDEX_OPTIONS_CONFLICT:
            raise
        collection.database.command("collMod", collection.name, index={"name": field, "expireAfterSeconds": 0})
        log.info("index %s.%s now expires documents", collection.name, field)


def ensure_indexes() -> None:
    """Create the indexes once per process; safe to call on every request.

    If MongoDB is down when the process starts, this raises and the next call tries again,
    so the unique constraint on item names is in place before the first write succeeds.
    """
    global _indexes_ready
    if _indexes_ready:
        return
    db = get_db()
    db[ITEMS].create_index("name", unique=True, name="name_unique")
    db[ITEMS].create_index([("created_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)], name="created_desc")
    db[ITEMS].create_index("tags", name="tags")
    db[REPORTS].create_index("created_at", name="created_at")
    # MongoDB removes expired task records and keys by itself, however many there are; the
    # daily cleanup does too (with the tasks' Redis results, and for servers without TTL).
    for name in (TASKS, IDEMPOTENCY_KEYS):
        _expiring(db[name], "expires_at")
    _indexes_ready = True
    log.info("mongodb indexes ensured", extra={"database": db.name})
