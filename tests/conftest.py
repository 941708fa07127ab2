"""Real servers for the whole test session: Redis, RabbitMQ, a MongoDB-protocol server
(SecantusDB, or the mongod at TEST_MONGO_URL), the API under gunicorn, two Celery workers
and beat. Ports are free ones, passwords are generated, nothing is mocked.

The stack's configuration is put into this process's environment before any test module
is imported, so `app.*` imported by tests (Celery control, settings) talks to the same servers.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pymongo
import pytest

from devstack.servers import free_port
from devstack.stack import Stack

# The time of each tier, printed at the end of the run (tests/tier_times.py).
pytest_plugins = ["tier_times"]

# Fast retries and a beat that fires every minute, so the suite sees them happen.
# The call-out tests' HTTP server (tests/test_tasks.py) listens here, the one port allowed.
CALLOUT_PORT = free_port()
TEST_SETTINGS = {
    "CALLOUT_ALLOWED_HOSTS": f"127.0.0.1:{CALLOUT_PORT}",
    "CALLOUT_TIMEOUT_SECONDS": "5",
    "TASK_RETRY_BACKOFF_SECONDS": "1",
    "TASK_RETRY_BACKOFF_MAX_SECONDS": "2",
    # Exact delays: with full jitter a delay can be 0 s and the RETRY state too brief to see.
    "TASK_RETRY_JITTER": "false",
    "TASK_SOFT_TIME_LIMIT_SECONDS": "60",
    "TASK_TIME_LIMIT_SECONDS": "90",
    "CACHE_RETRY_AFTER_SECONDS": "1",
    "CLEANUP_CRONTAB": "* * * * *",
    "BEAT_LOCK_TIMEOUT_SECONDS": "20",
    "LOG_LEVEL": "INFO",
    # Small enough to fill in a test, above what the suite ever queues (schemathesis included).
    "TASK_QUEUE_MAX_LENGTH": "300",
    # Workers wait this long for MongoDB before a task's outage retry (30 s by default).
    "MONGO_WORKER_TIMEOUT_MS": "5000",
}

_external_mongo = os.environ.get("TEST_MONGO_URL") or None
_root = Path(tempfile.mkdtemp(prefix="app-tests-"))
STACK = Stack(
    _root,
    mongo_url=_external_mongo,
    # On a shared mongod, a database of our own that is dropped at the end.
    mongo_db=f"test_{secrets.token_hex(4)}" if _external_mongo else "app",
    settings=TEST_SETTINGS,
)
os.environ.update(STACK.env)


@pytest.fixture(scope="session")
def stack(request) -> Iterator[Stack]:
    started = time.monotonic()
    try:
        STACK.start_services()
        STACK.add_worker("worker1")
        STACK.add_worker("worker2")
        STACK.start_app()
    except Exception:
        STACK.stop()
        raise
    print(f"\nstack up in {time.monotonic() - started:.1f}s at {_root}")
    yield STACK
    STACK.stop()
    if request.session.testsfailed == 0:
        shutil.rmtree(_root, ignore_errors=True)  # kept when something failed: the servers' logs are there
    if _external_mongo:
        with pymongo.MongoClient(STACK.mongo_url) as client:
            client.drop_database(STACK.mongo_db)


@pytest.hookimpl(trylast=True)  # after pytest's own teardown of the item's fixtures
def pytest_runtest_teardown(item, nextitem) -> None:
    # The servers above serve the tests of this directory only. Once the last of those is done
    # they are stopped, not left to idle (a Celery beat, workers and RabbitMQ still use some CPU)
    # through the lab and the e2e tests after them. The fixture's own teardown stops nothing twice.
    # Under xdist (make check) a worker does not know its next test in advance (nextitem is then
    # None) and runs no lab or e2e test after these: its servers stop with the session.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    here = Path(__file__).parent
    if item.path.parent == here and (nextitem is None or nextitem.path.parent != here):
        STACK.stop()


def pytest_collection_modifyitems(items) -> None:
    # Schemathesis names each generated test after its API operation, but under pytest 9 all of
    # them get the function's node id. pytest-xdist (make check) tells tests apart by node id and
    # ran one of the twelve; with the operation as the id's parameters it runs each.
    for item in items:
        label = getattr(item, "operation_label", None)
        if label and not item.nodeid.endswith("]"):
            item._id = item._id.with_params(label)
    shared = [nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1]
    if shared:
        raise pytest.UsageError(f"tests share a node id, and pytest-xdist would run only one of each: {shared}")


@pytest.fixture(scope="session")
def api(stack: Stack) -> Iterator[httpx.Client]:
    """A client that sends the API key."""
    with httpx.Client(base_url=stack.api.url, headers={"X-API-Key": stack.api_key}, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def anonymous(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def mongo(stack: Stack) -> Iterator[pymongo.database.Database]:
    """Direct access to the app's database, to check what the API stored."""
    with pymongo.MongoClient(stack.mongo_url, tz_aware=True) as client:
        yield client[stack.mongo_db]


@pytest.fixture(scope="session")
def cache_redis(stack: Stack):  # noqa: ANN201 - redis.Redis
    return stack.redis.client(0)


@pytest.fixture
def unique() -> Callable[[str], str]:
    return lambda prefix="item": f"{prefix}-{secrets.token_hex(4)}"


class CalloutServer(ThreadingHTTPServer):
    """A real HTTP endpoint for the call-out task: /ok, /flaky/<n>/<key> (n failures, then OK),
    /down (always 503), /reject (400); on the first call only, /drip/<key> answers a byte every
    DRIP_SECONDS and /big/<key> sends a BIG_BODY-byte body (later calls: OK at once). Records every
    call, with when the caller hung up ("ended") and the bytes sent ("sent")."""

    DRIP_SECONDS = 0.4
    BIG_BODY = 256 * 1024 * 1024

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", CALLOUT_PORT), CalloutHandler)
        self.calls: dict[str, list[dict]] = defaultdict(list)
        self.deadline = float(TEST_SETTINGS["CALLOUT_TIMEOUT_SECONDS"])  # the worker's, for the whole call

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class CalloutHandler(BaseHTTPRequestHandler):
    server: CalloutServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("content-length", 0))
        call = {
            "body": json.loads(self.rfile.read(length) or b"null"),
            "headers": dict(self.headers),
            "at": time.monotonic(),
        }
        calls = self.server.calls[self.path]
        calls.append(call)
        parts = self.path.strip("/").split("/")
        if parts[0] == "ok":
            status = 200
        elif parts[0] == "flaky":
            status = 503 if len(calls) <= int(parts[1]) else 200
        elif parts[0] == "reject":
            status = 400
        elif parts[0] in ("drip", "big"):
            if len(calls) == 1:
                return self.answer_slowly(call) if parts[0] == "drip" else self.answer_big(call)
            status = 200
        else:
            status = 503
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def answer_slowly(self, call: dict) -> None:
        """A whole answer, but a byte at a time: no read waits long, the call takes ~15 s."""
        try:
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n":
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(self.server.DRIP_SECONDS)
        except OSError:
            pass
        call["ended"] = time.monotonic()
        self.close_connection = True

    def answer_big(self, call: dict) -> None:
        self.send_response(200)
        self.send_header("content-length", str(self.server.BIG_BODY))
        self.end_headers()
        chunk, call["sent"] = b"x" * 65536, 0
        try:
            while call["sent"] < self.server.BIG_BODY:
                self.wfile.write(chunk)
                call["sent"] += len(chunk)
        except OSError:
            pass
        call["ended"] = time.monotonic()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def callout() -> Iterator[CalloutServer]:
    server = CalloutServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
