"""The app's processes as every deployment runs them (docker-compose.yml, the Ansible roles
api, worker and beat, devstack): their commands, the queues a worker consumes, what their
containers share, and the environment contract between a deployment and the app.

The app's module paths (app.api.main, app.worker.celery_app, ...) are written here, and outside app/
only in files a test checks against this one (docker-compose.yml, Dockerfile.app).

Importing this module needs nothing but the standard library; the environment contract is
read from the app's Settings (pydantic-settings) when it is asked for.
"""

from __future__ import annotations

ASGI_APP = "app.api.main:app"
GUNICORN_CONFIG = "python:app.api.gunicorn_conf"
CELERY_APP = "app.worker.celery_app"
HEALTHCHECK_MODULE = "app.healthcheck"

API_COMMAND = ("gunicorn", "-c", GUNICORN_CONFIG, ASGI_APP)
# The app's task queues (app/worker/celery_app.py declares them; a test checks): every worker consumes all.
WORKER_QUEUES = ("default", "heavy")
WORKER_OPTIONS = ("--without-gossip", "-O", "fair")
BEAT_PIDFILE = "/tmp/celerybeat.pid"  # noqa: S108 - the container's private tmpfs

# Seconds a stopped container has to finish its work before it is killed (compose's
# stop_grace_period, Ansible's stop_timeout). The API's covers its drain (GUNICORN_DRAIN_SECONDS,
# 12 s) and the requests in flight. A worker's covers a task's hard time limit
# (TASK_TIME_LIMIT_SECONDS, 330 s by default: a test checks), so that stopping or updating a worker
# lets every task it runs finish instead of killing it to run again elsewhere. Raise it with that
# limit.
STOP_SECONDS = {"api": 30, "worker": 340}

# CPU weights (Docker's cpu_shares; 1024, the default, for every other container): where the
# workers share a host with the request path (compose on one machine), a task's CPU-bound work
# yields to nginx, the API and the data services, and gets all that they leave idle. On the
# fleet, workers have hosts of their own, and the same weights change nothing there.
CPU_SHARES = {"worker": 128}


def worker_command(concurrency: int | str, *, queues: str = ",".join(WORKER_QUEUES), node: str = "") -> list[str]:
    """A Celery worker: `node` names it (celery@<hostname> when empty)."""
    return [
        "celery",
        "-A",
        CELERY_APP,
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        *(["-n", node] if node else []),
        *WORKER_OPTIONS,
    ]


def beat_command(pidfile: str = BEAT_PIDFILE) -> list[str]:
    return ["celery", "-A", CELERY_APP, "beat", f"--pidfile={pidfile}"]


def healthcheck_command(role: str) -> list[str]:
    """The container health check of one role (api, worker, beat)."""
    return ["python", "-m", HEALTHCHECK_MODULE, role]


# What every container of the app image shares, in docker_container's terms (compose:
# read_only, tmpfs, cap_drop, security_opt, restart).
CONTAINER_HARDENING = {
    "read_only": True,
    "tmpfs": ["/tmp"],
    "cap_drop": ["ALL"],
    "security_opts": ["no-new-privileges:true"],
    "restart_policy": "unless-stopped",
}

# --- the environment contract ----------------------------------------------------------
# Read from the environment by the processes themselves rather than through Settings
# (gunicorn's configuration, the health check, the version): a test finds each one in app/.
PROCESS_VARIABLES = (
    "APP_ROLE",
    "APP_VERSION",
    "BIND",
    "FORWARDED_ALLOW_IPS",
    "GUNICORN_DRAIN_SECONDS",
    "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_KEEPALIVE",
    "GUNICORN_MAX_REQUESTS",
    "GUNICORN_MAX_REQUESTS_JITTER",
    "GUNICORN_TIMEOUT",
    "PROMETHEUS_MULTIPROC_DIR",
    "WEB_CONCURRENCY",
)


def settings_variables() -> list[str]:
    """Every variable the app's Settings reads: its fields, upper-cased."""
    from app.core.config import Settings

    return sorted(name.upper() for name in Settings.model_fields)


def required_variables() -> list[str]:
    """What every deployment must set: ENVIRONMENT, and each setting whose default production
    refuses (Settings.secret_problems, whose messages each start with the variable's name)."""
    from app.core.config import Settings

    known = set(settings_variables())
    refused = {problem.split()[0] for problem in Settings.model_construct(environment="production").secret_problems()}
    if not refused or not refused <= known:
        raise RuntimeError(f"Settings.secret_problems() no longer names variables first: {sorted(refused)}")
    return ["ENVIRONMENT", *sorted(refused)]


def variables() -> list[str]:
    """Every name an app container's environment may hold."""
    return sorted({*settings_variables(), *PROCESS_VARIABLES})
