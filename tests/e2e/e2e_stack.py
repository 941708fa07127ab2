"""The e2e compose stack as a Python object: compose commands, containers, HTTP clients."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from helpers import wait_for

from devstack.servers import REPO_ROOT

PROJECT = "e2e"
SECRETS = (
    "MONGO_ROOT_PASSWORD",
    "MONGO_APP_PASSWORD",
    "REDIS_PASSWORD",
    "REDIS_ADMIN_PASSWORD",
    "RABBITMQ_ADMIN_PASSWORD",
    "RABBITMQ_PASSWORD",
    "API_KEYS",
)
REPORT: list[str] = []
# The services that keep running, and how many containers each (rabbitmq-setup runs once).
RUNNING = {"nginx": 1, "api": 3, "api-standby": 1, "worker": 3, "beat": 1, "mongodb": 1, "redis": 1, "rabbitmq": 1}


# Only these pass from the test process: compose would prefer any other variable of the
# process environment (the unit suite's settings, for one) to the stack's env file.
PASSED_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "DOCKER_HOST", "DOCKER_CONFIG", "PIP_CA_BUNDLE", "DEBIAN_MIRROR")


def sh(*command: str, timeout: float = 900, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env={**clean, **(env or {})}
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


@dataclass
class ComposeStack:
    env_file: Path
    env: dict[str, str]
    http_port: int
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def api_key(self) -> str:
        return self.env["API_KEYS"].split(",")[0]

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        return sh(
            "docker",
            "compose",
            "-p",
            PROJECT,
            "--env-file",
            str(self.env_file),
            *args,
            timeout=timeout,
            check=check,
            env=self.extra_env,
        )

    def containers(self, service: str | None = None) -> list[str]:
        """The running containers of a service, or of every service."""
        ids = self.compose("ps", "-q", *([service] if service else [])).stdout.split()
        return sorted(ids)

    def services(self) -> list[dict]:
        output = self.compose("ps", "--format", "json").stdout.strip()
        if output.startswith("["):
            return json.loads(output)
        return [json.loads(line) for line in output.splitlines() if line.strip()]

    def wait_healthy(self, timeout: float = 180) -> None:
        def healthy() -> bool:
            services = self.services()
            counts: dict[str, int] = {}
            for service in services:
                counts[service["Service"]] = counts.get(service["Service"], 0) + 1
            return counts == RUNNING and all(s["Health"] == "healthy" for s in services)

        wait_for(healthy, timeout=timeout, interval=2, what="every service healthy")

    def active_tasks(self) -> dict[str, list[dict]]:
        """Celery's `inspect active` (every worker answers a broadcast): {node name: its tasks}.
        Asked from the standby API replica, which has the app and the broker's address and is
        idle, rather than from a worker busy with the very tasks this looks for."""
        standby = self.containers("api-standby")[0]
        command = ["celery", "-A", "app.worker.celery_app", "inspect", "active", "--json", "-t", "3"]
        result = subprocess.run(["docker", "exec", standby, *command], capture_output=True, text=True, timeout=60)
        output = result.stdout.strip().splitlines()
        return json.loads(output[-1]) if output else {}

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=15, **kwargs)

    def writer(self) -> httpx.Client:
        return self.client(headers={"X-API-Key": self.api_key})


def nofile_limit() -> dict[str, str]:
    # nginx asks for 65535 open files; a daemon that allows fewer would refuse the container.
    try:
        pid = subprocess.run(["pgrep", "-o", "dockerd"], capture_output=True, text=True).stdout.strip()
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                hard = line.split()[4]
                if hard.isdigit() and int(hard) < 65535:
                    return {"NGINX_NOFILE": hard}
    except (OSError, ValueError):
        pass
    return {}


def task_result(client: httpx.Client, task_id: str, timeout: float = 120) -> dict:
    """Poll a task through the API until it reaches a final state."""

    def final():
        body = client.get(f"/api/tasks/{task_id}").json()
        return body if body["state"] in ("SUCCESS", "FAILURE", "REVOKED") else None

    return wait_for(final, timeout=timeout, interval=0.5, what=f"task {task_id}")
