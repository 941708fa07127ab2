"""Idempotency-Key for creates and submits, with the meaning the IETF draft and the usual APIs
(Stripe's, among others) give it.

A client sends a key of its choosing with a POST. The first request with that key runs; its
answer is kept for IDEMPOTENCY_KEY_TTL_HOURS (24 h at least), and any later request with the
same key and the same body gets that answer again (`Idempotent-Replayed: true`) without running
anything. The same key with a different body is refused (422); a repeat while the first is still
running is told to wait (409 with Retry-After). So a client, or nginx, may send a create again
after a connection failure without making a duplicate.

Exactly one item even when a replica dies mid-request: the id of what the request creates is
fixed when the key is first seen, and stored with it. A retry after the first attempt died
(its lease ran out) runs again with that same id, and finds the item if it was written.
Keys are scoped to the caller's API key and the route. An attempt that fails on a dependency
(503) keeps no answer: the next one runs it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Header, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from app.core.config import get_settings
from app.data import mongo

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Longer than any request may run (its MongoDB budget, a publish, a cache call): a key whose
# first attempt holds it longer than this died with its replica, and a retry takes it over.
LEASE_SECONDS = 10

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Makes the request safe to repeat: the same key and body get the first answer again "
        "(kept 24 h); the same key with another body is refused.",
    ),
]


@dataclass
class Outcome:
    """What a request answered: kept with its key, and sent again to a repeat."""

    status_code: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def response(self, **extra_headers: str) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status_code, headers={**self.headers, **extra_headers})


def _now() -> datetime:
    return datetime.now(UTC)


def key_id(caller: str, method: str, path: str, key: str) -> str:
    """Where a key is kept: scoped to the caller (its API key, hashed) and the route."""
    scope = f"{hashlib.sha256(caller.encode()).hexdigest()}\n{method} {path}\n{key}"
    return hashlib.sha256(scope.encode()).hexdigest()


def fingerprint(body: BaseModel) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _reused(key: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[
            {
                "type": "idempotency_key_reused",
                "loc": ["header", HEADER],
                "msg": f"{HEADER} {key!r} was used with a different request body; use a new key for a new request.",
                "input": key,
            }
        ],
    )


def _in_progress(key: str, lease_until: datetime) -> HTTPException:
    wait = max(1, int((lease_until - _now()).total_seconds()) + 1)
    return HTTPException(
        status.HTTP_409_CONFLICT,
        detail=f"A request with {HEADER} {key!r} is still being processed; retry after {wait} s.",
        headers={"Retry-After": str(wait)},
    )


def _claim(kept_as: str, key: str, body_print: str, new_id: Callable[[], str]) -> str | Outcome:
    """The resource id this attempt must use, or the answer kept for the key."""
    keys = mongo.collection(mongo.IDEMPOTENCY_KEYS)
    now = _now()
    resource_id = new_id()
    try:
        keys.insert_one(
            {
                "_id": kept_as,
                "fingerprint": body_print,
                "resource_id": resource_id,
                "state": "running",
                "lease_until": now + timedelta(seconds=LEASE_SECONDS),
                "created_at": now,
                "expires_at": now + timedelta(hours=get_settings().idempotency_key_ttl_hours),
            }
        )
        return resource_id
    except DuplicateKeyError:
        pass
    record = keys.find_one({"_id": kept_as})
    if record is None:  # expired between the two calls
        return _claim(kept_as, key, body_print, new_id)
    if record["fingerprint"] != body_print:
        raise _reused(key)
    if record["state"] == "done":
        kept = record["response"]
        return Outcome(kept["status_code"], kept["body"], kept["headers"])
    if record["lease_until"] > now:
        raise _in_progress(key, record["lease_until"])
    # The attempt holding the key died: take it over, with the resource id it had.
    taken = keys.find_one_and_update(
        {"_id": kept_as, "state": "running", "lease_until": record["lease_until"]},
        {"$set": {"lease_until": now + timedelta(seconds=LEASE_SECONDS)}},
        return_document=ReturnDocument.AFTER,
    )
    if taken is None:  # another retry took it first
        raise _in_progress(key, now + timedelta(seconds=LEASE_SECONDS))
    return taken["resource_id"]


def _release(kept_as: str) -> None:
    """No answer to keep (a dependency is down): the next attempt runs again, at once."""
    try:
        mongo.collection(mongo.IDEMPOTENCY_KEYS).update_one({"_id": kept_as}, {"$set": {"lease_until": _now()}})
    except PyMongoError:
        pass  # MongoDB is what failed: the lease runs out by itself


def respond(
    request: Request,
    key: str | None,
    body: BaseModel,
    operation: Callable[[str], Outcome],
    new_id: Callable[[], str],
) -> JSONResponse:
    """Run `operation` with the id of what it creates, once per key; answer a repeat from the record."""
    if key is None:
        return operation(new_id()).response()
    kept_as = key_id(request.headers.get("x-api-key", ""), request.method, request.url.path, key)
    claimed = _claim(kept_as, key, fingerprint(body), new_id)
    if isinstance(claimed, Outcome):
        return claimed.response(**{REPLAYED_HEADER: "true"})
    try:
        outcome = operation(claimed)
    except HTTPException as exc:
        if exc.status_code >= 500:
            _release(kept_as)
            raise
        # A refusal (409: the name is taken) is this request's answer, kept like a success.
        outcome = Outcome(exc.status_code, {"detail": exc.detail}, dict(exc.headers or {}))
    except BaseException:
        _release(kept_as)
        raise
    mongo.collection(mongo.IDEMPOTENCY_KEYS).update_one(
        {"_id": kept_as},
        {
            "$set": {
                "state": "done",
                "response": {"status_code": outcome.status_code, "body": outcome.body, "headers": outcome.headers},
            }
        },
    )
    return outcome.response()
