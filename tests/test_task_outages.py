"""Accepted work is never lost: tasks that start during an outage run once it is over, a task
that keeps crashing its worker is dead-lettered (and can be sent again), and a full queue
refuses submits instead of growing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from helpers import wait_for, wait_for_task

from devstack.servers import REPO_ROOT


def submit_with_workers_stopped(api, stack, count: int) -> list[str]:
    for worker in stack.workers:
        worker.stop()
    return [api.post("/api/async/process", json={"data": n, "iterations": 2}).json()["task_id"] for n in range(count)]


def start_workers(stack) -> None:
    for worker in stack.workers:
        worker.start(wait=False)
    for worker in stack.workers:
        worker.wait_ready()


def worker_log(stack) -> str:
    return "".join(worker.log_path.read_text() for worker in stack.workers)


def outage_met(stack) -> set[str]:
    """The ids of the tasks the workers put back for later because a dependency was down."""
    lines = filter(is_outage_line, worker_log(stack).splitlines())
    return {json.loads(line).get("task_id") for line in lines}


def is_outage_line(line: str) -> bool:
    return line.startswith("{") and "a dependency is unavailable" in line


def test_tasks_that_start_while_mongodb_is_down_finish_once_it_is_back(api, stack, mongo):
    if stack.mongo is None:
        pytest.skip("MongoDB is external (TEST_MONGO_URL); this test stops the server it started itself")
    queued = submit_with_workers_stopped(api, stack, 3)
    stack.mongo.stop()
    try:
        start_workers(stack)
        # Every task starts, finds MongoDB down, and is put back for later (a fixed wait raced a
        # task that started late and was still waiting for MongoDB when it came back).
        wait_for(lambda: outage_met(stack) >= set(queued), timeout=60, what="every task met the outage")
    finally:
        stack.mongo.start()
    for task_id in queued:
        final = wait_for_task(api, task_id, timeout=120)
        assert final["state"] == "SUCCESS", final
        assert final["retries"] >= 1  # it went round the outage


def test_tasks_that_start_while_redis_is_down_finish(api, stack, mongo):
    queued = submit_with_workers_stopped(api, stack, 2)
    stack.redis.stop()
    try:
        start_workers(stack)

        def recorded() -> bool:
            return mongo.tasks.count_documents({"_id": {"$in": queued}, "state": "SUCCESS"}) == len(queued)

        # Their live state (STARTED, progress, result) has nowhere to go: the record has the outcome.
        wait_for(recorded, timeout=60, what="the outcomes recorded with Redis down")
    finally:
        stack.redis.start()
    for task_id in queued:
        final = api.get(f"/api/tasks/{task_id}").json()
        assert final["state"] == "SUCCESS" and final["result"]["iterations"] == 2, final


def active_pid(task_id: str) -> int | None:
    from app.worker.celery_app import celery_app

    with celery_app.connection_for_write() as connection:
        active = celery_app.control.inspect(timeout=1, connection=connection).active() or {}
    return next((t["worker_pid"] for tasks in active.values() for t in tasks if t["id"] == task_id), None)


def dead_letters_cli(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack.env, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "app.worker.dead_letters", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_task_that_crashes_its_worker_three_times_is_dead_lettered_and_can_be_sent_again(api, stack):
    task_id = api.post("/api/async/process", json={"data": "crash", "iterations": 1000}).json()["task_id"]
    for crash in range(1, 4):
        pid = wait_for(lambda: active_pid(task_id), timeout=60, interval=0.5, what=f"the task running ({crash})")
        os.kill(pid, signal.SIGKILL)  # the pool process dies mid-task, as on a segfault or an OOM kill
        wait_for(lambda p=pid: active_pid(task_id) != p, timeout=30, interval=0.5, what="the crash noticed")

    final = wait_for_task(api, task_id, timeout=60)
    assert final["state"] == "FAILURE", final
    assert final["error"]["type"] == "DeadLettered"
    assert "delivered 3 times without finishing" in final["error"]["message"]

    listing = dead_letters_cli(stack, "list")
    assert listing.returncode == 0 and task_id in listing.stdout, listing.stdout + listing.stderr
    resent = dead_letters_cli(stack, "resend", task_id)
    assert resent.returncode == 0 and f"{task_id}: sent again" in resent.stdout, resent.stdout + resent.stderr
    assert wait_for_task(api, task_id, timeout=120)["state"] == "SUCCESS"
    assert task_id not in dead_letters_cli(stack, "list").stdout

    again = dead_letters_cli(stack, "resend", task_id)
    assert again.returncode == 1 and "not a dead-lettered task" in again.stdout
    assert dead_letters_cli(stack, "resend").returncode == 2  # neither ids nor --all: usage error


def test_a_full_queue_refuses_submits_with_503(api, stack, mongo):
    from app.worker.celery_app import celery_app

    bound = int(stack.env["TASK_QUEUE_MAX_LENGTH"])
    for worker in stack.workers:
        worker.stop()
    try:
        accepted, refused = 0, None
        for _ in range(bound + 50):
            response = api.post("/api/async/report", json={})
            if response.status_code != 202:
                refused = response
                break
            accepted += 1
        assert refused is not None and refused.status_code == 503, refused and refused.text
        assert refused.json()["dependency"] == "rabbitmq" and "queue is full" in refused.json()["detail"]
        assert bound <= accepted <= bound + 5  # quorum queues count a few in flight
        print(f"\nqueue bound {bound}: {accepted} accepted, then 503")
    finally:
        with celery_app.connection_for_write() as connection:
            celery_app.control.purge(connection=connection)
        start_workers(stack)


def test_the_dead_letter_queue_exists_and_the_task_queues_carry_their_bounds(api, stack):
    listing = stack.rabbitmq.ctl(
        "list_queues", "-p", stack.rabbitmq.vhost, "--quiet", "--formatter", "json", "name", "arguments"
    )
    queues = {q["name"]: q for q in json.loads(listing)}
    assert "dead-letters" in queues
    for name in ("default", "heavy"):
        arguments = {key: value for key, _type, value in queues[name]["arguments"]}
        assert arguments["x-max-length"] == int(stack.env["TASK_QUEUE_MAX_LENGTH"])
        assert arguments["x-overflow"] == "reject-publish" and arguments["x-delivery-limit"] == 2
        assert arguments["x-dead-letter-exchange"] == "dead-letters"


def staged_record(mongo, starts: int) -> str:
    """A task's record, as the API writes it, whose first attempt workers started `starts` times."""
    task_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    mongo.tasks.insert_one(
        {
            "_id": task_id,
            "kind": "process",
            "queue": "heavy",
            "state": "STARTED" if starts else "PENDING",
            "retries": 0,
            "submitted_at": now,
            "expires_at": now + timedelta(hours=1),
            **({"attempt": 0, "starts": {"0": starts}} if starts else {}),
        }
    )
    return task_id


