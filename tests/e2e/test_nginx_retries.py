"""What nginx sends to the API twice: only what is safe to send twice.

The real nginx image and configuration (nginx/), in front of scripted replicas that lose an answer
on purpose: they read the request, act on it, and close the connection without answering, as a
replica killed between its write and its answer would. That moment cannot be chosen on the real
API, so the upstream is the one thing replaced here (its own upstream.conf, mounted over nginx's).
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from e2e_stack import nofile_limit, sh
from helpers import wait_for

from devstack.servers import REPO_ROOT, free_port


class Replicas(ThreadingHTTPServer):
    """A path with `lose=` in its query has its first request acted on and its answer lost. The
    rest are answered as the API would, a repeated DELETE with 404 (the item is gone)."""

    def __init__(self) -> None:
        super().__init__(("0.0.0.0", free_port()), LosesFirstAnswer)  # noqa: S104 - reached from the nginx container
        self.calls: dict[str, list[str]] = defaultdict(list)


class LosesFirstAnswer(BaseHTTPRequestHandler):
    server: Replicas
    protocol_version = "HTTP/1.1"

    def handle_one_request(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline or not self.parse_request():
            self.close_connection = True
            return
        self.rfile.read(int(self.headers.get("content-length", 0)))
        calls = self.server.calls[self.path]
        calls.append(self.command)
        if "lose=" in self.path and len(calls) == 1:  # acted on, and the answer lost
            self.close_connection = True
            return
        if self.command == "DELETE":
            status = 404 if len(calls) > 1 else 204
        else:
            status = 201 if self.command == "POST" else 200
        body = b"" if status == 204 else json.dumps({"calls": len(calls)}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def replicas() -> Iterator[Replicas]:
    server = Replicas()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def start_nginx(image: str, upstream: str, work: Path) -> tuple[str, str]:
    """nginx with the repository's configuration and this upstream; (container, its URL)."""
    (work / "upstream.conf").write_text(upstream)
    port = free_port()
    nofile = nofile_limit().get("NGINX_NOFILE", "65535")
    container = sh(
        "docker", "run", "-d", "--rm", "--ulimit", f"nofile={nofile}:{nofile}",
        "--add-host", "host.docker.internal:host-gateway",
        "-v", f"{REPO_ROOT}/nginx:/etc/nginx/app:ro",
        "-v", f"{work}/upstream.conf:/etc/nginx/app/upstream.conf:ro",
        "-p", f"127.0.0.1:{port}:80",
        "--entrypoint", "/bin/sh", image, "/etc/nginx/app/entrypoint.sh",
    ).stdout.strip()  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url), timeout=30, interval=0.2, what="the nginx under test")
    return container, url


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_nginx/404", timeout=2).status_code == 404
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def nginx(compose_stack, replicas, tmp_path_factory) -> Iterator[str]:
    """Two upstream entries, both the scripted replicas, never marked down: a request nginx
    sends again always has a replica to go to."""
    target = f"host.docker.internal:{replicas.server_address[1]}"
    upstream = f"upstream api {{\n    server {target} max_fails=0;\n    server {target} max_fails=0;\n}}\n"
    container, url = start_nginx(compose_stack.env["NGINX_IMAGE"], upstream, tmp_path_factory.mktemp("nginx"))
    yield url
    subprocess.run(["docker", "rm", "-f", container], capture_output=True)


@pytest.mark.parametrize(
    ("method", "path", "keyed", "sent", "status"),
    [
        # The API dedupes these by their key: sent again, the caller gets the second answer.
        ("POST", "/api/items", True, 2, 201),
        ("POST", "/api/async/process", True, 2, 201),
        ("GET", "/api/items/x", False, 2, 200),
        # Not safe twice: the caller learns that no answer came, not a misleading 404.
        ("DELETE", "/api/items/x", False, 1, 502),
        ("DELETE", "/api/items/x", True, 1, 502),  # the API does not honour a key here
        ("PATCH", "/api/items/x", True, 1, 502),
        ("POST", "/api/items", False, 1, 502),
        ("DELETE", "/api/tasks/x", False, 1, 502),
    ],
)
def test_an_answer_lost_after_the_api_acted_is_sent_again_only_when_safe(
    nginx, replicas, method, path, keyed, sent, status
):
    path = f"{path}?lose={secrets.token_hex(4)}"
    headers = {"Idempotency-Key": secrets.token_hex(8)} if keyed else {}
    body = {"name": "x"} if method in ("POST", "PATCH") else None
    answer = httpx.request(method, nginx + path, headers=headers, json=body, timeout=15)
    assert len(replicas.calls[path]) == sent, replicas.calls[path]
    assert answer.status_code == status, answer.text
    if status == 502:
        assert answer.headers["content-type"] == "application/json" and answer.json()["detail"]
        assert answer.headers["x-request-id"]


def test_a_delete_that_no_replica_received_is_sent_to_the_next(compose_stack, replicas, tmp_path):
    """The first entry refuses the connection: nothing of the DELETE reached an API, so it goes on."""
    target = f"host.docker.internal:{replicas.server_address[1]}"
    refused_port = free_port()
    refused = f"host.docker.internal:{refused_port}"
    upstream = f"upstream api {{\n    server {refused} max_fails=0;\n    server {target} max_fails=0;\n}}\n"
    container, url = start_nginx(compose_stack.env["NGINX_IMAGE"], upstream, tmp_path)
    try:
        paths = [f"/api/items/x?answer={secrets.token_hex(4)}" for _ in range(2)]  # round robin: one meets the refusal
        answers = [httpx.delete(url + path, timeout=15) for path in paths]
        log = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    assert [answer.status_code for answer in answers] == [204, 204], [answer.text for answer in answers]
    assert [len(replicas.calls[path]) for path in paths] == [1, 1]
    upstreams = [json.loads(line)["upstream_addr"] for line in log.splitlines() if line.startswith("{")]
    # The refused entry, then the scripted one: "a, b" within one pass, or "a : b" over two.
    tried = [re.split(", | : ", addresses) for addresses in upstreams]
    assert any(len(t) == 2 and t[0].endswith(f":{refused_port}") for t in tried), upstreams


def test_a_create_that_no_replica_takes_leaves_the_connection_usable(compose_stack, tmp_path):
    """No replica up, a plain create whose body arrives after its headers (as a client's second
    write may): nginx answers 502 and the caller's keep-alive connection still takes its next
    request. Were the body streamed, nginx would answer before reading it and then close the
    connection that it had just announced as kept alive: the next request would meet a hang-up."""
    refused = f"host.docker.internal:{free_port()}"
    upstream = f"upstream api {{\n    server {refused} max_fails=0;\n}}\n"
    container, url = start_nginx(compose_stack.env["NGINX_IMAGE"], upstream, tmp_path)
    body = b'{"name": "x"}'
    head = (
        f"POST /api/items HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    try:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head)
            time.sleep(0.5)  # the body comes in a second write
            sock.sendall(body)
            first = read_response(sock)
            sock.sendall(b"GET /api/items/x HTTP/1.1\r\nHost: api\r\n\r\n")
            second = read_response(sock)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    assert first.startswith(b"HTTP/1.1 502") and b"keep-alive" in first.lower(), first
    assert second.startswith(b"HTTP/1.1 502"), f"the connection was closed after the first answer: {second!r}"


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response with a Content-Length (nginx's JSON pages), or what came before EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        if not (chunk := sock.recv(65536)):
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: *(\d+)", head, re.I)[1])
    while len(rest) < length:
        if not (chunk := sock.recv(65536)):
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest
