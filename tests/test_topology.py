"""One source of truth: the facts in topology/ (Python) and every file that repeats them.

Ansible's copy is generated (ansible/group_vars/all/topology.yml); the files that cannot be
generated or import Python (docker-compose.yml, nginx/, Dockerfile.app, app/, .env.example)
are checked here against the facts. No server is needed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from app.core.config import Settings
from devstack.servers import ApiServer
from devstack.stack import Stack
from topology import API_PORT, REDIS_APP_USER, REDIS_SENTINEL_MASTER, REDIS_USERS, SECRETS, TIERS
from topology import ansible as ansible_facts
from topology.app import (
    API_COMMAND,
    ASGI_APP,
    CELERY_APP,
    CONTAINER_HARDENING,
    GUNICORN_CONFIG,
    HEALTHCHECK_MODULE,
    PROCESS_VARIABLES,
    WORKER_QUEUES,
    beat_command,
    healthcheck_command,
    required_variables,
    settings_variables,
    variables,
    worker_command,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
ANSIBLE = REPO_ROOT / "ansible"
GROUP_VARS = yaml.safe_load((ANSIBLE / "group_vars/all/main.yml").read_text())
# The compose services that run the app, and the role (APP_ROLE) of each.
APP_SERVICES = {"api": "api", "api-standby": "api", "worker": "worker", "beat": "beat"}


def read(path: str) -> str:
    return (REPO_ROOT / path).read_text()


def role_tasks(role: str) -> list[dict]:
    return yaml.safe_load((ANSIBLE / "roles" / role / "tasks/main.yml").read_text())


def app_container_call(role: str) -> dict:
    """The variables the role hands to the role app_container."""
    (call,) = [t for t in role_tasks(role) if t.get("ansible.builtin.include_role", {}).get("name") == "app_container"]
    return call["vars"]


def test_ansible_copy_is_current():
    committed = ansible_facts.PATH.read_text()
    assert committed == ansible_facts.render(), (
        f"ansible/group_vars/all/topology.yml is stale: run {ansible_facts.COMMAND} (or make topology)"
    )


# --- the environment contract ------------------------------------------------------------


def contract_problems(where: str, names: set[str], allowed: list[str]) -> list[str]:
    problems = []
    if missing := sorted(set(required_variables()) - names):
        problems.append(f"{where} does not set {missing}")
    if unknown := sorted(names - set(allowed)):
        problems.append(f"{where} sets {unknown}, which the app does not read")
    return problems


def test_the_required_variables_are_exactly_what_production_needs(tmp_path, monkeypatch):
    for name in settings_variables():  # the suite's own environment would take precedence
        monkeypatch.delenv(name, raising=False)
    deployed = {**Stack(tmp_path).env, "ENVIRONMENT": "production"}
    required = {name.lower(): deployed[name] for name in required_variables()}
    Settings(_env_file=None, **required)  # enough
    for name in required_variables():
        if name != "ENVIRONMENT":
            with pytest.raises(ValidationError, match=name):  # and each one needed
                Settings(_env_file=None, **{k: v for k, v in required.items() if k != name.lower()})


def test_compose_sets_the_contract():
    problems = contract_problems("docker-compose.yml x-app-env", set(COMPOSE["x-app-env"]), settings_variables())
    for service, role in APP_SERVICES.items():
        environment = COMPOSE["services"][service]["environment"]
        problems += contract_problems(f"docker-compose.yml {service}", set(environment), variables())
        if environment.get("APP_ROLE") != role:
            problems.append(f"docker-compose.yml {service}: APP_ROLE is {environment.get('APP_ROLE')!r}, not {role}")
    assert not problems


def test_ansible_sets_the_contract():
    problems = contract_problems(
        "app_environment (group_vars)", set(GROUP_VARS["app_environment"]), settings_variables()
    )
    for role in ("api", "worker", "beat"):
        extra = set(app_container_call(role).get("app_container_env", {}))
        if unknown := sorted(extra - set(PROCESS_VARIABLES)):
            problems.append(f"role {role} adds {unknown}, which the app's processes do not read")
    assert not problems


def test_devstack_sets_the_contract(tmp_path):
    stack = Stack(tmp_path)
    problems = contract_problems("devstack Stack.env", set(stack.env), settings_variables())
    # What the API server adds for itself (its address, its worker processes, ...).
    added = set(ApiServer(tmp_path / "api", stack.env).environment()) - {*os.environ, *stack.env, "PYTHONPATH"}
    assert "BIND" in added
    if unknown := sorted(added - set(PROCESS_VARIABLES)):
        problems.append(f"devstack ApiServer sets {unknown}, which the app's processes do not read")
    assert not problems


def test_env_example_names_only_what_the_app_reads():
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", read(".env.example"), re.M))
    assert not contract_problems(".env.example", documented, variables())


def test_the_process_variables_are_read_by_the_app():
    source = "\n".join(path.read_text() for path in (REPO_ROOT / "app").rglob("*.py"))
    assert [name for name in PROCESS_VARIABLES if f'"{name}"' not in source] == []


# --- the app's processes -----------------------------------------------------------------


def test_the_commands_name_modules_that_exist():
    module, attribute = ASGI_APP.split(":")
    assert getattr(importlib.import_module(module), attribute)
    assert importlib.util.find_spec(GUNICORN_CONFIG.removeprefix("python:"))
    assert importlib.util.find_spec(HEALTHCHECK_MODULE)
    celery_app = importlib.import_module(CELERY_APP).celery_app
    # A worker consumes every task queue the app declares.
    assert sorted(WORKER_QUEUES) == sorted(queue.name for queue in celery_app.conf.task_queues)


def test_compose_runs_the_same_commands():
    services = COMPOSE["services"]
    worker = services["worker"]["command"]
    concurrency = worker[worker.index("-c") + 1]
    assert services["api"]["command"] == services["api-standby"]["command"] == list(API_COMMAND)
    assert worker == worker_command(concurrency)
    assert services["beat"]["command"] == beat_command()
    for service, role in APP_SERVICES.items():
        assert services[service]["healthcheck"]["test"] == ["CMD", *healthcheck_command(role)], service


def test_the_apps_sentinel_master_is_the_one_ansibles_sentinels_watch():
    # Ansible sets REDIS_SENTINEL_MASTER too; the default is what a hand-written .env gets.
    assert Settings.model_fields["redis_sentinel_master"].default == REDIS_SENTINEL_MASTER


def test_compose_gives_redis_topologys_users():
    """Each user with its rules and its secret (the .env variable is the secret's name in
    capitals); the app connects as its own user."""
    variable = "${{{0}:?{0} is not set: run make env}}"
    expected = [
        f"user {user} on >{variable.format(spec['password'].upper())} {spec['rules']}"
        for user, spec in REDIS_USERS.items()
    ]
    assert COMPOSE["configs"]["redis-users"]["content"].splitlines() == expected
    for name in ("REDIS_URL", "CELERY_RESULT_BACKEND"):
        assert COMPOSE["x-app-env"][name].startswith(f"redis://{REDIS_APP_USER}:{variable.format('REDIS_PASSWORD')}@")
    assert {spec["password"] for spec in REDIS_USERS.values()} <= set(SECRETS)


def test_the_image_runs_the_api_and_checks_its_role():
    dockerfile = read("Dockerfile.app")
    assert json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M)[1]) == list(API_COMMAND)
    assert json.loads(re.search(r"^HEALTHCHECK .* CMD (\[.*\])$", dockerfile, re.M)[1]) == [
        "python",
        "-m",
        HEALTHCHECK_MODULE,
    ]


def test_ansible_roles_run_the_commands_through_app_container():
    for role in ("api", "worker", "beat"):
        call = app_container_call(role)
        assert call["app_container_role"] == role
        command = call["app_container_command"]
        if role == "api":  # through api_command, which a rollback sets to the previous container's
            defaults = yaml.safe_load((ANSIBLE / "roles/api/defaults/main.yml").read_text())
            assert command == "{{ api_command }}"
            command = defaults["api_command"]
        assert command == f"{{{{ app_commands.{role} }}}}"
        # The container itself, its hardening with it, is the role app_container's alone.
        assert not [t for t in role_tasks(role) if "community.docker.docker_container" in t], role


def test_compose_hardens_app_containers_the_same_way():
    app = COMPOSE["x-app"]
    compose = {
        "read_only": app.get("read_only"),
        "tmpfs": app.get("tmpfs"),
        "cap_drop": app.get("cap_drop"),
        "security_opts": app.get("security_opt"),
        "restart_policy": app.get("restart"),
    }
    assert compose == CONTAINER_HARDENING


# --- ports, tiers, secrets ---------------------------------------------------------------

# Where the API's port is written in files that cannot import it.
API_PORT_LITERALS = {
    "Dockerfile.app": [r"BIND=0\.0\.0\.0:(\d+)", r"^EXPOSE (\d+)$"],
    ".env.example": [r"^BIND=0\.0\.0\.0:(\d+)$"],
    "app/api/gunicorn_conf.py": [r'"BIND", "0\.0\.0\.0:(\d+)"'],
    "app/healthcheck.py": [r'"BIND", "0\.0\.0\.0:(\d+)"'],
    "nginx/upstream.conf": [r"^\s*server [\w.-]+:(\d+)"],
    "benchmarks/nginx-bench.conf": [r"^\s*server [\w.-]+:(\d+)"],
    "benchmarks/compose.bench.yml": [r'"--port", "(\d+)"'],
}


@pytest.mark.parametrize("path", sorted(API_PORT_LITERALS))
def test_the_api_port_literals_match(path):
    text = read(path)
    for pattern in API_PORT_LITERALS[path]:
        ports = re.findall(pattern, text, re.M)
        assert ports, f"{path}: {pattern} no longer matches; where is the API's port written now?"
        assert {int(port) for port in ports} == {API_PORT}, f"{path}: {pattern} finds {ports}, not {API_PORT}"


def source_files() -> list[Path]:
    """Where the facts must be read, not retyped: Ansible (but its generated copy), infra,
    devstack, fleet."""
    paths = [*ANSIBLE.rglob("*.yml"), *ANSIBLE.rglob("*.j2"), *ANSIBLE.rglob("*.py")]
    for directory in ("infra", "devstack", "fleet"):
        paths += (REPO_ROOT / directory).rglob("*.py")
    return sorted(path for path in paths if path != ansible_facts.PATH)


def test_the_api_port_is_not_retyped():
    found = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for path in source_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(rf"\b{API_PORT}\b", line)
    ]
    assert found == []


def test_the_tier_list_is_not_retyped():
    name = "|".join(TIERS)
    listing = re.compile(rf"""['"]?\b(?:{name})\b['"]?(?:\s*,\s*['"]?\b(?:{name})\b['"]?)+""")
    found = [
        f"{path.relative_to(REPO_ROOT)}: {match[0]}"
        for path in source_files()
        for match in listing.finditer(path.read_text())
        if set(re.findall(name, match[0])) == set(TIERS)
    ]
    assert found == []


def test_ansible_uses_exactly_the_stack_secrets():
    text = "\n".join(path.read_text() for path in source_files() if path.suffix in (".yml", ".j2"))
    used = set(re.findall(r"app_secrets\.(\w+)", text))
    assert used <= set(SECRETS), f"ansible uses secrets the stack does not make: {sorted(used - set(SECRETS))}"
    assert set(SECRETS) <= used, f"the stack makes secrets ansible never uses: {sorted(set(SECRETS) - used)}"


def test_nginx_keeps_the_request_ids_the_api_keeps():
    """nginx puts its request id on every answer, the API's included; the two must agree on which
    caller's ids to keep, or a log line and the answer would name different ids."""
    from app.api.middleware import _VALID_REQUEST_ID

    conf = (REPO_ROOT / "nginx/nginx.conf").read_text()
    kept = re.search(r'map \$http_x_request_id \$req_id \{\s*"~([^"]+)" \$http_x_request_id;', conf)
    assert kept, "nginx.conf: the $req_id map's first entry keeps the caller's id by a pattern"
    assert kept[1] == _VALID_REQUEST_ID.pattern


def test_nginx_sends_again_only_the_routes_whose_key_the_api_honours():
    """nginx's $keyed_submit (nginx.conf) names the routes that take an Idempotency-Key."""
    from app.api.main import app

    conf = (REPO_ROOT / "nginx/nginx.conf").read_text()
    pattern = re.search(r'map "\$request_method:\$uri:\$http_idempotency_key" \$keyed_submit \{\s*"~([^"]+)" 1;', conf)
    assert pattern, "nginx.conf: the $keyed_submit map"
    operations = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path), operation)
        for path, methods in app.openapi()["paths"].items()
        for method, operation in methods.items()
    ]
    keyed = {
        (method, path)
        for method, path, operation in operations
        if any(p["in"] == "header" and p["name"].lower() == "idempotency-key" for p in operation.get("parameters", []))
    }
    assert ("POST", "/api/items") in keyed, keyed  # the OpenAPI document names the header
    for method, path, _ in operations:
        assert bool(re.search(pattern[1], f"{method}:{path}:a-key")) == ((method, path) in keyed), (method, path)


