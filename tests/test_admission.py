"""Admission control (app/api/admission.py): a process past its capacity answers 503 with
Retry-After at once, stores nothing for what it shed, keeps answering health checks, and takes
requests again as soon as it has room. Real gunicorn servers, overloaded the two ways the
measures see: requests held in flight, and a process starved of CPU (SIGSTOP, as a host's
scheduler would starve it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from devstack.servers import ApiServer


def worker_pid(server: ApiServer) -> int:
    """The one gunicorn worker of a server started with workers=1."""
    master = server.proc.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.fixture
def small_api(stack, tmp_path) -> Iterator[ApiServer]:
    env = {**stack.env, "ADMISSION_MAX_IN_FLIGHT": "2", "ADMISSION_MAX_LAG_MS": "50"}
    server = ApiServer(tmp_path / "api", env, workers=1).start()
    yield server
    server.stop()


def held_create(server: ApiServer, api_key: str, name: str) -> tuple[socket.socket, bytes]:
    """A create whose headers are sent and whose body is held back: a request in flight."""
    body = json.dumps({"name": name, "price": 1.0}).encode()
    head = (
        f"POST /api/items HTTP/1.1\r\nHost: api\r\nX-API-Key: {api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    connection.sendall(head)
    return connection, body


def test_requests_past_the_in_flight_ceiling_are_shed_at_once_and_nothing_is_stored(small_api, stack, mongo, unique):
    held = [held_create(small_api, stack.api_key, unique("held")) for _ in range(2)]
    shed_name = unique("shed")
    try:
        with httpx.Client(base_url=small_api.url, headers={"X-API-Key": stack.api_key}, timeout=10) as client:
            time.sleep(0.5)  # both held requests are inside the app
            started = time.perf_counter()
            read = client.get("/api/items")
            elapsed = time.perf_counter() - started
            create = client.post("/api/items", json={"name": shed_name, "price": 2.0})
            for shed in (read, create):
                assert shed.status_code == 503, shed.text
                assert shed.headers["retry-after"] == "1"
                assert shed.json()["reason"] == "in_flight" and "over capacity" in shed.json()["detail"]
            # Overloaded is not down: the probes and the metrics still answer.
            assert client.get("/health").status_code == 200
            assert client.get("/health/ready").status_code == 200
            assert 'http_requests_shed_total{reason="in_flight"} 2.0' in client.get("/metrics").text
            # The held requests finish as if nothing happened; then the process takes requests again.
            for connection, body in held:
                connection.sendall(body)
                assert connection.recv(4096).startswith(b"HTTP/1.1 201"), "a held create failed"
            assert client.get("/api/items").status_code == 200
    finally:
        for connection, _ in held:
            connection.close()
    assert mongo.items.count_documents({"name": shed_name}) == 0
    print(f"\nshed read answered in {elapsed * 1000:.1f} ms")
    assert elapsed < 1, "a shed request waited"


def test_a_process_starved_of_cpu_sheds_then_recovers(small_api, stack):
    """SIGSTOP for 0.4 s, run for 0.03 s, for 3 s: the event loop runs late, as on a host whose
    CPUs are all taken. Requests that meet the lag are shed; none fails any other way."""
    pid = worker_pid(small_api)
    statuses: Counter[str] = Counter()
    stop = threading.Event()

    def starve() -> None:
        deadline = time.monotonic() + 3
        try:
            while time.monotonic() < deadline:
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.4)
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.03)
        finally:
            os.kill(pid, signal.SIGCONT)
            stop.set()

    starver = threading.Thread(target=starve)
    with httpx.Client(base_url=small_api.url, timeout=10) as client:
        assert client.get("/api/items").status_code == 200  # the lag probe runs from the first request
        starver.start()
        for _ in range(5000):
            if stop.is_set():
                break
            response = client.get("/api/items")
            reason = response.json().get("reason", "") if response.status_code == 503 else ""
            statuses[f"{response.status_code} {reason}".strip()] += 1
        starver.join()
        assert set(statuses) <= {"200", "503 event_loop_lag"}, statuses
        assert statuses["503 event_loop_lag"] > 0, statuses
        # Running freely again, the smoothed lag falls under the bound within about half a second.
        time.sleep(1.5)
        assert [client.get("/api/items").status_code for _ in range(20)] == [200] * 20
        assert client.get("/health").status_code == 200
    print(f"\nwhile starved: {dict(statuses)}")


def test_one_stall_sheds_nothing_and_the_requests_that_waited_through_it_are_served(small_api, stack):
    """One SIGSTOP of 0.1 s (a neighbour took the CPU for a moment, a long garbage collection),
    with requests arriving during it: they find the probe overdue when the process runs again,
    but the stall is over, and they are answered. Only lag that lasts sheds."""
    pid = worker_pid(small_api)
    with httpx.Client(base_url=small_api.url, timeout=10) as client:
        assert client.get("/api/items").status_code == 200  # the lag probe runs from the first request
        time.sleep(0.5)  # and has measured a quiet loop
        with ThreadPoolExecutor(2) as pool:  # the fixture's in-flight ceiling is 2
            os.kill(pid, signal.SIGSTOP)
            try:
                waiting = [pool.submit(client.get, "/api/items") for _ in range(2)]
                time.sleep(0.1)
            finally:
                os.kill(pid, signal.SIGCONT)
            statuses = Counter(f.result().status_code for f in waiting)
    assert statuses == {200: 2}, statuses
