"""The app's account on RabbitMQ, set up with the broker's administrator: `python -m app.worker.broker_setup`.

The administrator (the broker's default user) stays with operators. The app gets a user of its
own with every right on its own vhost and nothing else: no other vhost, no management tags.
User, password and vhost are read from CELERY_BROKER_URL, the URL the app connects with, so they
are written once. Idempotent, over the management HTTP API:

    RABBITMQ_MANAGEMENT_URL   e.g. http://rabbitmq:15672
    RABBITMQ_ADMIN_USER, RABBITMQ_ADMIN_PASSWORD
    CELERY_BROKER_URL         amqp://USER:PASSWORD@HOST:5672/VHOST
"""

from __future__ import annotations

import os
import sys
from urllib.parse import quote, unquote, urlsplit

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

READY_TIMEOUT_SECONDS = 90


class SetupError(Exception):
    pass


def app_account(broker_url: str) -> tuple[str, str, str]:
    """(user, password, vhost) of an amqp:// URL, the first of a cluster's (URLs separated by
    `;`); the vhost is the path (`/` when empty)."""
    parts = urlsplit(broker_url.split(";")[0])
    if parts.scheme not in ("amqp", "amqps") or not parts.username or not parts.password:
        raise SetupError("CELERY_BROKER_URL must look like amqp://USER:PASSWORD@HOST:5672/VHOST")
    vhost = unquote(parts.path[1:]) or "/"
    return unquote(parts.username), unquote(parts.password), vhost


def ensure_app_account(management_url: str, admin: tuple[str, str], broker_url: str) -> list[str]:
    """Create or update the app's vhost, user and permissions; returns what it did."""
    user, password, vhost = app_account(broker_url)
    if user == admin[0]:
        raise SetupError(f"the app's user ({user}) must not be the administrator")
    done = []
    with httpx.Client(base_url=management_url, auth=admin, timeout=10) as client:
        # The management API answers a moment after the broker itself does.
        for attempt in Retrying(
            stop=stop_after_delay(READY_TIMEOUT_SECONDS),
            wait=wait_fixed(1),
            retry=retry_if_exception_type(httpx.TransportError),
            reraise=True,
        ):
            with attempt:
                overview = client.get("/api/overview")
        if overview.status_code == 401:
            raise SetupError("the administrator's user or password is wrong (RABBITMQ_ADMIN_USER/PASSWORD)")
        overview.raise_for_status()
        vhost_path = quote(vhost, safe="")
        steps = [
            (f"vhost {vhost}", f"/api/vhosts/{vhost_path}", {}),
            (f"user {user}", f"/api/users/{quote(user, safe='')}", {"password": password, "tags": ""}),
            (
                f"{user}'s rights on {vhost}",
                f"/api/permissions/{vhost_path}/{quote(user, safe='')}",
                {"configure": ".*", "write": ".*", "read": ".*"},
            ),
        ]
        for what, path, body in steps:
            response = client.put(path, json=body)
            if response.status_code not in (201, 204):
                raise SetupError(f"{what}: HTTP {response.status_code} {response.text[:200]}")
            done.append(f"{what} {'created' if response.status_code == 201 else 'up to date'}")
    return done


def main() -> int:
    try:
        names = ("RABBITMQ_MANAGEMENT_URL", "RABBITMQ_ADMIN_USER", "RABBITMQ_ADMIN_PASSWORD", "CELERY_BROKER_URL")
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            raise SetupError(f"set {', '.join(missing)}")
        done = ensure_app_account(
            os.environ["RABBITMQ_MANAGEMENT_URL"],
            (os.environ["RABBITMQ_ADMIN_USER"], os.environ["RABBITMQ_ADMIN_PASSWORD"]),
            os.environ["CELERY_BROKER_URL"],
        )
    except (SetupError, httpx.HTTPError) as error:
        print(f"broker setup failed: {error}", file=sys.stderr)
        return 1
    print("broker setup: " + "; ".join(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
