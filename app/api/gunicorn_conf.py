"""Gunicorn settings: `gunicorn -c python:app.api.gunicorn_conf app.api.main:app`.

The server's tunables come from the environment (documented in `.env.example`): BIND,
WEB_CONCURRENCY, GUNICORN_TIMEOUT, GUNICORN_GRACEFUL_TIMEOUT, GUNICORN_KEEPALIVE,
GUNICORN_MAX_REQUESTS, GUNICORN_MAX_REQUESTS_JITTER, GUNICORN_DRAIN_SECONDS
(app/api/gunicorn_worker.py), PROMETHEUS_MULTIPROC_DIR. They are gunicorn's, read here in the
master before the app exists. LOG_LEVEL is the app's, read as the app reads it (Settings).
"""

from __future__ import annotations

import glob
import os
import tempfile

# prometheus-client reads PROMETHEUS_MULTIPROC_DIR when first imported, so it is set here,
# in the master, before any worker imports the app.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"prometheus-{os.getpid()}"))

from prometheus_client import multiprocess  # noqa: E402

from app.core.config import get_settings  # noqa: E402
from app.core.logging import logging_config  # noqa: E402


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


bind = os.environ.get("BIND", "0.0.0.0:8000")
# uvicorn's worker, draining kept-alive connections when it is recycled or stopped.
worker_class = "app.api.gunicorn_worker.DrainingUvicornWorker"
# Endpoints block on MongoDB in a thread pool, so a worker per core plus one keeps the
# cores busy while others wait on I/O; cap it for large hosts, override with WEB_CONCURRENCY.
workers = _int("WEB_CONCURRENCY", min(2 * (os.cpu_count() or 1) + 1, 16))
timeout = _int("GUNICORN_TIMEOUT", 60)
# Room for the drain (GUNICORN_DRAIN_SECONDS) and the requests in flight after it.
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Longer than nginx's upstream keepalive_timeout, so nginx closes idle connections first.
keepalive = _int("GUNICORN_KEEPALIVE", 75)
# Recycle workers now and then (memory growth), staggered so they never restart together.
# Recycling bounds a leak; a new worker costs about 0.7 s of CPU to start, so recycling every
# 10,000 requests cost a loaded replica about a fifth of its rate (make bench).
max_requests = _int("GUNICORN_MAX_REQUESTS", 100_000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 10_000)
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proxy_allow_ips = forwarded_allow_ips
# gunicorn's control socket (gunicornc, from 25.1) is not used: nothing manages a replica but its
# container, and a root file system that is read-only made every worker boot log an ERROR.
control_socket_disable = True
# The JSON access log comes from the app (with request id and route template).
accesslog = None
errorlog = "-"
logconfig_dict = logging_config(get_settings().log_level)


def on_starting(server: object) -> None:
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):  # a previous run's counts
        os.remove(stale)


def post_fork(server: object, worker: object) -> None:
    # A worker reads its settings afresh: not the master's copy, made once at its start (for
    # LOG_LEVEL above), which every worker forked later (recycled, or after a HUP) would inherit.
    get_settings.cache_clear()


def child_exit(server: object, worker: object) -> None:
    multiprocess.mark_process_dead(worker.pid)
