"""Property-based requests generated from the app's own OpenAPI schema, sent to the live server."""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from helpers import wait_for
from hostile import HOSTILE_BODIES, HOSTILE_QUERIES
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.api.json_body import INT64_MAX, INT64_MIN, MAX_DEPTH
from app.api.main import app

# The schema comes from the app object (the server is not up at import time); every
# generated request goes over HTTP to the gunicorn server of the session stack.
schema = schemathesis.openapi.from_dict(app.openapi())


@pytest.fixture(scope="module", autouse=True)
def purge_generated_work(stack):
    yield
    # Generated submits may have queued minutes of work; later tests need idle workers.
    from app.worker.celery_app import celery_app

    with celery_app.connection_for_write() as connection:
        celery_app.control.purge(connection=connection)

        # Purging drops what waits in the queues; what a worker already holds has to finish.
        def idle() -> bool:
            inspect = celery_app.control.inspect(timeout=1, connection=connection)
            held = [inspect.active(), inspect.reserved()]
            return all(replies is not None and not any(replies.values()) for replies in held)

        wait_for(idle, timeout=120, interval=1, what="workers idle after the generated tasks")


def beyond_json_limits(value: object, depth: int = 0) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not INT64_MIN <= value <= INT64_MAX
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        return depth >= MAX_DEPTH or any(beyond_json_limits(child, depth + 1) for child in children)
    return False


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_conform_and_never_get_a_server_error(case, stack):
    # Every default check runs; call-outs are refused for hosts outside CALLOUT_ALLOWED_HOSTS,
    # a runtime list the schema cannot express, so valid-looking URLs may be rejected there.
    excluded = [positive_data_acceptance] if case.operation.path == "/api/async/notify" else []
    # Nor can it say that free-form JSON (`data`, `payload`) holds integers within 64 bits and
    # nests at most 32 deep (app/api/json_body.py): a body past those limits is rightly refused.
    if beyond_json_limits(case.body):
        excluded = [positive_data_acceptance]
    # The schema cannot say that a key is for one request: generated keys repeat across bodies,
    # which is refused by design (tests/test_idempotency.py). Each case gets a key of its own.
    if case.headers and any(name.lower() == "idempotency-key" for name in case.headers):
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != "idempotency-key"}
        case.headers["Idempotency-Key"] = f"schemathesis-{uuid.uuid4()}"
    case.call_and_validate(base_url=stack.api.url, headers={"X-API-Key": stack.api_key}, excluded_checks=excluded)


# The hostile input of tests/hostile.py as explicit schemathesis cases: the same checks (no 5xx,
# documented status codes and bodies) on bodies no generator would make, and on path parameters.
EXPLICIT = [
    *((path, "POST", {"body": raw, "media_type": "application/json"}) for path, raw, _loc, _type in HOSTILE_BODIES),
    *(("/api/items", "GET", {"query": query}) for query, _field in HOSTILE_QUERIES),
    (
        "/api/items/{item_id}",
        "PATCH",
        {"path_parameters": {"item_id": "a" * 24}, "body": b'{"price": NaN}', "media_type": "application/json"},
    ),
    ("/api/items/{item_id}", "GET", {"path_parameters": {"item_id": "\u00e9" * 24}}),
    ("/api/tasks/{task_id}", "GET", {"path_parameters": {"task_id": "9" * 5000}}),
]


@pytest.mark.parametrize(("path", "method", "parts"), EXPLICIT)
def test_hostile_explicit_cases_get_no_server_error(path, method, parts, stack):
    case = schema[path][method].Case(**parts)
    case.call_and_validate(
        base_url=stack.api.url, headers={"X-API-Key": stack.api_key}, excluded_checks=[positive_data_acceptance]
    )
