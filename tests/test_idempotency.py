"""Idempotency-Key on creates and submits: a repeat gets the first answer and makes nothing new,
a reused key with another body is refused, and a key whose first attempt died is taken over
with the same resource id, so the client ends with exactly one item."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from helpers import wait_for, wait_for_task

from app.api.idempotency import fingerprint, key_id
from app.api.schemas import ItemCreate


def new_key() -> str:
    return f"key-{secrets.token_hex(8)}"


def test_a_repeated_create_gets_the_first_answer_and_makes_one_item(api, mongo, unique):
    key, name = new_key(), unique()
    first = api.post("/api/items", json={"name": name, "price": 2.0}, headers={"Idempotency-Key": key})
    again = api.post("/api/items", json={"name": name, "price": 2.0}, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert mongo.items.count_documents({"name": name}) == 1
    assert api.get(first.headers["location"]).json() == first.json()


def test_a_key_reused_with_another_body_is_refused(api, mongo, unique):
    key, name = new_key(), unique()
    assert api.post("/api/items", json={"name": name}, headers={"Idempotency-Key": key}).status_code == 201
    other = api.post("/api/items", json={"name": unique()}, headers={"Idempotency-Key": key})
    assert other.status_code == 422
    error = other.json()["detail"][0]
    assert error["loc"] == ["header", "Idempotency-Key"] and "different request body" in error["msg"]
    assert mongo.items.count_documents({"name": name}) == 1


def test_keys_are_per_route_and_a_refusal_is_kept_too(api, unique):
    key, name = new_key(), unique()
    assert api.post("/api/items", json={"name": name}).status_code == 201
    taken = api.post("/api/items", json={"name": name}, headers={"Idempotency-Key": key})
    assert taken.status_code == 409
    replayed = api.post("/api/items", json={"name": name}, headers={"Idempotency-Key": key})
    assert replayed.status_code == 409 and replayed.headers["idempotent-replayed"] == "true"
    # The same key on another route is another key.
    report = api.post("/api/async/report", json={"tag": "none"}, headers={"Idempotency-Key": key})
    assert report.status_code == 202


def test_a_repeated_submit_queues_one_task(api, mongo):
    key = new_key()
    body = {"data": {"once": True}, "iterations": 2}
    first = api.post("/api/async/process", json=body, headers={"Idempotency-Key": key})
    again = api.post("/api/async/process", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    assert mongo.tasks.count_documents({"_id": first.json()["task_id"]}) == 1


@pytest.mark.parametrize("bad", ["", "x" * 256, "has space", "tab\tkey"])
def test_malformed_keys_are_named(api, bad):
    response = api.post("/api/items", json={"name": "x"}, headers={"Idempotency-Key": bad})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def claim(mongo, stack, key: str, body: dict, lease_until: datetime) -> str:
    """The record of a first attempt that took the key and then vanished (its replica was killed)."""
    item_id = str(ObjectId())
    mongo.idempotency_keys.insert_one(
        {
            "_id": key_id(stack.api_key, "POST", "/api/items", key),
            "fingerprint": fingerprint(ItemCreate(**body)),
            "resource_id": item_id,
            "state": "running",
            "lease_until": lease_until,
            "created_at": datetime.now(UTC),
            "expires_at": datetime.now(UTC) + timedelta(hours=24),
        }
    )
    return item_id


def test_a_repeat_while_the_first_attempt_runs_is_told_when_to_retry(api, mongo, stack, unique):
    body, key = {"name": unique()}, new_key()
    claim(mongo, stack, key, body, datetime.now(UTC) + timedelta(seconds=30))
    busy = api.post("/api/items", json=body, headers={"Idempotency-Key": key})
    assert busy.status_code == 409 and int(busy.headers["retry-after"]) >= 1, busy.text
    assert "still being processed" in busy.json()["detail"]


def test_a_key_whose_first_attempt_died_is_taken_over_with_the_same_item_id(api, mongo, stack, unique):
    # The first attempt wrote the item and died before answering; its lease has run out.
    body, key = {"name": unique(), "price": 1.0}, new_key()
    item_id = claim(mongo, stack, key, body, datetime.now(UTC) - timedelta(seconds=1))
    now = datetime.now(UTC).replace(microsecond=0)
    written = {"_id": ObjectId(item_id), **body, "description": None, "quantity": 0, "tags": []}
    mongo.items.insert_one({**written, "created_at": now, "updated_at": now})
    taken_over = api.post("/api/items", json=body, headers={"Idempotency-Key": key})
    assert taken_over.status_code == 201 and taken_over.json()["id"] == item_id, taken_over.text
    assert mongo.items.count_documents({"name": body["name"]}) == 1
    replayed = api.post("/api/items", json=body, headers={"Idempotency-Key": key})
    assert replayed.json() == taken_over.json() and replayed.headers["idempotent-replayed"] == "true"


def test_a_create_that_met_an_outage_is_run_again_by_its_retry(api, mongo, stack, unique):
    if stack.mongo is None:
        pytest.skip("MongoDB is external (TEST_MONGO_URL); this test stops the server it started itself")
    key, name = new_key(), unique()
    stack.mongo.stop()
    try:
        down = api.post("/api/items", json={"name": name}, headers={"Idempotency-Key": key})
        assert down.status_code == 503
    finally:
        stack.mongo.start()
    retried = api.post("/api/items", json={"name": name}, headers={"Idempotency-Key": key})
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    assert mongo.items.count_documents({"name": name}) == 1


def test_a_keyed_submit_whose_answer_was_lost_runs_its_task_once(api, mongo, stack):
    """The first attempt issued the record and published the message, then its replica died before
    answering. The retry takes the key over and publishes again (the record says PENDING: the first
    message is still queued), so two messages carry the task's id: only one may run it."""
    from app.api.schemas import ProcessRequest
    from app.worker.tasks import process_data

    body, key, task_id = {"data": secrets.token_hex(4), "iterations": 5}, new_key(), str(uuid.uuid4())
    mongo.idempotency_keys.insert_one(
        {
            "_id": key_id(stack.api_key, "POST", "/api/async/process", key),
            "fingerprint": fingerprint(ProcessRequest(**body)),
            "resource_id": task_id,
            "state": "running",
            "lease_until": datetime.now(UTC) - timedelta(seconds=1),
            "created_at": datetime.now(UTC),
            "expires_at": datetime.now(UTC) + timedelta(hours=24),
        }
    )
    now = datetime.now(UTC)
    mongo.tasks.insert_one(
        {"_id": task_id, "kind": "process", "queue": "heavy", "state": "PENDING", "retries": 0,
         "submitted_at": now, "expires_at": now + timedelta(hours=24)}
    )  # fmt: skip
    # The first attempt's message, still on its way when the retry comes (a queue's backlog).
    process_data.apply_async(kwargs=body, task_id=task_id, countdown=3)

    retried = api.post("/api/async/process", json=body, headers={"Idempotency-Key": key})
    assert retried.status_code == 202 and retried.json()["task_id"] == task_id, retried.text
    assert wait_for_task(api, task_id)["state"] == "SUCCESS"

    def runs() -> int:
        return sum(worker.log_path.read_text().count(f"[{task_id}] succeeded") for worker in stack.workers)

    def skipped() -> bool:
        return any("skipping a second message" in line and task_id in line
                   for worker in stack.workers for line in worker.log_path.read_text().splitlines())  # fmt: skip

    wait_for(lambda: skipped() or runs() > 1, timeout=20, what="the second message taken")
    assert runs() == 1
