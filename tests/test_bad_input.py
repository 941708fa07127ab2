"""Bad input gets a 4xx JSON error that names the problem, and nothing stored is lost."""

from __future__ import annotations

import re
import sys

import pytest
from bson import ObjectId
from hostile import HOSTILE_BODIES, HOSTILE_QUERIES


def error_locations(response) -> list[list]:
    return [error["loc"] for error in response.json()["detail"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"price": 1.0}, "name"),
        ({"name": ""}, "name"),
        ({"name": 12}, "name"),
        ({"name": "x", "price": "cheap"}, "price"),
        ({"name": "x", "price": -1}, "price"),
        ({"name": "x", "quantity": 1.5}, "quantity"),
        ({"name": "x", "quantity": True}, "quantity"),
        ({"name": "x", "quantity": "5"}, "quantity"),
        ({"name": "x", "tags": "not-a-list"}, "tags"),
        ({"name": "x", "tags": ["ok"] * 21}, "tags"),
        ({"name": "x", "colour": "red"}, "colour"),
    ],
)
def test_item_fields_are_validated(api, body, field):
    response = api.post("/api/items", json=body)
    assert response.status_code == 422, response.text
    assert ["body", field] in [loc[:2] for loc in error_locations(response)]


# Every character Python's str.isspace calls blank, and ones that only some regex engines do
# (U+FEFF is ECMA's \s, not Python's) or none do.
BLANKS = [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()]
NOT_BLANKS = ["\ufeff", "\u200b", "x", "\u00e9"]


def test_a_blank_is_the_same_to_the_documented_pattern_and_to_the_api(api, mongo, unique):
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    for model in ("ItemCreate", "ItemUpdate"):
        fields = schemas[model]["properties"]
        for where, field in (("name", fields["name"]), ("tags", fields["tags"]["items"])):
            pattern = re.compile(field["pattern"])
            assert [c for c in BLANKS if pattern.search(c)] == [], (model, where)
            assert all(pattern.search(c) for c in NOT_BLANKS), (model, where)
    item = api.post("/api/items", json={"name": unique()}).json()
    for blank in BLANKS:
        for body, field in (({"name": blank * 2}, "name"), ({"name": unique(), "tags": [blank]}, "tags")):
            response = api.post("/api/items", json=body)
            assert response.status_code == 422, (hex(ord(blank)), response.text)
            assert error_locations(response)[0][:2] == ["body", field]
        assert api.patch(f"/api/items/{item['id']}", json={"tags": ["ok", blank]}).status_code == 422
        name = unique()
        stripped = api.post("/api/items", json={"name": f"{blank}{name}{blank}", "tags": [f"{blank}t{blank}"]})
        assert stripped.status_code == 201, (hex(ord(blank)), stripped.text)
        assert (stripped.json()["name"], stripped.json()["tags"]) == (name, ["t"])
    for other in NOT_BLANKS:
        assert api.post("/api/items", json={"name": unique() + other}).status_code == 201, hex(ord(other))
    assert mongo.items.find_one({"_id": ObjectId(item["id"])})["tags"] == []