def dead_letter(task_id: str) -> None:
    """What RabbitMQ moves to the dead-letter exchange at the delivery limit: the task's message."""
    from app.worker.celery_app import celery_app
    from app.worker.dead_letters import dead_letter_queue

    with celery_app.producer_or_acquire() as producer:
        producer.publish(
            [[], {"data": "dead", "iterations": 1}, {}],
            exchange=dead_letter_queue().exchange,
            routing_key="heavy",
            headers={
                "id": task_id,
                "task": "app.tasks.process_data",
                "retries": 0,
                "x-death": [{"queue": "heavy", "reason": "delivery_limit", "count": 1}],
            },
            serializer="json",
            declare=[dead_letter_queue()],
        )


@pytest.mark.parametrize("starts", [0, 1, 2])
def test_a_task_dead_lettered_by_broker_churn_is_sent_again(stack, mongo, api, starts):
    """Deliveries given back by a broker restart or a lost connection count against the delivery
    limit too. A task that workers started fewer times than it was delivered did not crash them
    each time: it runs again instead of failing (it read FAILURE, DeadLettered, before)."""
    task_id = staged_record(mongo, starts=starts)
    dead_letter(task_id)
    final = wait_for_task(api, task_id, timeout=60)
    assert final["state"] == "SUCCESS", final
    assert mongo.tasks.find_one({"_id": task_id})["churn_resends"] == 1
    assert task_id not in dead_letters_cli(stack, "list").stdout


def test_a_dead_letter_that_arrives_while_mongodb_is_down_is_recorded_once_it_is_back(stack, mongo, api):
    if stack.mongo is None:
        pytest.skip("MongoDB is external (TEST_MONGO_URL); this test stops the server it started itself")

    task_id = staged_record(mongo, starts=3)  # it crashed its worker on each of its 3 deliveries
    stack.mongo.stop()
    try:
        dead_letter(task_id)
        # The workers could not record it, and keep it.
        waited = f"cannot record dead-lettered task {task_id} yet"
        wait_for(lambda: waited in worker_log(stack), timeout=60, what="the dead letter kept for later")
    finally:
        stack.mongo.start()
    final = wait_for_task(api, task_id, timeout=60)
    assert final["state"] == "FAILURE" and final["error"]["type"] == "DeadLettered", final
    assert task_id in dead_letters_cli(stack, "list").stdout


def test_an_outcome_that_meets_a_long_mongodb_outage_is_recorded_once_it_is_back(api, stack, mongo):
    """A task that finishes while MongoDB is down, for longer than the worker waits to write its
    record: the outcome is handed to the broker and written when MongoDB returns. The live result
    in Redis is deleted meanwhile, as it expires after RESULT_TTL_SECONDS: only the record remains."""
    if stack.mongo is None:
        pytest.skip("MongoDB is external (TEST_MONGO_URL); this test stops the server it started itself")
    from app.worker.celery_app import celery_app

    # About 5 s of work: still running once MongoDB is gone (40 iterations, 0.2 s, could finish first).
    task_id = api.post("/api/async/process", json={"data": "long outage", "iterations": 1000}).json()["task_id"]
    wait_for(lambda: api.get(f"/api/tasks/{task_id}").json()["state"] == "PROGRESS", timeout=60, what="running")
    stack.mongo.stop()
    try:
        assert celery_app.AsyncResult(task_id).state == "PROGRESS", "the task finished before MongoDB stopped"
        # SUCCESS in Redis once the worker is done with the record: its write failed after
        # MONGO_WORKER_TIMEOUT_MS (5 s here), and the outcome went elsewhere, or nowhere.
        wait_for(lambda: celery_app.AsyncResult(task_id).state == "SUCCESS", timeout=60, what="finished")
        backend = celery_app.backend
        assert backend.client.delete(backend.get_key_for_task(task_id)) == 1
        time.sleep(10)  # longer than the worker's own wait: the outage outlasts it
    finally:
        stack.mongo.start()
    final = wait_for_task(api, task_id, timeout=90)
    assert final["state"] == "SUCCESS" and final["result"]["iterations"] == 1000, final
    assert "the outcome is recorded once it is back" in worker_log(stack)
