"""Items in MongoDB: the queries shared by the API routes and the report task."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.data import mongo

SORT = [("created_at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]


def item_filter(tag: str | None = None, name_prefix: str | None = None) -> dict[str, Any]:
    query: dict[str, Any] = {}
    if tag:
        query["tags"] = tag
    if name_prefix:
        # An anchored, case-sensitive prefix can use the unique index on name.
        query["name"] = {"$regex": "^" + re.escape(name_prefix)}
    return query


def to_public(document: dict[str, Any]) -> dict[str, Any]:
    """A MongoDB document as the JSON the API returns (and the cache stores)."""
    public = {key: value for key, value in document.items() if key != "_id"}
    public["id"] = str(document["_id"])
    for key in ("created_at", "updated_at"):
        if isinstance(public.get(key), datetime):
            public[key] = public[key].isoformat()
    return public


def _now() -> datetime:
    # BSON dates hold milliseconds: truncate so the response equals what is stored.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_id() -> str:
    return str(ObjectId())


def create(fields: dict[str, Any], item_id: str) -> dict[str, Any]:
    """Insert the item under `item_id`; if an earlier attempt with that id (the same
    Idempotency-Key) wrote it already, that item is the answer."""
    now = _now()
    document = {"_id": ObjectId(item_id), **fields, "created_at": now, "updated_at": now}
    items = mongo.collection(mongo.ITEMS)
    try:
        items.insert_one(document)
    except DuplicateKeyError:
        earlier = items.find_one({"_id": document["_id"]})
        if earlier is None:
            raise  # another item has this name
        return to_public(earlier)
    return to_public(document)


async def read(item_id: str) -> dict[str, Any] | None:
    """One item, read on the event loop (PyMongo's async client): the API's hottest read."""
    document = await mongo.async_collection(mongo.ITEMS).find_one({"_id": ObjectId(item_id)})
    return to_public(document) if document else None


def page(query: dict[str, Any], limit: int, offset: int) -> tuple[list[dict[str, Any]], bool]:
    """The items of one page, and whether more follow (one document more is read to know)."""
    documents = list(mongo.collection(mongo.ITEMS).find(query).sort(SORT).skip(offset).limit(limit + 1))
    return [to_public(d) for d in documents[:limit]], len(documents) > limit


def count(query: dict[str, Any], up_to: int) -> int | None:
    """How many items match, or None when more than `up_to` do. MongoDB stops reading at
    `up_to` + 1, so the cost does not grow with the collection."""
    counted = mongo.collection(mongo.ITEMS).count_documents(query, limit=up_to + 1)
    return counted if counted <= up_to else None


def update(item_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    fields = {**fields, "updated_at": _now()}
    document = mongo.collection(mongo.ITEMS).find_one_and_update(
        {"_id": ObjectId(item_id)}, {"$set": fields}, return_document=ReturnDocument.AFTER
    )
    return to_public(document) if document else None


def delete(item_id: str) -> bool:
    return mongo.collection(mongo.ITEMS).delete_one({"_id": ObjectId(item_id)}).deleted_count == 1


def report(query: dict[str, Any]) -> dict[str, Any]:
    """Aggregate figures over the items matching `query`."""
    items = mongo.collection(mongo.ITEMS)
    totals = list(
        items.aggregate(
            [
                {"$match": query},
                {
                    "$group": {
                        "_id": None,
                        "items": {"$sum": 1},
                        "total_quantity": {"$sum": "$quantity"},
                        "inventory_value": {"$sum": {"$multiply": ["$price", "$quantity"]}},
                        "average_price": {"$avg": "$price"},
                        "min_price": {"$min": "$price"},
                        "max_price": {"$max": "$price"},
                    }
                },
            ]
        )
    )
    summary = {key: value for key, value in (totals[0] if totals else {"items": 0}).items() if key != "_id"}
    top_tags = list(
        items.aggregate(
            [
                {"$match": query},
                {"$unwind": "$tags"},
                {"$group": {"_id": "$tags", "count": {"$sum": 1}}},
                {"$sort": {"count": -1, "_id": 1}},
                {"$limit": 20},
            ]
        )
    )
    summary["top_tags"] = [{"tag": t["_id"], "count": t["count"]} for t in top_tags]
    return summary
