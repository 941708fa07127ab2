"""Container health check for every role of the image: `python -m app.healthcheck [api|worker|beat]`.

The role defaults to APP_ROLE (set per service by compose and Ansible), so the image's one
HEALTHCHECK fits the API, a worker and beat. Exit 0 healthy, 1 not.
"""

from __future__ import annotations

import os
import sys


def api() -> bool:
    import urllib.request  # here, not at the top: each role's check imports only what it needs

    port = os.environ.get("BIND", "0.0.0.0:8000").rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:  # noqa: S310
        return response.status == 200


def worker() -> bool:
    # A worker node on this host (celery@<host>, or a named one like heavy@<host>) is consuming:
    # its consumer touched its file lately (app/worker/heartbeat.py). Nothing is sent to the broker.
    from app.core.config import get_settings
    from app.worker.heartbeat import fresh_nodes

    return bool(fresh_nodes(get_settings().worker_heartbeat_dir))


def beat() -> bool:
    # Beat is healthy when it holds RedBeat's lock (a standby waiting for it is not).
    from redbeat.schedulers import RedBeatConfig

    from app.worker.celery_app import celery_app

    return celery_app.backend.client.exists(RedBeatConfig(celery_app).lock_key) == 1


CHECKS = {"api": api, "worker": worker, "beat": beat}


def main() -> int:
    role = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("APP_ROLE", "api")
    if role not in CHECKS:
        print(f"unknown role {role!r}; expected one of {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    try:
        healthy = CHECKS[role]()
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        print(f"{role} unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"{role} {'healthy' if healthy else 'unhealthy'}")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
