"""The app's RabbitMQ account: its own user with rights on its own vhost and nothing more,
set up by app/worker/broker_setup.py with the administrator's account (as compose and make run do)."""

from __future__ import annotations

import os
import subprocess
import sys

import amqp
import httpx
import pytest

from devstack.servers import REPO_ROOT


def connect(stack, user: str, password: str, vhost: str) -> None:
    connection = amqp.Connection(
        f"127.0.0.1:{stack.rabbitmq.port}", userid=user, password=password, virtual_host=vhost, connect_timeout=3
    )
    connection.connect()
    connection.close()


def test_the_app_user_reaches_its_vhost_and_nothing_else(stack):
    broker = stack.rabbitmq
    connect(stack, broker.user, broker.password, broker.vhost)
    with pytest.raises(amqp.exceptions.NotAllowed, match="access to vhost '/' refused"):
        connect(stack, broker.user, broker.password, "/")
    # No management tags: the HTTP API turns the app user away, and lets the administrator in.
    overview = f"{broker.management_url}/api/overview"
    assert httpx.get(overview, auth=(broker.user, broker.password)).status_code == 401
    assert httpx.get(overview, auth=(broker.admin_user, broker.admin_password)).is_success
    with pytest.raises(amqp.exceptions.AccessRefused):
        connect(stack, "guest", "guest", "/")


def run_setup(stack, **overrides: str) -> subprocess.CompletedProcess:
    broker = stack.rabbitmq
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "RABBITMQ_MANAGEMENT_URL": broker.management_url,
        "RABBITMQ_ADMIN_USER": broker.admin_user,
        "RABBITMQ_ADMIN_PASSWORD": broker.admin_password,
        "CELERY_BROKER_URL": broker.url(),
        **overrides,
    }
    return subprocess.run(
        [sys.executable, "-m", "app.worker.broker_setup"], env=env, capture_output=True, text=True, timeout=120
    )


def test_setup_is_idempotent_and_says_what_is_wrong(stack):
    again = run_setup(stack)
    assert again.returncode == 0, again.stderr
    assert "vhost app up to date" in again.stdout and "created" not in again.stdout

    wrong = run_setup(stack, RABBITMQ_ADMIN_PASSWORD="not-the-password")
    assert wrong.returncode == 1
    assert "administrator's user or password is wrong" in wrong.stderr

    missing = run_setup(stack, CELERY_BROKER_URL="")
    assert missing.returncode == 1 and "set CELERY_BROKER_URL" in missing.stderr
