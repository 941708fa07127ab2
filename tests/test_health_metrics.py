"""Liveness, readiness, request ids and Prometheus metrics across gunicorn workers."""

from __future__ import annotations

import json
import re
import socket
import time
from collections import Counter

import httpx
import pytest
from helpers import healthcheck, spread_gets, wait_for

from devstack.servers import ApiServer, RedisServer
from topology import VERSION


def test_liveness_is_cheap_and_readiness_checks_every_dependency(api):
    assert api.get("/health").json() == {"status": "ok", "version": VERSION}
    ready = api.get("/health/ready")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert set(checks) == {"mongodb", "redis", "rabbitmq"}
    assert all(check["status"] == "ok" for check in checks.values())


def test_readiness_checks_a_result_server_of_its_own(stack, tmp_path):
    """Celery's results on another Redis than the cache: readiness checks that one too."""
    results = RedisServer(tmp_path / "results").start()
    server = ApiServer(tmp_path / "api", {**stack.env, "CELERY_RESULT_BACKEND": results.url(1)}, workers=1)
    try:
        server.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            checks = client.get("/health/ready").json()["checks"]
            assert checks["result_backend"]["status"] == "ok", checks
            results.stop()

            def unready() -> dict | None:
                answer = client.get("/health/ready")
                return answer.json()["checks"] if answer.status_code == 503 else None

            checks = wait_for(unready, timeout=10, interval=0.5, what="readiness without the result server")
            assert checks["result_backend"]["status"] == "error" and checks["redis"]["status"] == "ok", checks
    finally:
        server.stop()
        results.stop()


def test_readiness_through_the_load_balancer_says_only_ready_or_not(api, anonymous):
    """nginx adds X-Forwarded-For: the caller is outside, and gets no details without a key."""
    through_nginx = {"X-Forwarded-For": "203.0.113.9"}
    assert anonymous.get("/health/ready", headers=through_nginx).json() == {"status": "ready"}
    with_key = api.get("/health/ready", headers=through_nginx).json()
    assert set(with_key["checks"]) == {"mongodb", "redis", "rabbitmq"}
    assert set(anonymous.get("/health/ready").json()["checks"]) == {"mongodb", "redis", "rabbitmq"}  # inside


def test_a_flood_of_readiness_calls_checks_each_dependency_once_a_second(anonymous, api, stack):
    """Each check opened an AMQP connection and asked MongoDB and Redis: a flood of readiness
    calls was a flood on every dependency. Now each process checks once a second at most."""

    def checks() -> float:
        return sample(api.get("/metrics").text, "readiness_checks_total", dependency="rabbitmq")

    outside = {"X-Forwarded-For": "203.0.113.9"}
    time.sleep(1.1)  # any verdict cached by an earlier test is stale
    before, started = checks(), time.monotonic()
    answers = Counter(anonymous.get("/health/ready", headers=outside).status_code for _ in range(200))
    seconds = time.monotonic() - started
    ran = checks() - before
    assert answers == {200: 200}, answers
    # At least the first call checked; at most one check per gunicorn worker per second after it.
    assert 1 <= ran <= stack.api.workers * (seconds + 2), f"{ran:.0f} checks for 200 calls in {seconds:.1f}s"


def test_every_response_carries_a_request_id_and_the_replica(api, stack):
    generated = api.get("/health")
    assert generated.headers["x-served-by"] == socket.gethostname()
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    assert api.get("/health", headers={"X-Request-ID": "trace-123"}).headers["x-request-id"] == "trace-123"
    # An unsafe id is replaced rather than echoed into logs and headers.
    assert api.get("/health", headers={"X-Request-ID": "a b\tc"}).headers["x-request-id"] != "a b\tc"
    assert api.get("/nowhere", headers={"X-Request-ID": "trace-404"}).headers["x-request-id"] == "trace-404"
    # ACCESS_LOG=errors (the default): a failed request gets an access line, a 200 does not.
    api.get("/api/items", headers={"X-Request-ID": "trace-quiet"})
    api.get("/api/items/0123456789abcdef01234567", headers={"X-Request-ID": "trace-logged"})

    def access_line(request_id: str) -> dict | None:
        # Other lines may carry the same id (a warning logged while serving the request).
        for line in stack.api.log_path.read_text().splitlines():
            if f'"request_id": "{request_id}"' in line and (record := json.loads(line))["logger"] == "app.access":
                return record
        return None

    # The access line is written once the response has been sent, so the client can see the
    # response a moment before the line reaches the log.
    logged = wait_for(lambda: access_line("trace-logged"), timeout=5, what="access log line for trace-logged")
    assert logged["route"] == "/api/items/{item_id}" and logged["status"] == 404
    assert access_line("trace-quiet") is None


def sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_add_up_across_gunicorn_workers(stack, api):
    before = api.get("/metrics").text
    not_found = {"route": "/api/items/{item_id}", "method": "GET", "status": "404"}
    base = sample(before, "http_requests_total", **not_found)
    submitted = sample(before, "tasks_submitted_total", kind="report")
    missing = "f" * 24

    assert {response.status_code for response in spread_gets(f"{stack.api.url}/api/items/{missing}", 60)} == {404}
    api.post("/api/async/report", json={})

    assert api.get("/metrics").headers["content-type"].startswith("text/plain")

    # Each request is counted once its response has gone out, so the last few may land a moment
    # after the client has its answers.
    def counted() -> str | None:
        text = api.get("/metrics").text
        return text if sample(text, "http_requests_total", **not_found) >= base + 60 else None

    text = wait_for(counted, timeout=5, what="60 requests counted")
    assert sample(text, "http_requests_total", **not_found) == base + 60
    assert sample(text, "tasks_submitted_total", kind="report") == submitted + 1
    assert sample(text, "http_request_duration_seconds_count", route="/api/items/{item_id}", method="GET") >= 60
    # The route template is the label, never the raw path.
    assert missing not in text


@pytest.mark.parametrize("role", ["api", "worker", "beat"])
def test_container_healthcheck_for_each_role(stack, role):
    result = healthcheck(stack, role)
    assert result.returncode == 0, result.stderr.decode()


def test_container_healthcheck_fails_when_the_api_is_not_there(stack):
    result = healthcheck(stack, "api", bind="127.0.0.1:1")
    assert result.returncode == 1 and b"api unhealthy" in result.stderr


@pytest.mark.parametrize("role", ["api", "worker", "beat"])
def test_a_container_healthcheck_imports_nothing_of_the_app(stack, role):
    """The image probes every few seconds: each probe may cost Python's start-up, not the app's
    imports (0.4 s of CPU for the Settings a worker's check read, 0.8 s for the Celery app beat's did)."""
    # Python names each module it imports on stderr, as "import time: self | cumulative | module".
    result = healthcheck(stack, role, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    lines = result.stderr.decode().splitlines()
    modules = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    assert "app.core.liveness" in modules, modules
    heavy = {name for name in modules if name.split(".")[0] in {"pydantic", "celery", "kombu", "redis", "pymongo"}}
    app = {name for name in modules if name.startswith("app.")} - {"app.core", "app.core.liveness", "app.healthcheck"}
    assert not heavy and not app, sorted(heavy | app)


def test_the_fleet_probe_reads_the_worker_files_where_the_app_writes_them():
    from app.core import liveness
    from fleet import probe

    assert (probe.HEARTBEAT_DIR, probe.HEARTBEAT_STALE_SECONDS) == (
        str(liveness.DEFAULT_DIRECTORY),
        liveness.STALE_AFTER_SECONDS,
    )
