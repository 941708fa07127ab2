"""Prometheus metrics.

Under gunicorn every worker is its own process; `PROMETHEUS_MULTIPROC_DIR` (set by
`app/api/gunicorn_conf.py` before any worker starts) makes prometheus-client keep the values in
files that `/metrics` adds up across workers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route template, method and status.", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REQUESTS_SHED = Counter(
    "http_requests_shed_total", "Requests answered 503 at once because the process was over capacity.", ["reason"]
)
TASKS_SUBMITTED = Counter("tasks_submitted_total", "Background tasks accepted, by kind.", ["kind"])
CACHE_REQUESTS = Counter("cache_requests_total", "Item cache lookups by result (hit, miss, error).", ["result"])
READINESS_CHECKS = Counter(
    "readiness_checks_total",
    "Dependency checks run for /health/ready (at most one a second per process, however often it is asked).",
    ["dependency"],
)
CACHE_INVALIDATION_FAILURES = Counter(
    "cache_invalidation_failures_total", "Cache entries that could not be deleted after a write."
)


def render() -> tuple[bytes, str]:
    """The exposition text for this process, or for all gunicorn workers together."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
