"""Security of the compose stack: non-root app containers, tier isolation, no default secrets."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from e2e_stack import SECRETS, sh

DATA_PORTS = {"mongodb": 27017, "redis": 6379, "rabbitmq": 5672}


@pytest.mark.parametrize("service", ["api", "worker", "beat"])
def test_app_containers_run_as_a_non_root_user(compose_stack, service):
    for container in compose_stack.containers(service):
        uid = subprocess.run(["docker", "exec", container, "id", "-u"], capture_output=True, text=True, timeout=30)
        assert uid.stdout.strip() not in ("", "0"), uid
        user = subprocess.run(
            ["docker", "inspect", "-f", "{{.Config.User}}", container], capture_output=True, text=True
        )
        assert user.stdout.strip() == "app"


def container_ip(container: str) -> str:
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    return subprocess.run(["docker", "inspect", "-f", fmt, container], capture_output=True, text=True).stdout.split()[0]


def test_the_load_balancer_cannot_reach_the_data_services(compose_stack):
    nginx = compose_stack.containers("nginx")[0]
    api = compose_stack.containers("api")[0]
    for service, port in DATA_PORTS.items():
        ip = container_ip(compose_stack.containers(service)[0])
        # Not even by name ...
        lookup = subprocess.run(["docker", "exec", nginx, "getent", "hosts", service], capture_output=True, timeout=30)
        assert lookup.returncode != 0, f"nginx resolves {service}"
        # ... nor by address.
        blocked = subprocess.run(
            ["docker", "exec", nginx, "curl", "-sS", "--max-time", "3", f"telnet://{ip}:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert blocked.returncode != 0, f"nginx reached {service} at {ip}:{port}"
        # The API tier does reach it (so the check above can fail).
        reached = subprocess.run(
            ["docker", "exec", api, "python", "-c", f"import socket; socket.create_connection(('{ip}', {port}), 3)"],
            capture_output=True,
            timeout=30,
        )
        assert reached.returncode == 0, f"the API cannot reach {service}"


def test_only_the_load_balancer_is_published(compose_stack):
    published = {}
    for service in compose_stack.services():
        for publisher in service.get("Publishers") or []:
            if publisher.get("PublishedPort"):
                published.setdefault(service["Service"], set()).add((publisher["URL"], publisher["TargetPort"]))
    assert set(published) == {"nginx", "rabbitmq"}, published
    # The management UI listens on the host's loopback interface only.
    assert {url for url, _ in published["rabbitmq"]} == {"127.0.0.1"}


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_start_without_each_secret(compose_stack, tmp_path, secret):
    lines = [line for line in compose_stack.env_file.read_text().splitlines() if not line.startswith(f"{secret}=")]
    env_file = tmp_path / "partial.env"
    env_file.write_text("\n".join(lines) + "\n")
    result = sh("docker", "compose", "-p", "e2e-config", "--env-file", str(env_file), "config", "-q", check=False)
    assert result.returncode != 0
    assert f"{secret} is not set: run make env" in result.stderr


def test_the_data_services_require_their_passwords(compose_stack):
    redis = compose_stack.containers("redis")[0]
    anonymous = subprocess.run(
        ["docker", "exec", "-e", "REDISCLI_AUTH=", redis, "redis-cli", "ping"], capture_output=True, text=True
    )
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr
    api = compose_stack.containers("api")[0]
    probe = (
        "import pymongo, kombu\n"
        "try:\n"
        "    pymongo.MongoClient('mongodb://mongodb:27017', serverSelectionTimeoutMS=3000).app.items.find_one()\n"
        "    print('mongo open')\n"
        "except pymongo.errors.OperationFailure: print('mongo refused')\n"
        "try:\n"
        "    kombu.Connection('amqp://guest:guest@rabbitmq:5672//', connect_timeout=3).connect()\n"
        "    print('guest accepted')\n"
        "except Exception: print('guest refused')\n"
    )
    result = subprocess.run(["docker", "exec", api, "python", "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["mongo", "refused", "guest", "refused"], result


def test_rabbitmq_management_ui_takes_the_app_user_not_guest(compose_stack):
    url = f"http://127.0.0.1:{compose_stack.env['RABBITMQ_UI_PORT']}/api/overview"
    user, password = compose_stack.env["RABBITMQ_USER"], compose_stack.env["RABBITMQ_PASSWORD"]
    assert httpx.get(url, auth=(user, password), timeout=10).status_code == 200
    assert httpx.get(url, auth=("guest", "guest"), timeout=10).status_code == 401
