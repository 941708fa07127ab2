"""The daily cleanup task and Celery beat (single instance, with a standby)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

from celery.schedules import crontab
from helpers import healthcheck, wait_for

from devstack.servers import CeleryBeat


def test_cleanup_removes_what_expired_and_nothing_else(stack, mongo):
    from app.worker.celery_app import celery_app
    from app.worker.tasks import cleanup

    now = datetime.now(UTC)
    results = stack.redis.client(1)
    backend = celery_app.backend
    expired = [str(uuid.uuid4()) for _ in range(3)]
    fresh = [str(uuid.uuid4()) for _ in range(2)]
    for task_id, expires_at in [
        *((i, now - timedelta(hours=1)) for i in expired),
        *((i, now + timedelta(hours=1)) for i in fresh),
    ]:
        mongo.tasks.insert_one(
            {
                "_id": task_id,
                "kind": "process",
                "state": "SUCCESS",
                "retries": 0,
                "submitted_at": now - timedelta(days=2),
                "expires_at": expires_at,
            }
        )
        results.set(backend.get_key_for_task(task_id), b"{}", ex=3600)
    old_reports = [mongo.reports.insert_one({"created_at": now - timedelta(days=8)}).inserted_id for _ in range(2)]
    new_reports = [mongo.reports.insert_one({"created_at": now - timedelta(days=6)}).inserted_id for _ in range(2)]
    items_before = mongo.items.count_documents({})
    old_keys = [
        mongo.idempotency_keys.insert_one(
            {"_id": uuid.uuid4().hex, "expires_at": now - timedelta(minutes=1)}
        ).inserted_id
        for _ in range(2)
    ]
    new_key = mongo.idempotency_keys.insert_one({"_id": uuid.uuid4().hex, "expires_at": now + timedelta(hours=1)})

    summary = cleanup.apply_async().get(timeout=30)
    assert set(summary) == {"tasks", "results", "reports", "keys"}
    assert mongo.idempotency_keys.count_documents({"_id": {"$in": old_keys}}) == 0
    assert mongo.idempotency_keys.count_documents({"_id": new_key.inserted_id}) == 1

    assert mongo.tasks.count_documents({"_id": {"$in": expired}}) == 0
    assert mongo.tasks.count_documents({"_id": {"$in": fresh}}) == 2
    assert not any(results.exists(backend.get_key_for_task(i)) for i in expired)
    assert all(results.exists(backend.get_key_for_task(i)) for i in fresh)
    assert mongo.reports.count_documents({"_id": {"$in": old_reports}}) == 0
    assert mongo.reports.count_documents({"_id": {"$in": new_reports}}) == 2
    assert mongo.items.count_documents({}) == items_before
    assert mongo.maintenance_runs.find_one({"at": {"$gte": now - timedelta(seconds=1)}}) is not None


def test_cleanup_is_scheduled_daily_at_two(monkeypatch):
    from app.core.config import get_settings
    from app.worker.celery_app import create_celery

    monkeypatch.delenv("CLEANUP_CRONTAB")
    get_settings.cache_clear()
    try:
        entry = create_celery().conf.beat_schedule["cleanup-daily"]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert entry["task"] == "app.tasks.cleanup"
    assert entry["schedule"] == crontab(minute=0, hour=2)


def test_beat_sends_the_cleanup_on_schedule(stack, mongo):
    # The suite's beat runs the cleanup every minute (CLEANUP_CRONTAB="* * * * *").
    results = stack.redis.client(1)
    assert results.exists("redbeat::lock")
    assert results.exists("redbeat:cleanup-daily")
    started = datetime.now(UTC)
    wait_for(
        lambda: mongo.maintenance_runs.find_one({"at": {"$gt": started}}),
        timeout=75,
        interval=1,
        what="a cleanup sent by beat",
    )


def test_a_second_beat_waits_as_a_standby(stack, tmp_path):
    """And its container health check says so: healthy is the beat holding the lock."""
    # A directory of its own, as each beat container has its own /tmp.
    own = {"WORKER_HEARTBEAT_DIR": str(tmp_path / "heartbeat")}
    standby = CeleryBeat(tmp_path, {**stack.env, **own})
    standby.start(wait=False)
    try:
        time.sleep(5)
        assert standby.running
        assert not standby.ready(), "two beats hold the lock at once"
        assert healthcheck(stack, "beat").returncode == 0
        assert healthcheck(stack, "beat", env=own).returncode == 1, "a standby passes for the beat holding the lock"
        stack.beat.stop()  # a clean stop releases the lock
        standby.wait_ready()
        assert healthcheck(stack, "beat").returncode == 1, "a stopped beat still passes"
        wait_for(lambda: healthcheck(stack, "beat", env=own).returncode == 0, timeout=30, what="the new beat healthy")
    finally:
        standby.stop()
        stack.beat.start()


def test_task_records_expire_however_many_there_are(stack, mongo):
    """A TTL index on the records' expiry, so their number stays bounded whatever the daily cleanup
    gets through; an index an earlier release made without TTL is turned into one at start-up."""
    from app.data import mongo as app_mongo

    mongo.tasks.drop_index("expires_at")
    mongo.tasks.create_index("expires_at", name="expires_at")  # as before: no expiry
    app_mongo._indexes_ready = False
    app_mongo.ensure_indexes()
    assert mongo.tasks.index_information()["expires_at"]["expireAfterSeconds"] == 0

    now = datetime.now(UTC)
    batch = f"ttl-{uuid.uuid4().hex[:8]}"
    mongo.tasks.insert_many(
        [
            {"_id": f"{batch}-{n}", "kind": "process", "state": "SUCCESS", "expires_at": now - timedelta(minutes=n % 7)}
            for n in range(1, 2001)
        ]
        + [{"_id": f"{batch}-fresh", "kind": "process", "state": "SUCCESS", "expires_at": now + timedelta(hours=1)}]
    )
    # MongoDB's TTL monitor (and SecantusDB's) sweeps every 60 s.
    wait_for(
        lambda: mongo.tasks.count_documents({"_id": {"$regex": f"^{batch}-"}}) == 1,
        timeout=75,
        interval=1,
        what="the expired records swept by the TTL index",
    )
    assert mongo.tasks.count_documents({"_id": f"{batch}-fresh"}) == 1
