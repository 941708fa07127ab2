"""Background tasks end to end: real API, RabbitMQ, Celery workers and Redis."""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from itertools import pairwise

import pytest
from helpers import wait_for, wait_for_task


def expected_digest(data, iterations: int, rounds: int = 20_000) -> str:
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).digest()
    for _ in range(iterations):
        digest = hashlib.pbkdf2_hmac("sha256", digest, b"app.tasks.process_data", rounds)
    return digest.hex()


def test_submit_answers_at_once_and_reports_progress_until_success(api):
    data = {"words": ["alpha", "beta"], "n": 1}
    submitted = api.post("/api/async/process", json={"data": data, "iterations": 400})
    assert submitted.status_code == 202, submitted.text
    body = submitted.json()
    assert body["state"] == "PENDING" and body["kind"] == "process"
    assert submitted.headers["location"] == body["status_url"] == f"/api/tasks/{body['task_id']}"
    assert submitted.elapsed.total_seconds() < 1

    seen = []

    def in_progress():
        status = api.get(body["status_url"]).json()
        seen.append(status["state"])
        if status["state"] == "PROGRESS" and 0 < status["progress"]["current"] < status["progress"]["total"]:
            return status
        return None

    progress = wait_for(in_progress, timeout=30, interval=0.05, what="PROGRESS state")
    assert progress["progress"]["total"] == 400
    assert 0 < progress["progress"]["percent"] < 100

    final = wait_for_task(api, body["task_id"])
    assert final["state"] == "SUCCESS", final
    assert final["result"]["sha256"] == expected_digest(data, 400)
    assert final["progress"] == {"current": 400, "total": 400, "percent": 100.0}
    assert final["finished_at"] is not None
    assert final["worker"] in {"worker1@" + socket.gethostname(), "worker2@" + socket.gethostname()}


def test_a_submit_subscribes_to_nothing_in_redis(api, stack):
    """Nothing waits on a result channel: a submit that subscribed paid round trips, and could
    meet a Redis restart after the result store was checked (a 500)."""
    results = stack.redis.client(1)

    def subscribes() -> int:
        return results.info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0)

    before = subscribes()
    task_ids = [api.post("/api/async/process", json={"data": n, "iterations": 1}).json()["task_id"] for n in range(5)]
    assert all(wait_for_task(api, task_id)["state"] == "SUCCESS" for task_id in task_ids)
    assert subscribes() == before


def test_report_reads_mongodb_and_stores_its_document(api, mongo, unique):
    tag = unique("report")
    for price, quantity in ((2.0, 5), (4.0, 1), (10.0, 0)):
        api.post("/api/items", json={"name": unique(), "price": price, "quantity": quantity, "tags": [tag, "common"]})

    task_id = api.post("/api/async/report", json={"tag": tag}).json()["task_id"]
    final = wait_for_task(api, task_id)
    assert final["state"] == "SUCCESS", final
    assert final["result"] == {"report_id": task_id, "items": 3}

    report = mongo.reports.find_one({"_id": task_id})
    assert report["filter"] == {"tag": tag, "name_prefix": None}
    assert report["items"] == 3
    assert report["total_quantity"] == 6
    assert report["inventory_value"] == pytest.approx(2.0 * 5 + 4.0 * 1)
    assert report["min_price"] == 2.0 and report["max_price"] == 10.0
    assert {t["tag"]: t["count"] for t in report["top_tags"]} == {tag: 3, "common": 3}


def notify_and_wait(api, callout, path: str) -> dict:
    """Submit a call-out to the test server's `path`; the task's final status."""
    task_id = api.post("/api/async/notify", json={"url": callout.url + path}).json()["task_id"]
    return wait_for_task(api, task_id)


def first_call_ended(callout, path: str, timeout: float) -> dict:
    """The first call to `path`, once the server has seen the caller hang up."""
    return wait_for(lambda: "ended" in (call := callout.calls[path][0]) and call, timeout=timeout, what="hang-up")


