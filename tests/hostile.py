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

# IPv6 addresses the call-out refuses. Most carry the cloud metadata service's IPv4 address
# (169.254.169.254), which a gateway delivers to: mapped, IPv4-compatible, NAT64 (well-known and
# local-use), 6to4 and Teredo; Python 3.11.7's `is_global` calls all but the mapped one public.
# 6to4 is refused whole: Python 3.11.2 (the image's) calls it private, 3.11.7 public.
IPV6_REFUSED = [
    "::ffff:169.254.169.254",
    "::a9fe:a9fe",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::a9fe:a9fe",
    "2002:a9fe:a9fe::1",
    "2002:808:808::1",
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo: the client is the inverted last 32 bits
]
IPV6_PUBLIC = ["::ffff:8.8.8.8", "64:ff9b::808:808", "2606:4700:4700::1111"]
