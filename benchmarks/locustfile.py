"""The seed's headline workload for locust: users with a 1 s think time, through nginx.

Reads 70 %, creates 15 %, submits 10 %, status polls 5 % (of the user's own tasks).
BENCH_API_KEY and BENCH_ITEM_IDS (comma-separated) come from benchmarks/bench.py;
BENCH_PREFIX puts every path under a prefix (/before for the seed's "before" app);
BENCH_ITERATIONS sizes a submit's work (1 for the light mix, about 150 ms of CPU for the
heavy scenario).

A request the API shed (503 with Retry-After and a `reason`: app/api/admission.py) is
recorded under the name "shed", so the other names hold the requests that were answered.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import FastHttpUser, constant, task

API_KEY = os.environ.get("BENCH_API_KEY", "")
ITEM_IDS = [i for i in os.environ.get("BENCH_ITEM_IDS", "").split(",") if i]
PREFIX = os.environ.get("BENCH_PREFIX", "")
ITERATIONS = int(os.environ.get("BENCH_ITERATIONS", "1"))
HEADERS = {"X-API-Key": API_KEY}
SHED = "shed"


class ApiUser(FastHttpUser):
    wait_time = constant(1)

    def on_start(self) -> None:
        self.tasks_submitted: list[str] = []

    def call(self, method: str, path: str, name: str, body: dict | None = None) -> None:
        with self.client.request(
            method, f"{PREFIX}{path}", json=body, headers=HEADERS, name=name, catch_response=True
        ) as response:
            if response.status_code == 503 and "retry-after" in response.headers and b'"reason"' in response.content:
                response.request_meta["name"] = SHED
                response.failure(f"{name} shed")
            elif response.status_code == 202:
                self.tasks_submitted.append(response.json()["task_id"])

    @task(70)
    def read(self) -> None:
        self.call("GET", f"/api/items/{random.choice(ITEM_IDS)}", "read")

    @task(15)
    def create(self) -> None:
        self.call("POST", "/api/items", "create", {"name": f"locust-{uuid.uuid4().hex}", "price": 1.0})

    @task(10)
    def submit(self) -> None:
        self.call("POST", "/api/async/process", "submit", {"data": "locust", "iterations": ITERATIONS})

    @task(5)
    def poll(self) -> None:
        if not self.tasks_submitted:
            return
        self.call("GET", f"/api/tasks/{random.choice(self.tasks_submitted[-20:])}", "poll")
