"""A steady load through nginx for the chaos suite: reads, creates and submits, each create and
submit with an Idempotency-Key that the client keeps until it has an answer, as a careful client
does. Every answer is recorded; what was acknowledged is checked afterwards.

Bounded: at most `duration` seconds and a fixed number of requests per client; one client
address, so well under nginx's 100 requests per second per address.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
from helpers import until_final

# A create or submit that meets a connection error, a 409 (its first attempt still running) or
# a 503 is sent again with the same key, for up to this long: past the longest outage rehearsed
# (MongoDB down for 60 s, and the time compose takes to stop and start it).
RETRY_FOR_SECONDS = 120
# What a 503 the API shed is recorded as (app/api/admission.py: a `reason`, no `dependency`).
# Nothing was done and it says when to come back: an answer to an overloaded machine (a build
# beside the stack takes both CPUs), not an outage.
SHED = "shed"


@dataclass
class Answer:
    at: float
    kind: str
    status: int | None  # None: no HTTP answer (connection refused, reset, timeout)
    took: float
    dependency: str | None = None
    error: str | None = None
    path: str = ""


@dataclass
class Load:
    url: str
    api_key: str
    item_ids: list[str]  # items to read
    pause: float = 0.12  # per client, between requests: ~8 per second each
    heavy: int = 0  # the first submits run long, for a worker to die in the middle of one
    prefix: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:8]}-")  # of this load's item names
    answers: list[Answer] = field(default_factory=list)
    created: dict[str, dict] = field(default_factory=dict)  # key -> acknowledged item
    attempted: dict[str, str] = field(default_factory=dict)  # key -> item name sent
    submitted: dict[str, str] = field(default_factory=dict)  # key -> acknowledged task id
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, readers: int = 3, creators: int = 2, submitters: int = 1) -> Load:
        roles = ["read"] * readers + ["create"] * creators + ["submit"] * submitters
        self._threads = [threading.Thread(target=self._client, args=(role,), daemon=True) for role in roles]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(RETRY_FOR_SECONDS + 30)

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def _send(self, client: httpx.Client, kind: str, method: str, path: str, **kwargs) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self._record(Answer(started, kind, None, time.monotonic() - started, error=repr(exc), path=path))
            return None
        dependency = None
        if response.status_code == 503 and response.headers.get("content-type", "").startswith("application/json"):
            answer = response.json()
            dependency = answer.get("dependency") or (SHED if "reason" in answer else None)
        self._record(Answer(started, kind, response.status_code, time.monotonic() - started, dependency, path=path))
        return response

    def _keyed(self, client: httpx.Client, kind: str, path: str, body: dict, key: str) -> httpx.Response | None:
        """Send until there is a final answer for the key (or the retry time is up)."""
        headers = {"Idempotency-Key": key}
        return until_final(
            lambda: self._send(client, kind, "POST", path, json=body, headers=headers), RETRY_FOR_SECONDS
        )

    def _client(self, role: str) -> None:
        headers = {"X-API-Key": self.api_key}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            for n in itertools.count():
                if self._stop.is_set() or n > 100_000:
                    return
                if role == "read":
                    path = f"/api/items/{random.choice(self.item_ids)}" if n % 4 else "/health"
                    self._send(client, "read", "GET", path)
                elif role == "create":
                    key, name = f"chaos-{uuid.uuid4()}", f"{self.prefix}{uuid.uuid4().hex}"
                    with self._lock:
                        self.attempted[key] = name
                    response = self._keyed(client, "create", "/api/items", {"name": name, "price": 1.0}, key)
                    if response is not None and response.status_code == 201:
                        with self._lock:
                            self.created[key] = response.json()
                else:
                    key = f"chaos-{uuid.uuid4()}"
                    iterations = 200 if len(self.submitted) < self.heavy else 3
                    body = {"data": {"chaos": key}, "iterations": iterations}
                    response = self._keyed(client, "submit", "/api/async/process", body, key)
                    if response is not None and response.status_code == 202:
                        with self._lock:
                            self.submitted[key] = response.json()["task_id"]
                time.sleep(self.pause)

    # --- what happened ---------------------------------------------------------------------

    def tally(self, allowed_503: set[str]) -> dict:
        """Counts of answers; `unexpected` are 5xx other than a 503 naming a dependency that
        was down on purpose or a shed request, and requests that got no answer at all."""
        statuses = Counter(a.status for a in self.answers)
        documented = [a for a in self.answers if a.status == 503 and a.dependency in {*allowed_503, SHED}]
        unexpected = [a for a in self.answers if a.status is None or (a.status >= 500 and a not in documented)]
        return {
            "requests": len(self.answers),
            "statuses": dict(statuses),
            "documented_503": len(documented),
            "unexpected": unexpected,
            "in_progress_409": sum(1 for a in self.answers if a.kind != "read" and a.status == 409),
        }

    def recovery(self, fault_at: float, fault_done: float) -> float:
        """Seconds from the end of the fault until the last answer that was not a success."""
        last_bad = max(
            (a.at + a.took for a in self.answers if a.at >= fault_at and (a.status is None or a.status >= 409)),
            default=None,
        )
        return max(0.0, last_bad - fault_done) if last_bad is not None else 0.0

    def errors_since(self, since: float) -> tuple[int, float]:
        """The seconds after `since` in which an answer was an error (5xx, or none), and how long
        after `since` the last one ended (what a user saw, where `recovery` counts retries too)."""
        bad = [a for a in self.answers if a.at >= since and (a.status is None or a.status >= 500)]
        if not bad:
            return 0, 0.0
        return len({int(a.at - since) for a in bad}), max(a.at + a.took for a in bad) - since


def polite_get(client: httpx.Client, path: str, **kwargs) -> httpx.Response:
    """A GET that keeps under nginx's limit per client address (waiting out a 429)."""
    for _ in range(20):
        time.sleep(0.015)
        response = client.get(path, **kwargs)
        if response.status_code != 429:
            return response
        time.sleep(float(response.headers.get("retry-after", 1)))
    return response


def final_states(client: httpx.Client, task_ids: list[str], timeout: float = 300) -> dict[str, str]:
    """Each task's state once every one has finished (or what it is when the time is up)."""
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task_id in task_ids:
            if states.get(task_id) not in ("SUCCESS", "FAILURE", "REVOKED"):
                states[task_id] = polite_get(client, f"/api/tasks/{task_id}").json()["state"]
        if all(state in ("SUCCESS", "FAILURE", "REVOKED") for state in states.values()):
            break
        time.sleep(2)
    return states