# --- stop timeouts, images, the version --------------------------------------------------


def test_stopping_a_worker_lets_its_tasks_finish():
    from topology.app import STOP_SECONDS

    limit = Settings.model_fields["task_time_limit_seconds"].default
    assert STOP_SECONDS["worker"] > limit, "a worker's stop timeout must outlast a task's hard time limit"
    grace = {service: COMPOSE["services"][service].get("stop_grace_period") for service in ("api", "worker")}
    assert grace == {role: f"{seconds}s" for role, seconds in STOP_SECONDS.items()}
    ansible = {role: yaml.safe_load(read(f"ansible/roles/{role}/defaults/main.yml"))[f"{role}_stop_timeout"]
               for role in STOP_SECONDS}  # fmt: skip
    assert ansible == {role: f"{{{{ app_stop_seconds.{role} }}}}" for role in STOP_SECONDS}


def test_the_workers_cpu_weight_is_written_once():
    from topology.app import CPU_SHARES

    assert {service: COMPOSE["services"][service].get("cpu_shares") for service in CPU_SHARES} == CPU_SHARES
    # Every other service keeps Docker's default weight, so the workers yield to all of them.
    assert [name for name, service in COMPOSE["services"].items() if "cpu_shares" in service] == list(CPU_SHARES)
    ansible = {role: yaml.safe_load(read(f"ansible/roles/{role}/defaults/main.yml"))[f"{role}_cpu_shares"]
               for role in CPU_SHARES}  # fmt: skip
    assert ansible == {role: f"{{{{ app_cpu_shares.{role} }}}}" for role in CPU_SHARES}


