"""Hostile input, shared by the explicit tests (test_bad_input.py) and schemathesis's examples."""

from __future__ import annotations

# Bodies that Python's json accepts but JSON and the stores do not: (path, raw body, the error's
# loc, its type). Each one must be a 422 naming the field, never a 500, and store nothing.
DEEP = b"[" * 40 + b"]" * 40
VERY_DEEP = b"[" * 30_000 + b"]" * 30_000  # past the interpreter's recursion limit, under 64 KB
HOSTILE_BODIES = [
    ("/api/items", b'{"name": "x", "price": NaN}', ["body", "price"], "finite_number"),
    ("/api/items", b'{"name": "x", "price": Infinity}', ["body", "price"], "finite_number"),
    ("/api/items", b'{"name": "x", "price": -Infinity}', ["body", "price"], "finite_number"),
    ("/api/items", b'{"name": "x", "price": 1e400}', ["body", "price"], "finite_number"),
    ("/api/items", b'{"name": "\\ud800"}', ["body", "name"], "string_unicode"),
    ("/api/items", b'{"name": "x", "tags": ["ok", "\\udfff"]}', ["body", "tags", 1], "string_unicode"),
    ("/api/items", b'{"name": "caf\xe9"}', ["body", "name"], "string_unicode"),  # Latin-1, not UTF-8
    ("/api/items", b'{"name": "x", "quantity": 99999999999999999999999}', ["body", "quantity"], "int_too_big"),
    ("/api/items", b'{"name": "x", "quantity": ' + b"7" * 5000 + b"}", ["body", "quantity"], "int_too_big"),
    ("/api/async/process", b'{"data": {"a": [1, NaN]}, "iterations": 1}', ["body", "data", "a", 1], "finite_number"),
    ("/api/async/process", b'{"iterations": 1, "data": ' + DEEP + b"}", ["body", "data", *[0] * 31], "too_deep"),
    ("/api/async/process", b'{"iterations": 1, "data": ' + VERY_DEEP + b"}", ["body", "data"], "too_deep"),
    (
        "/api/async/notify",
        b'{"url": "http://127.0.0.1/", "payload": {"\\ud800": 1}}',
        ["body", "payload"],
        "string_unicode",
    ),
]


# Query parameters of GET /api/items that are not what the schema says, with the field named.
HOSTILE_QUERIES = [
    ({"limit": "NaN"}, "limit"),
    ({"limit": "1e400"}, "limit"),
    ({"limit": "9" * 5000}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"tag": "x" * 41}, "tag"),
]
