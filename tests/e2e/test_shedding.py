"""Overload through the front door: the API replicas starved of CPU (docker pause for 0.4 s, run
for 0.05 s, as a host whose CPUs are all taken would starve them) shed reads with a JSON 503
and Retry-After, which nginx passes on without trying another replica, while the health checks
still answer; once they run freely, every request is served again. Shedding is not an outage."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter

from helpers import wait_for


def test_starved_replicas_shed_through_nginx_and_recover(compose_stack):
    replicas = compose_stack.containers("api")
    with compose_stack.writer() as client:
        item = client.post("/api/items", json={"name": "shedding", "price": 1.0}).json()["id"]
        for _ in range(20):  # every replica's lag probe runs from its first request
            assert client.get(f"/api/items/{item}").status_code == 200
        done = threading.Event()

        def starve() -> None:
            deadline = time.monotonic() + 4
            try:
                while time.monotonic() < deadline:
                    subprocess.run(["docker", "pause", *replicas], check=True, capture_output=True)
                    time.sleep(0.4)
                    subprocess.run(["docker", "unpause", *replicas], check=True, capture_output=True)
                    time.sleep(0.05)
            finally:
                subprocess.run(["docker", "unpause", *replicas], capture_output=True)
                done.set()

        statuses: Counter[str] = Counter()
        retry_after = set()
        starver = threading.Thread(target=starve)
        starver.start()
        for _ in range(2000):
            if done.is_set():
                break
            response = client.get(f"/api/items/{item}")
            if response.status_code == 503:
                statuses[f"503 {response.json().get('reason')}"] += 1
                retry_after.add(response.headers.get("retry-after"))
            else:
                statuses[str(response.status_code)] += 1
            time.sleep(0.02)  # under nginx's per-address limit (100 a second): shed answers come fast
        starver.join()
        print(f"\nthrough nginx while starved: {dict(statuses)}")
        assert set(statuses) <= {"200", "503 event_loop_lag"}, statuses
        assert statuses["503 event_loop_lag"] > 0, statuses
        assert retry_after == {"1"}, retry_after
        # Running freely again, every replica serves within a second or two.
        wait_for(
            lambda: all(client.get(f"/api/items/{item}").status_code == 200 for _ in range(30)),
            timeout=20,
            interval=0.5,
            what="every read served again",
        )
        assert client.get("/health").status_code == 200
    # The pauses time out the replicas' container health checks: healthy again before the next test.
    compose_stack.wait_healthy()