def test_malformed_json_is_a_422_not_a_500(api):
    response = api.post("/api/items", content=b'{"name": ', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("bad_id", ["zzz", "123", "g" * 24, "a" * 25])
def test_malformed_item_ids_are_named(api, bad_id):
    for method in ("GET", "PATCH", "DELETE"):
        response = api.request(method, f"/api/items/{bad_id}", json={"price": 1.0} if method == "PATCH" else None)
        assert response.status_code == 422
        error = response.json()["detail"][0]
        assert error["loc"] == ["path", "item_id"]
        assert "not a valid item id" in error["msg"]


def test_empty_patch_is_refused_and_changes_nothing(api, mongo, unique):
    item = api.post("/api/items", json={"name": unique(), "price": 2.0}).json()
    response = api.patch(f"/api/items/{item['id']}", json={})
    assert response.status_code == 422
    assert "at least one field" in response.json()["detail"][0]["msg"]
    null = api.patch(f"/api/items/{item['id']}", json={"name": None})
    assert null.status_code == 422 and error_locations(null)[0] == ["body", "name"]
    assert mongo.items.find_one({"_id": ObjectId(item["id"])})["price"] == 2.0


def test_oversize_bodies_are_413_json(api, mongo):
    before = mongo.items.count_documents({})
    big = b'{"name": "' + b"x" * 70_000 + b'"}'
    declared = api.post("/api/items", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert "65536 bytes" in declared.json()["detail"]

    def chunks():
        yield big[:1000]
        yield big[1000:]

    streamed = api.post("/api/items", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]
    assert mongo.items.count_documents({}) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"iterations": 5}, "data"),
        ({"data": "x", "iterations": 0}, "iterations"),
        ({"data": "x", "iterations": 1001}, "iterations"),
        ({"data": "x", "iterations": "5"}, "iterations"),
        ({"data": "x" * 20_000, "iterations": 1}, "data"),
    ],
)
def test_task_submissions_are_validated(api, mongo, body, field):
    before = mongo.tasks.count_documents({})
    response = api.post("/api/async/process", json=body)
    assert response.status_code == 422, response.text
    assert ["body", field] in [loc[:2] for loc in error_locations(response)]
    assert mongo.tasks.count_documents({}) == before


def test_notify_needs_a_real_url(api):
    response = api.post("/api/async/notify", json={"url": "not a url"})
    assert response.status_code == 422 and error_locations(response)[0][:2] == ["body", "url"]


@pytest.mark.parametrize("bad_id", ["nope", "1234", "4b0c52a6-54b1-4b8a-9d61"])
def test_malformed_task_ids_are_named(api, bad_id):
    response = api.get(f"/api/tasks/{bad_id}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "task_id"]


def test_unknown_routes_and_methods_answer_json(api):
    assert api.get("/api/nothing").json() == {"detail": "Not Found"}
    wrong_method = api.put("/api/items")
    assert wrong_method.status_code == 405 and wrong_method.json() == {"detail": "Method Not Allowed"}
    assert wrong_method.headers["allow"] == "GET, POST"


@pytest.mark.parametrize(("path", "raw", "loc", "error_type"), HOSTILE_BODIES)
def test_hostile_json_is_a_422_naming_the_field(api, mongo, path, raw, loc, error_type):
    before = (mongo.items.count_documents({}), mongo.tasks.count_documents({}))
    response = api.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == loc and error["type"] == error_type, error
    assert response.headers["x-request-id"]
    assert (mongo.items.count_documents({}), mongo.tasks.count_documents({})) == before


def test_hostile_json_in_a_patch_changes_nothing(api, mongo, unique):
    item = api.post("/api/items", json={"name": unique(), "price": 2.0}).json()
    headers = {"content-type": "application/json"}
    response = api.patch(f"/api/items/{item['id']}", content=b'{"price": NaN}', headers=headers)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "price"]
    assert api.get(f"/api/items/{item['id']}").json() == item


@pytest.mark.parametrize(("params", "field"), HOSTILE_QUERIES)
def test_hostile_query_parameters_are_named(api, params, field):
    response = api.get("/api/items", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_invalid_utf8_in_a_query_or_path_is_not_a_server_error(api):
    assert api.get("/api/items?tag=%ED%A0%80%FF").status_code == 200  # decoded with replacement characters
    bad_path = api.get("/api/items/%ED%A0%80%FF")
    assert bad_path.status_code == 422 and bad_path.json()["detail"][0]["loc"] == ["path", "item_id"]


def test_a_405_names_the_allowed_methods(api):
    item_path = "/api/items/" + "a" * 24
    response = api.put(item_path, json={})
    assert response.status_code == 405 and response.headers["allow"] == "DELETE, GET, PATCH"
    assert api.post("/health").headers["allow"] == "GET"
