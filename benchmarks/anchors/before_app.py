"""The seed's "before": one uvicorn process that does the heavy work inside the request.

The same routes the users' mix calls, on the same MongoDB, with the same work per task
(PBKDF2 rounds of app.tasks.process_data), but the way the seed started: `async` handlers
that block the event loop on the database and on the work itself, no cache, no queue, no
replicas. Run as `uvicorn benchmarks.anchors.before_app:app` (compose.bench.yml,
bench-before). Authentication is the app's, so both sides of the comparison pay for it.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from fastapi import FastAPI, HTTPException

from app.api.deps import WRITE_ACCESS
from app.core.config import get_settings
from app.data.mongo import collection
from app.worker.tasks import PROCESS_SALT, canonical_bytes

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
# Every route checks the key, as the API's writes do.
api = {"dependencies": WRITE_ACCESS}


def _public(document: dict) -> dict:
    document["id"] = str(document.pop("_id"))
    return document


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@app.get("/api/items/{item_id}", **api)
async def read_item(item_id: str) -> dict:
    try:
        key = ObjectId(item_id)
    except InvalidId:
        raise HTTPException(404, "Item not found") from None
    document = collection("items").find_one({"_id": key})  # blocks the event loop
    if document is None:
        raise HTTPException(404, "Item not found")
    return _public(document)


@app.post("/api/items", status_code=201, **api)
async def create_item(body: dict[str, Any]) -> dict:
    document = {**body, "created_at": datetime.now(UTC)}
    collection("before_items").insert_one(document)
    return _public(document)


@app.post("/api/async/process", status_code=202, **api)
async def process(body: dict[str, Any]) -> dict:
    # The work in the request: the whole server waits for it.
    digest = hashlib.sha256(canonical_bytes(body.get("data"))).digest()
    for _round in range(int(body.get("iterations", 1))):
        digest = hashlib.pbkdf2_hmac("sha256", digest, PROCESS_SALT, get_settings().process_rounds_per_iteration)
    task_id = uuid.uuid4().hex
    collection("before_tasks").insert_one({"_id": task_id, "state": "SUCCESS", "result": digest.hex()})
    return {"task_id": task_id, "state": "SUCCESS"}


@app.get("/api/tasks/{task_id}", **api)
async def task_status(task_id: str) -> dict:
    document = collection("before_tasks").find_one({"_id": task_id})
    if document is None:
        raise HTTPException(404, "Task not found")
    return _public(document)
