"""The API's own maintenance loses no request: workers recycled at max_requests, and a replica
stopped, while clients keep their connections alive and send writes without Idempotency-Key."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from helpers import wait_for

from devstack.servers import ApiServer


class KeepAliveLoad:
    """Clients that reuse their connections, sending POSTs and GETs until stopped."""

    def __init__(self, url: str, api_key: str, clients: int = 3) -> None:
        self.url, self.api_key = url, api_key
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self.failed_creates: list[str] = []  # names sent in POSTs that got no answer
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(clients)]

    def _run(self, client_number: int) -> None:
        headers = {"X-API-Key": self.api_key}
        with httpx.Client(base_url=self.url, headers=headers, timeout=15) as client:
            for n in range(100_000):
                if self._stop.is_set():
                    return
                try:
                    if n % 2:
                        response = client.post(
                            "/api/items", json={"name": f"graceful-{client_number}-{n}-{time.time_ns()}"}
                        )
                    else:
                        response = client.get("/api/items", params={"limit": 1})
                    self.outcomes[str(response.status_code)] += 1
                except httpx.HTTPError as exc:
                    self.outcomes["error"] += 1
                    self.errors.append(repr(exc))

    def __enter__(self) -> KeepAliveLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.fixture
def recycling_api(stack, tmp_path) -> Iterator[ApiServer]:
    """A second API server whose workers are recycled every 40 requests."""
    env = {**stack.env, "GUNICORN_MAX_REQUESTS": "40", "GUNICORN_MAX_REQUESTS_JITTER": "0"}
    server = ApiServer(tmp_path / "api-recycling", env, workers=2)
    server.start()
    yield server
    server.stop()


def worker_starts(server: ApiServer) -> int:
    return server.log_path.read_text().count("Booting worker")


def test_recycling_workers_loses_no_request_on_kept_alive_connections(recycling_api, stack):
    with KeepAliveLoad(recycling_api.url, stack.api_key) as load:
        wait_for(lambda: worker_starts(recycling_api) >= 12, timeout=120, interval=0.5, what="10 recycled workers")
    assert load.outcomes["201"] > 50 and load.outcomes["200"] > 50, load.outcomes
    assert set(load.outcomes) == {"200", "201"}, f"{load.outcomes}: {load.errors[:5]}"
    served = sum(load.outcomes.values())
    print(f"\n{served} requests while {worker_starts(recycling_api) - 2} workers were recycled: no failure")


def test_a_stopping_server_finishes_every_request_it_took(recycling_api, stack, mongo):
    # Stopped (SIGTERM, as docker stop does) under load: every request it took is answered. Once
    # it stops accepting, connections are refused, or reset if the kernel had queued them just
    # before (a load balancer sends those elsewhere); none of those requests was processed.
    with KeepAliveLoad(recycling_api.url, stack.api_key) as load:
        time.sleep(1)
        recycling_api.signal(signal.SIGTERM)
        recycling_api.proc.wait(40)
    answered = {k: v for k, v in load.outcomes.items() if k != "error"}
    assert set(answered) <= {"200", "201"} and answered["201"] > 5, load.outcomes
    assert load.errors, "the clients should have seen the server go"
    unexpected = [e for e in load.errors if "Connection refused" not in e and "Connection reset" not in e]
    assert not unexpected, unexpected[:5]
    processed = mongo.items.count_documents({"name": {"$in": load.failed_creates}})
    assert processed == 0, f"{processed} creates were stored but never answered"


def test_a_connection_idle_when_its_worker_begins_to_stop_is_still_answered(recycling_api):
    # What nginx does with its pooled connections: reuse one that was idle a moment ago. uvicorn
    # alone closes idle connections the instant it begins to stop, and a request sent then is
    # lost; the draining worker leaves them to the client and answers with Connection: close.
    host, port = recycling_api.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", "/health")
        first = connection.getresponse()
        first.read()
        assert first.status == 200 and first.getheader("connection") != "close"
        os.kill(recycling_api.proc.pid, signal.SIGHUP)  # the master replaces every worker, gracefully
        wait_for(lambda: "Handling signal: hup" in recycling_api.tail(50), timeout=10, what="the reload")
        time.sleep(1)  # the old worker is stopping by now
        connection.request("GET", "/health")
        second = connection.getresponse()
        second.read()
    finally:
        connection.close()
    assert second.status == 200
    assert second.getheader("connection") == "close"
