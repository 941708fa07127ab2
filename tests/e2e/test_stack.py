"""The compose stack from the outside: through nginx on the published port."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from e2e_stack import RUNNING, sh, task_result
from helpers import wait_for

from topology import API_PORT


def test_every_service_is_up_and_healthy(compose_stack):
    services = compose_stack.services()
    counts = Counter(s["Service"] for s in services)
    assert counts == RUNNING
    unhealthy = [
        (s["Name"], s["State"], s["Health"]) for s in services if (s["State"], s["Health"]) != ("running", "healthy")
    ]
    assert not unhealthy


def test_crud_async_readiness_and_docs_through_nginx(compose_stack, unique):
    with compose_stack.writer() as api:
        ready = api.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"mongodb", "redis", "rabbitmq"}
    # Without a key, through nginx: ready or not, no details (they name internal addresses).
    with compose_stack.client() as anonymous:
        assert anonymous.get("/health/ready").json() == {"status": "ready"}
    # Inside, straight to a replica (as the health check and a deploy gate reach it): the details.
    api_container = compose_stack.containers("api")[0]
    url = f"http://127.0.0.1:{API_PORT}/health/ready"
    probe = f"import urllib.request as u; print(u.urlopen({url!r}).read().decode())"
    inside = sh("docker", "exec", api_container, "python", "-c", probe)
    assert set(json.loads(inside.stdout)["checks"]) == {"mongodb", "redis", "rabbitmq"}
    with compose_stack.writer() as api:
        created = api.post("/api/items", json={"name": unique(), "price": 3.5, "tags": ["e2e"]})
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        assert api.get(location).json() == created.json()
        assert api.patch(location, json={"price": 4.0}).json()["price"] == 4.0
        assert api.get(location).json()["price"] == 4.0
        assert api.delete(location).status_code == 204
        assert api.get(location).status_code == 404

        submitted = api.post("/api/async/process", json={"data": {"e2e": True}, "iterations": 30})
        assert submitted.status_code == 202
        final = task_result(api, submitted.json()["task_id"])
        assert final["state"] == "SUCCESS" and final["result"]["iterations"] == 30

        docs = api.get("/docs")
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
        assert api.get("/redoc").status_code == 200
        assert api.get("/openapi.json").json()["info"]["title"] == "Microservices API"


def test_security_headers_and_request_ids(compose_stack):
    with compose_stack.client() as client:
        response = client.get("/health", headers={"X-Request-ID": "e2e-trace-1"})
        assert response.headers["x-request-id"] == "e2e-trace-1"
        for header in ("x-content-type-options", "x-frame-options", "referrer-policy", "content-security-policy"):
            assert header in response.headers
        assert "server" not in response.headers or "nginx/" not in response.headers["server"]
        # Metrics are for the internal network only.
        hidden = client.get("/metrics", headers={"X-Request-ID": "e2e-trace-2"})
        assert hidden.status_code == 404 and hidden.headers["x-request-id"] == "e2e-trace-2"
        # An id the API would not keep (too long, or a character it does not allow) is replaced by
        # nginx with the one it gives the API, so both logs and the caller see the same one.
        for unkept in ("x" * 129, "trace/1"):
            replaced = client.get("/health", headers={"X-Request-ID": unkept}).headers["x-request-id"]
            assert re.fullmatch("[0-9a-f]{32}", replaced), replaced

    # nginx writes the access line after the response, and docker's log driver adds a hop.
    def access_line() -> dict | None:
        log = compose_stack.compose("logs", "--no-log-prefix", "nginx").stdout
        return next((json.loads(line) for line in log.splitlines() if "e2e-trace-1" in line), None)

    line = wait_for(access_line, timeout=10, interval=0.5, what="nginx access line for e2e-trace-1")
    assert line["upstream_addr"] and line["upstream_response_time"] and line["status"] == 200


def test_requests_are_spread_over_all_three_replicas(compose_stack):
    with compose_stack.client() as client:
        served_by = Counter(client.get("/health").headers["x-served-by"] for _ in range(30))
    replicas = {container[:12] for container in compose_stack.containers("api")}
    assert set(served_by) == replicas, served_by
    assert min(served_by.values()) >= 5  # round robin, not just "touched once"


def test_rate_limit_answers_429_json_to_the_flooding_client_only(compose_stack):
    time.sleep(2)  # a full bucket
    api_container = compose_stack.containers("api")[0]
    # A second client, from another address (an API replica on the frontend network),
    # paced at 20 requests per second while the host floods.
    calm = subprocess.Popen(
        [
            "docker",
            "exec",
            api_container,
            "python",
            "-c",
            "import time, urllib.request\n"
            "codes = []\n"
            "for _ in range(60):\n"
            "    codes.append(urllib.request.urlopen('http://nginx/health', timeout=5).status)\n"
            "    time.sleep(0.05)\n"
            "print(sorted(set(codes)))",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    limits = httpx.Limits(max_connections=50)
    started = time.monotonic()
    with httpx.Client(base_url=compose_stack.url, timeout=15, limits=limits) as client:
        with ThreadPoolExecutor(50) as pool:
            responses = list(pool.map(lambda _: client.get("/health"), range(800)))
    elapsed = time.monotonic() - started
    out, err = calm.communicate(timeout=60)

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) == {200, 429}, statuses
    assert statuses[200] >= 100, statuses  # the burst allowance
    # No more got through than the burst plus 100 per second over the flood (and a little for
    # the edges), however fast this machine managed to send them.
    assert statuses[200] <= 100 + 100 * elapsed + 20, (statuses, f"{elapsed:.2f}s")
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["content-type"] == "application/json"
    assert "100 per second" in limited.json()["detail"]
    assert limited.headers["x-content-type-options"] == "nosniff"
    assert re.fullmatch("[0-9a-f]{32}", limited.headers["x-request-id"]), limited.headers
    assert calm.returncode == 0 and out.strip() == "[200]", (out, err)


def test_the_tls_server_turns_on_when_certificates_are_given(compose_stack, tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    https_port, http_port = compose_stack.env["HTTPS_PORT"], compose_stack.env["HTTP_PORT"]
    with httpx.Client(verify=False, timeout=5) as client:  # noqa: S501 - a self-signed test certificate
        try:
            client.get(f"https://127.0.0.1:{https_port}/health")
            raise AssertionError("HTTPS answered without certificates")
        except httpx.HTTPError:
            pass

        compose_stack.extra_env.update({"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)})
        try:
            compose_stack.compose("up", "-d", "--wait", "nginx")
            response = client.get(f"https://127.0.0.1:{https_port}/health")
            assert response.status_code == 200 and response.json()["status"] == "ok"
            assert response.headers["strict-transport-security"].startswith("max-age=")
            assert response.headers["x-frame-options"] == "DENY"
            # Port 80 now only redirects, to the port HTTPS is published on.
            plain = client.get(f"http://127.0.0.1:{http_port}/api/items?limit=1")
            assert plain.status_code == 301
            assert plain.headers["location"] == f"https://127.0.0.1:{https_port}/api/items?limit=1"
        finally:
            del compose_stack.extra_env["TLS_CERT_FILE"], compose_stack.extra_env["TLS_KEY_FILE"]
            compose_stack.compose("up", "-d", "--wait", "nginx")
        health = client.get(f"http://127.0.0.1:{http_port}/health")
        assert health.status_code == 200 and "strict-transport-security" not in health.headers


def raw_http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send bytes no HTTP client would, return nginx's status line, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nA header without a colon\r\n\r\n", 400),
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 414),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\nConnection: close\r\n\r\n", 431),
        (b"TRACE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
        (b"GET /_nginx/502 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),  # internal
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
        (b"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n", 413),
    ],
)
def test_nginx_answers_its_own_errors_in_json(compose_stack, request_bytes, status):
    line, headers, body = raw_http(compose_stack.http_port, request_bytes)
    assert line.split()[1] == str(status), line
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["detail"]
    # The id nginx logged the request under, as on every answer the API makes.
    assert re.fullmatch("[0-9a-f]{32}", headers.get("x-request-id", "")), headers
    if status == 405:
        assert headers["allow"] == "DELETE, GET, PATCH, POST"


def test_nginx_follows_the_replicas_as_they_come_and_go(compose_stack):
    """nginx resolves `api` again every second: a replica added by scaling serves without a reload."""
    with compose_stack.client() as client:
        compose_stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "api=4", "--wait", "api")
        try:
            replicas = {container[:12] for container in compose_stack.containers("api")}
            assert len(replicas) == 4

            def all_serving() -> bool:
                return {client.get("/health").headers["x-served-by"] for _ in range(24)} == replicas

            wait_for(all_serving, timeout=20, interval=1, what="nginx sending requests to the new replica")
        finally:
            compose_stack.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "api=3", "api")
        remaining = {container[:12] for container in compose_stack.containers("api")}
        # The removed replica is dropped as well: no request fails, and none goes to it.
        seen = [client.get("/health") for _ in range(24)]
        assert all(r.status_code == 200 for r in seen) and {r.headers["x-served-by"] for r in seen} <= remaining