def test_transient_failures_are_retried_until_success(api, callout, unique):
    path = f"/flaky/2/{unique('key')}"
    task_id = api.post("/api/async/notify", json={"url": callout.url + path, "payload": {"n": 1}}).json()["task_id"]

    retrying = wait_for(
        lambda: (s := api.get(f"/api/tasks/{task_id}").json())["state"] == "RETRY" and s,
        timeout=20,
        interval=0.05,
        what="RETRY state",
    )
    assert "503" in retrying["error"]["message"]

    final = wait_for_task(api, task_id)
    assert final["state"] == "SUCCESS", final
    assert final["result"] == {"status_code": 200, "attempts": 3}
    assert final["retries"] == 2
    calls = callout.calls[path]
    assert len(calls) == 3
    assert all(c["body"] == {"n": 1} for c in calls)
    # The same idempotency key on every attempt lets the receiver drop duplicates.
    assert {c["headers"]["Idempotency-Key"] for c in calls} == {task_id}
    assert [c["headers"]["X-Attempt"] for c in calls] == ["1", "2", "3"]
    # Exponential backoff without jitter (the suite's setting): 1 s, then 2 s (the cap).
    gaps = [later["at"] - earlier["at"] for earlier, later in pairwise(calls)]
    assert gaps[0] >= 0.95 and gaps[1] >= 1.95, gaps


def test_a_task_that_always_fails_ends_in_failure_after_three_retries(api, callout, unique):
    path = f"/down/{unique('key')}"
    final = notify_and_wait(api, callout, path)
    assert final["state"] == "FAILURE"
    assert final["error"]["type"] == "TransientCalloutError"
    assert "HTTP 503" in final["error"]["message"]
    assert final["retries"] == 3
    assert len(callout.calls[path]) == 4  # the first attempt and three retries


def test_a_refused_call_fails_at_once(api, callout, unique):
    path = f"/reject/{unique('key')}"
    final = notify_and_wait(api, callout, path)
    assert final["state"] == "FAILURE"
    assert final["error"] == {"type": "PermanentCalloutError", "message": f"HTTP 400 from {callout.url}{path}"}
    assert len(callout.calls[path]) == 1


def test_a_remote_end_that_drips_its_answer_meets_the_deadline_of_the_whole_call(api, callout, unique):
    """Each byte comes well within a read timeout; the whole answer would take ~15 s."""
    path = f"/drip/{unique('key')}"
    final = notify_and_wait(api, callout, path)
    assert final["state"] == "SUCCESS" and final["result"] == {"status_code": 200, "attempts": 2}, final
    first = first_call_ended(callout, path, timeout=5)
    assert first["ended"] - first["at"] < callout.deadline + 2 * callout.DRIP_SECONDS + 0.5, first


def test_a_large_answer_is_not_read(api, callout, unique):
    """Only the status matters: the worker hangs up after the headers, whatever the body's size."""
    path = f"/big/{unique('key')}"
    final = notify_and_wait(api, callout, path)
    assert final["state"] == "SUCCESS" and final["result"] == {"status_code": 200, "attempts": 1}, final
    first = first_call_ended(callout, path, timeout=10)
    assert first["sent"] < callout.BIG_BODY / 16, f"{first['sent']:,} of {callout.BIG_BODY:,} bytes sent"


def test_calls_to_hosts_not_allowed_are_refused_before_queueing(api, mongo):
    before = mongo.tasks.count_documents({})
    response = api.post("/api/async/notify", json={"url": "http://169.254.169.254/latest/meta-data"})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "url"] and "CALLOUT_ALLOWED_HOSTS" in error["msg"]
    assert mongo.tasks.count_documents({}) == before


