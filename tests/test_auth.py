"""API-key authentication on mutating endpoints; reads protected when configured."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from devstack.servers import ApiServer

MUTATIONS = [
    ("POST", "/api/items", {"name": "x"}),
    ("PATCH", "/api/items/" + "a" * 24, {"price": 1.0}),
    ("DELETE", "/api/items/" + "a" * 24, None),
    ("POST", "/api/async/process", {"data": 1, "iterations": 1}),
    ("POST", "/api/async/report", {}),
    ("DELETE", "/api/tasks/4b0c52a6-54b1-4b8a-9d61-2f4a0c4d6a11", None),
]


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
def test_mutations_need_a_valid_api_key(anonymous, method, path, body):
    missing = anonymous.request(method, path, json=body)
    assert missing.status_code == 401
    assert missing.json()["detail"] == "Missing API key: send it in the X-API-Key header."
    assert missing.headers["www-authenticate"] == "ApiKey"
    wrong = anonymous.request(method, path, json=body, headers={"X-API-Key": "x" * 43})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "Invalid API key."


def test_reads_are_open_by_default(anonymous):
    assert anonymous.get("/api/items").status_code == 200


@pytest.fixture(scope="module")
def protected_api(stack, tmp_path_factory) -> Iterator[ApiServer]:
    env = {**stack.env, "AUTH_PROTECT_READS": "true"}
    server = ApiServer(tmp_path_factory.mktemp("protected-api"), env, workers=1).start()
    yield server
    server.stop()


def test_reads_can_be_protected(protected_api, stack):
    with httpx.Client(base_url=protected_api.url, timeout=10) as client:
        assert client.get("/api/items").status_code == 401
        assert client.get("/api/tasks/4b0c52a6-54b1-4b8a-9d61-2f4a0c4d6a11").status_code == 401
        assert client.get("/api/items", headers={"X-API-Key": stack.api_key}).status_code == 200
        # Probes stay open for load balancers and orchestrators.
        assert client.get("/health").status_code == 200
        assert client.get("/health/ready").status_code == 200
