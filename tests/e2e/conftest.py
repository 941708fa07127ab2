"""The compose stack, brought up from a clean state for the e2e session (project `e2e`).

A Docker engine is installed and started when none runs (scripts/docker-engine.sh); images
come from the registry, or are built from Debian packages where none is reachable
(scripts/ensure-images.sh). The stack gets an env file of its own with generated secrets.
Set E2E_HTTP_PORT to move nginx off port 80; E2E_KEEP=1 leaves the stack running.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from e2e_stack import REPORT, ComposeStack, nofile_limit, read_env, sh

from devstack.servers import free_port


@pytest.fixture(scope="session")
def compose_stack(tmp_path_factory) -> Iterator[ComposeStack]:
    sh("scripts/docker-engine.sh")
    env_file = tmp_path_factory.mktemp("e2e") / "e2e.env"
    sh("python3", "scripts/envfile.py", "generate", "--file", str(env_file))
    http_port = int(os.environ.get("E2E_HTTP_PORT", "80"))
    with env_file.open("a") as f:
        f.write(f"HTTP_PORT={http_port}\nHTTPS_PORT={free_port()}\nRABBITMQ_UI_PORT={free_port()}\n")
        # Long enough rounds that a 1000-iteration task outlives a worker's stop timeout.
        f.write("CALLOUT_ALLOWED_HOSTS=\nCOMPOSE_PROJECT_NAME=e2e\nPROCESS_ROUNDS_PER_ITERATION=100000\n")
        # Workers recycled every few hundred requests, all through the suite (the chaos included).
        f.write("GUNICORN_MAX_REQUESTS=300\nGUNICORN_MAX_REQUESTS_JITTER=50\n")
        # A network of its own, apart from a development stack's on the same host.
        f.write("FRONTEND_SUBNET=172.28.232.0/24\nBACKEND_SUBNET=172.28.233.0/24\n")
    started = time.monotonic()
    sh("scripts/ensure-images.sh", str(env_file), timeout=1800)
    REPORT.append(f"images ready in {time.monotonic() - started:.0f}s")
    stack = ComposeStack(env_file, read_env(env_file), http_port, nofile_limit())

    stack.compose("down", "-v", "--remove-orphans")
    started = time.monotonic()
    stack.compose("up", "-d", "--build", "--wait", timeout=1800)
    REPORT.append(f"stack up (build included) in {time.monotonic() - started:.0f}s")
    images = {stack.env[name] for name in ("MONGO_IMAGE", "REDIS_IMAGE", "RABBITMQ_IMAGE", "NGINX_IMAGE", "APP_IMAGE")}
    for image in sorted(images):
        size = sh("docker", "image", "inspect", "-f", "{{.Size}}", image).stdout.strip()
        REPORT.append(f"image {image}: {int(size) / 1e6:.0f} MB")
    yield stack
    if os.environ.get("E2E_KEEP") != "1":
        stack.compose("down", "-v", "--remove-orphans", timeout=300, check=False)


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("compose stack")
        for line in REPORT:
            terminalreporter.write_line(line)


# Every e2e test after the lab (which sorts itself first), so that the compose stack does not
# idle beside the lab's nine hosts; the fresh stack's own checks first, the destructive ones last.
ORDER = [
    "test_stack.py",
    "test_nginx_retries.py",
    "test_shedding.py",
    "test_security.py",
    "test_bench.py",
    "test_chaos.py",
    "test_update.py",
    "test_resilience.py",
]


def pytest_collection_modifyitems(items) -> None:
    def key(item) -> int:
        name = item.path.name
        return ORDER.index(name) if item.path.parent.name == "e2e" and name in ORDER else -1

    items.sort(key=key)
    for item in items:
        if item.path.parent.name == "e2e":
            item.add_marker(pytest.mark.e2e)
            # The first test's setup builds every image and brings the stack up.
            item.add_marker(pytest.mark.timeout(1800))