def test_revoke_stops_a_running_task(api):
    task_id = api.post("/api/async/process", json={"data": "long", "iterations": 1000}).json()["task_id"]
    wait_for(lambda: api.get(f"/api/tasks/{task_id}").json()["state"] == "PROGRESS", timeout=20, what="running")

    revoked = api.delete(f"/api/tasks/{task_id}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "REVOKED"

    def live_state():
        from celery.result import AsyncResult

        return AsyncResult(task_id).state == "REVOKED"

    wait_for(live_state, timeout=15, what="worker terminated the task")
    status = api.get(f"/api/tasks/{task_id}").json()
    assert status["state"] == "REVOKED" and status["result"] is None
    assert api.delete(f"/api/tasks/{task_id}").status_code == 409


def test_revoking_a_finished_task_is_a_conflict(api):
    task_id = api.post("/api/async/process", json={"data": 1, "iterations": 1}).json()["task_id"]
    assert wait_for_task(api, task_id)["state"] == "SUCCESS"
    response = api.delete(f"/api/tasks/{task_id}")
    assert response.status_code == 409
    assert "SUCCESS" in response.json()["detail"]


def test_a_revoked_task_still_queued_never_runs(api, stack, mongo):
    """Workers that were down when a revoke was broadcast still skip it: the record is durable."""
    for worker in stack.workers:
        worker.stop()
    try:
        task_id = api.post("/api/async/process", json={"data": "queued", "iterations": 5}).json()["task_id"]
        assert api.delete(f"/api/tasks/{task_id}").json()["state"] == "REVOKED"
    finally:
        for worker in stack.workers:
            worker.start()
    # A later task on the same queue finishing means the revoked one was consumed before it.
    later = api.post("/api/async/process", json={"data": "after", "iterations": 1}).json()["task_id"]
    assert wait_for_task(api, later)["state"] == "SUCCESS"
    from celery.result import AsyncResult

    wait_for(lambda: mongo.tasks.find_one({"_id": task_id})["state"] == "REVOKED", timeout=5)
    wait_for(lambda: AsyncResult(task_id).state == "REVOKED", timeout=5, what="revoked in the result backend")
    assert api.get(f"/api/tasks/{task_id}").json()["state"] == "REVOKED"


def test_a_status_read_as_the_task_ends_carries_the_worker_and_finish_time(stack):
    # The API reads the record, then the live result; a task can end in between. The worker
    # records the outcome before Celery stores the live result, which status() relies on.
    from app.data import task_records
    from app.worker.celery_app import celery_app

    task_id = str(uuid.uuid4())
    task_records.issue(task_id, "process", "heavy")
    read_before_the_end = task_records.get(task_id)
    task_records.finish(task_id, "SUCCESS", "worker9@host", 0, result={"iterations": 1})
    celery_app.backend.mark_as_done(task_id, {"iterations": 1})

    view = task_records.status(read_before_the_end)
    assert view["state"] == "SUCCESS" and view["result"] == {"iterations": 1}
    assert view["worker"] == "worker9@host" and view["finished_at"] is not None


def test_unknown_task_ids_are_404_not_pending(api):
    response = api.get("/api/tasks/4b0c52a6-54b1-4b8a-9d61-2f4a0c4d6a11")
    assert response.status_code == 404
    assert "never issued" in response.json()["detail"]
    assert api.delete("/api/tasks/4b0c52a6-54b1-4b8a-9d61-2f4a0c4d6a11").status_code == 404


def test_the_task_queues_are_durable_quorum_queues(api, stack):
    api.post("/api/async/process", json={"data": 1, "iterations": 1})  # the queues exist once used
    listing = stack.rabbitmq.ctl(
        "list_queues", "-p", stack.rabbitmq.vhost, "--quiet", "--formatter", "json", "name", "type", "durable"
    )
    queues = {q["name"]: q for q in json.loads(listing)}
    for name in ("default", "heavy"):
        assert queues[name]["type"] == "quorum" and queues[name]["durable"] is True
