"""Updating the app under compose, the documented way (`make up` after a code change), under a
steady load: the API replicas are replaced one at a time, and no request fails."""

from __future__ import annotations

import time

from chaos import Load, polite_get
from e2e_stack import REPORT, sh

NEW_VERSION = "0.1.1"


def test_make_up_after_a_code_change_replaces_the_replicas_one_at_a_time(compose_stack):
    with compose_stack.writer() as api:
        seeded = [api.post("/api/items", json={"name": f"update-seed-{time.time_ns()}"}).json()["id"]]
    env = {"ENV_FILE": str(compose_stack.env_file), "APP_VERSION": NEW_VERSION, **compose_stack.extra_env}
    load = Load(compose_stack.url, compose_stack.api_key, seeded).start()
    started = time.monotonic()
    try:
        time.sleep(3)
        update = sh("scripts/up.sh", env=env, timeout=1200)  # what `make up` runs
    finally:
        load.stop()
    REPORT.append(f"make up, the update of 3 API replicas, workers and beat: {time.monotonic() - started:.0f}s")

    replaced = [line for line in update.stdout.splitlines() if line.startswith("api: ")]
    assert len(replaced) == 3, update.stdout[-2000:]
    # The image build shares the machine's 2 CPUs with the stack: MongoDB's stand-in may miss the
    # API's 800 ms budget now and then (1 submit in 3,311 requests once), answered 503 naming it,
    # which a caller retries. Replacing the replicas itself loses nothing: no other 5xx, no hang-up.
    tally = load.tally({"mongodb"})
    assert not tally["unexpected"] and set(tally["statuses"]) <= {200, 201, 202, 503}, tally
    assert tally["documented_503"] <= tally["requests"] // 100, tally
    assert set(load.created) == set(load.attempted) and len(load.created) > 10
    with compose_stack.client() as client:
        versions = {polite_get(client, "/health").json()["version"] for _ in range(12)}
    assert versions == {NEW_VERSION}
    compose_stack.wait_healthy()
