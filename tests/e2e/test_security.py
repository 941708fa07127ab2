"""Security of the compose stack: non-root app containers, tier isolation, no default secrets."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest
from e2e_stack import SECRETS, sh
from helpers import wait_for
from hostile import IPV6_PUBLIC, IPV6_REFUSED

from devstack.servers import REPO_ROOT

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
    user, password = compose_stack.env["RABBITMQ_USER"], compose_stack.env["RABBITMQ_PASSWORD"]
    probe = (
        "import pymongo, kombu\n"
        "def amqp(url):\n"
        "    try:\n"
        "        kombu.Connection(url, connect_timeout=3).connect()\n"
        "        return 'accepted'\n"
        "    except Exception: return 'refused'\n"
        "try:\n"
        "    pymongo.MongoClient('mongodb://mongodb:27017', serverSelectionTimeoutMS=3000).app.items.find_one()\n"
        "    print('mongo open')\n"
        "except pymongo.errors.OperationFailure: print('mongo refused')\n"
        "print('guest', amqp('amqp://guest:guest@rabbitmq:5672//'))\n"
        # The app's user has its own vhost, and no other.
        f"print('app/app', amqp('amqp://{user}:{password}@rabbitmq:5672/app'))\n"
        f"print('app/default', amqp('amqp://{user}:{password}@rabbitmq:5672//'))\n"
    )
    result = subprocess.run(["docker", "exec", api, "python", "-c", probe], capture_output=True, text=True, timeout=60)
    expected = ["mongo", "refused", "guest", "refused", "app/app", "accepted", "app/default", "refused"]
    assert result.stdout.split() == expected, result


def test_the_apps_redis_user_cannot_reconfigure_or_flush(compose_stack):
    """The API's own REDIS_URL (the app's user) reads and writes keys, and nothing more."""
    probe = (
        "import os, redis\n"
        "client = redis.Redis.from_url(os.environ['REDIS_URL'], socket_timeout=3)\n"
        "client.set('acl-probe', 'kept', ex=60)\n"
        "for command in (('CONFIG', 'SET', 'maxmemory', '1mb'), ('FLUSHALL',), ('ACL', 'LIST'), ('KEYS', '*')):\n"
        "    try:\n"
        "        client.execute_command(*command)\n"
        "        print(command[0], 'accepted')\n"
        "    except redis.exceptions.NoPermissionError:\n"
        "        print(command[0], 'refused')\n"
        "print('kept', client.get('acl-probe') == b'kept')\n"
    )
    api = compose_stack.containers("api")[0]
    result = subprocess.run(["docker", "exec", api, "python", "-c", probe], capture_output=True, text=True, timeout=60)
    expected = ["CONFIG", "refused", "FLUSHALL", "refused", "ACL", "refused", "KEYS", "refused", "kept", "True"]
    assert result.stdout.split() == expected, result


def test_no_secret_is_on_a_command_line(compose_stack):
    """What `ps` or `docker inspect` shows of each container's command holds no secret (environment
    variables and files hold them)."""
    secrets = {name: compose_stack.env[name] for name in SECRETS}
    for container in compose_stack.containers():
        inspected = json.loads(sh("docker", "inspect", container).stdout)[0]
        command = json.dumps([inspected["Path"], inspected["Args"], inspected["Config"]["Cmd"]])
        shown = [name for name, value in secrets.items() if value in command]
        assert not shown, f"{container}'s command holds {shown}"


def test_the_images_python_refuses_the_same_ipv6_addresses(compose_stack):
    """The call-out check runs on the image's Python, whose `is_global` may differ from the tests'."""
    worker = compose_stack.containers("worker")[0]
    probe = (
        "import ipaddress, sys\n"
        "from app.worker.callout import internal\n"
        "print(sys.version_info[:3], [internal(ipaddress.ip_address(a)) for a in sys.argv[1:]])\n"
    )
    addresses = IPV6_REFUSED + IPV6_PUBLIC
    result = subprocess.run(
        ["docker", "exec", worker, "python", "-c", probe, *addresses], capture_output=True, text=True, timeout=60
    )
    expected = [True] * len(IPV6_REFUSED) + [False] * len(IPV6_PUBLIC)
    assert result.stdout.strip().endswith(str(expected)), result


def test_rabbitmq_management_ui_takes_the_administrator_only(compose_stack):
    url = f"http://127.0.0.1:{compose_stack.env['RABBITMQ_UI_PORT']}/api/overview"
    admin = compose_stack.env["RABBITMQ_ADMIN_USER"], compose_stack.env["RABBITMQ_ADMIN_PASSWORD"]
    app_user = compose_stack.env["RABBITMQ_USER"], compose_stack.env["RABBITMQ_PASSWORD"]
    assert httpx.get(url, auth=admin, timeout=10).status_code == 200
    assert httpx.get(url, auth=app_user, timeout=10).status_code == 401
    assert httpx.get(url, auth=("guest", "guest"), timeout=10).status_code == 401


def api_log_line(compose_stack, request_id: str) -> dict:
    def line() -> dict | None:
        log = compose_stack.compose("logs", "--no-log-prefix", "api", "api-standby").stdout
        return next(
            (json.loads(entry) for entry in log.splitlines() if request_id in entry and '"app.access"' in entry), None
        )

    return wait_for(line, timeout=15, interval=0.5, what=f"the API's access line for {request_id}")


def test_the_client_address_cannot_be_forged(compose_stack):
    # Through nginx: a client's own X-Forwarded-For is replaced by the address it came from.
    with compose_stack.client() as client:
        # A path that is not found: only failed requests get an access line (ACCESS_LOG=errors).
        client.get("/nowhere", headers={"X-Forwarded-For": "6.6.6.6", "X-Request-ID": "forged-through-nginx"})
    assert api_log_line(compose_stack, "forged-through-nginx")["client"] not in ("6.6.6.6", "")
    # Around nginx, from the backend network: the API trusts X-Forwarded-For from nginx's network only.
    worker = compose_stack.containers("worker")[0]
    probe = (
        "import urllib.error, urllib.request\n"
        "request = urllib.request.Request('http://api:8000/nowhere', "
        "headers={'X-Forwarded-For': '6.6.6.6', 'X-Request-ID': 'forged-around-nginx'})\n"
        "try:\n"
        "    urllib.request.urlopen(request, timeout=5)\n"
        "except urllib.error.HTTPError as error:\n"
        "    assert error.code == 404, error\n"
    )
    subprocess.run(["docker", "exec", worker, "python", "-c", probe], check=True, capture_output=True, timeout=60)
    assert api_log_line(compose_stack, "forged-around-nginx")["client"] == container_ip(worker)


def test_compose_runs_as_development_unless_told(compose_stack):
    api = compose_stack.containers("api")[0]
    assert sh("docker", "exec", api, "printenv", "ENVIRONMENT").stdout.strip() == "development"


@pytest.mark.parametrize(
    ("settings", "starts"),
    [
        ({"ENVIRONMENT": "production"}, False),
        ({"ENVIRONMENT": "production", "ALLOW_PLAIN_HTTP": "true"}, True),  # TLS ends before it: said so
        ({"ENVIRONMENT": "development"}, True),
    ],
)
def test_a_production_load_balancer_without_a_certificate_does_not_start(compose_stack, settings, starts):
    """nginx as compose runs it, with no certificate mounted: plain HTTP is for development."""
    variables = [part for name, value in settings.items() for part in ("-e", f"{name}={value}")]
    container = sh(
        "docker", "run", "-d", *variables, "-v", f"{REPO_ROOT}/nginx:/etc/nginx/app:ro",
        "--entrypoint", "/bin/sh", compose_stack.env["NGINX_IMAGE"], "/etc/nginx/app/entrypoint.sh",
    ).stdout.strip()  # fmt: skip
    try:
        # Running nginx has written its configuration; a refusal has exited.
        def settled() -> dict | None:
            state = json.loads(sh("docker", "inspect", "-f", "{{json .State}}", container).stdout)
            configured = sh("docker", "exec", container, "ls", "/etc/nginx/enabled", check=False).stdout
            return state if not state["Running"] or "http.conf" in configured else None

        state = wait_for(settled, timeout=30, interval=0.5, what="nginx started or refused")
        logs = sh("docker", "logs", container).stderr
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    if starts:
        assert state["Running"], logs
    else:
        assert not state["Running"] and state["ExitCode"] == 1, state
        assert "ENVIRONMENT=production serves HTTPS only" in logs and "ALLOW_PLAIN_HTTP=true" in logs, logs