def test_the_images_are_written_once():
    from topology import IMAGE_VARIABLES, IMAGES

    defaults = re.findall(r"\$\{(\w+_IMAGE):-([^}]+)\}", read("docker-compose.yml"))
    assert {variable: image for variable, image in defaults if variable != "APP_IMAGE"} == {
        IMAGE_VARIABLES[name]: image for name, image in IMAGES.items()
    }
    assert re.search(r"^ARG PYTHON_IMAGE=(\S+)$", read("Dockerfile.app"), re.M)[1] == IMAGES["python"]
    assert "default_images" not in GROUP_VARS  # topology.yml has them


def test_the_version_is_written_once():
    from topology import VERSION

    assert re.search(r'or "([^"]+)"$', read("app/__init__.py"), re.M)[1] == VERSION
    assert re.search(r"^ARG VERSION=(\S+)$", read("Dockerfile.app"), re.M)[1] == VERSION
    compose = read("docker-compose.yml")
    assert set(re.findall(r"\$\{APP_VERSION:-([^}]+)\}", compose)) == {VERSION}
    assert set(re.findall(r"\$\{APP_IMAGE:-[\w.-]+:([^}]+)\}", compose)) == {VERSION}
    assert re.search(r"app_image: \S+:(\S+)$", read("ansible/inventory/example.yml"), re.M)[1] == VERSION
    assert 'version = {attr = "topology.VERSION"}' in read("pyproject.toml")
