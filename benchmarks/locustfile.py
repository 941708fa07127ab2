"""The seed's headline workload for locust: users with a 1 s think time, through nginx.

Reads 70 %, creates 15 %, submits 10 %, status polls 5 % (of the user's own tasks).
BENCH_API_KEY and BENCH_ITEM_IDS (comma-separated) come from benchmarks/bench.py;
BENCH_PREFIX puts every path under a prefix (/before for the seed's "before" app).
"""

from __future__ import annotations

import os
import random
import uuid

from locust import FastHttpUser, constant, task

API_KEY = os.environ.get("BENCH_API_KEY", "")
ITEM_IDS = [i for i in os.environ.get("BENCH_ITEM_IDS", "").split(",") if i]
PREFIX = os.environ.get("BENCH_PREFIX", "")
HEADERS = {"X-API-Key": API_KEY}


class ApiUser(FastHttpUser):
    wait_time = constant(1)

    def on_start(self) -> None:
        self.tasks_submitted: list[str] = []

    @task(70)
    def read(self) -> None:
        self.client.get(f"{PREFIX}/api/items/{random.choice(ITEM_IDS)}", headers=HEADERS, name="read")

    @task(15)
    def create(self) -> None:
        body = {"name": f"locust-{uuid.uuid4().hex}", "price": 1.0}
        self.client.post(f"{PREFIX}/api/items", json=body, headers=HEADERS, name="create")

    @task(10)
    def submit(self) -> None:
        body = {"data": "locust", "iterations": 1}
        with self.client.post(
            f"{PREFIX}/api/async/process", json=body, headers=HEADERS, name="submit", catch_response=True
        ) as response:
            if response.status_code == 202:
                self.tasks_submitted.append(response.json()["task_id"])
                response.success()

    @task(5)
    def poll(self) -> None:
        if not self.tasks_submitted:
            return
        task_id = random.choice(self.tasks_submitted[-20:])
        self.client.get(f"{PREFIX}/api/tasks/{task_id}", headers=HEADERS, name="poll")
