"""Container health check for every role of the image: `python -m app.healthcheck [api|worker|beat]`.

The role defaults to APP_ROLE (set per service by compose and Ansible), so the image's one
HEALTHCHECK fits the API, a worker and beat. Exit 0 healthy, 1 not.
"""

from __future__ import annotations

import os
import sys

# The standard library and this module only: a probe must not pay for the app's imports.
from app.core import liveness


def api() -> bool:
    import urllib.request  # here, not at the top: each role's check imports only what it needs

    port = os.environ.get("BIND", "0.0.0.0:8000").rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:  # noqa: S310
        return response.status == 200


def worker() -> bool:
    # A worker node on this host (celery@<host>, or a named one like heavy@<host>) is consuming:
    # its consumer touched its file lately. Nothing is sent to the broker.
    return bool(liveness.fresh_nodes(liveness.directory()))


def beat() -> bool:
    # Beat is healthy while it holds RedBeat's lock (a standby waiting for it is not): the lease
    # it renews as it extends the lock.
    return liveness.live(liveness.beat_lease(liveness.directory()))


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
