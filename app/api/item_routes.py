"""Items: synchronous CRUD straight to MongoDB, single-item reads through the Redis cache.

Writes always need an API key (`router`). The reads depend on two settings that the OpenAPI schema
states, AUTH_PROTECT_READS and ITEMS_PAGE_MAX, so their routes are declared by `read_router` when
the app is created (app/api/main.py).
"""

# Without `from __future__ import annotations`: a read route's parameter is annotated with a bound
# taken from the settings, which FastAPI must find as an object, not as a name in this module.

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import DuplicateKeyError

from app.api import idempotency
from app.api.deps import (
    AUTH_ERRORS,
    BODY_ERRORS,
    CONFLICT,
    IDEMPOTENCY_ERRORS,
    NOT_FOUND,
    UNAVAILABLE,
    WRITE_ACCESS,
    read_access,
)
from app.api.idempotency import IdempotencyKey, Outcome
from app.api.json_body import StrictJSONRoute
from app.api.schemas import Item, ItemCreate, ItemPage, ItemUpdate, ObjectIdStr
from app.core.config import Settings
from app.data import cache, item_store

router = APIRouter(prefix="/api/items", tags=["items"], route_class=StrictJSONRoute)

MAX_OFFSET = 10_000
# Beyond this, `total` is null: no page past MAX_OFFSET can be read anyway.
COUNT_LIMIT = MAX_OFFSET


def _conflict(name: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=f"An item named {name!r} already exists.")


def _not_found(item_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"Item {item_id} not found.")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Item,
    dependencies=WRITE_ACCESS,
    responses={**AUTH_ERRORS, **BODY_ERRORS, **CONFLICT, **IDEMPOTENCY_ERRORS, **UNAVAILABLE},
)
def create_item(body: ItemCreate, request: Request, idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Create an item; its name must be unique (409 otherwise). With an Idempotency-Key, a repeat
    gets the first answer again, and never makes a second item."""

    def create(item_id: str) -> Outcome:
        try:
            item = Item.model_validate(item_store.create(body.model_dump(), item_id))
        except DuplicateKeyError:
            raise _conflict(body.name) from None
        return Outcome(
            status.HTTP_201_CREATED, item.model_dump(mode="json"), {"Location": f"{router.prefix}/{item.id}"}
        )

    return idempotency.respond(request, idempotency_key, body, create, new_id=item_store.new_id)


@router.patch(
    "/{item_id}",
    response_model=Item,
    dependencies=WRITE_ACCESS,
    responses={**AUTH_ERRORS, **BODY_ERRORS, **NOT_FOUND, **CONFLICT, **UNAVAILABLE},
)
def update_item(item_id: ObjectIdStr, body: ItemUpdate) -> dict:
    """Change the fields sent; the item's cache entry is dropped."""
    fields = body.model_dump(exclude_unset=True)
    if not fields:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Send at least one field to change.", "input": {}}]
        )
    try:
        item = item_store.update(item_id, fields)
    except DuplicateKeyError:
        raise _conflict(fields["name"]) from None
    finally:
        cache.invalidate(item_id)
    if item is None:
        raise _not_found(item_id)
    return item


@router.delete(
    "/{item_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=WRITE_ACCESS,
    responses={**AUTH_ERRORS, **NOT_FOUND, **UNAVAILABLE},
)
def delete_item(item_id: ObjectIdStr) -> Response:
    deleted = item_store.delete(item_id)
    cache.invalidate(item_id)
    if not deleted:
        raise _not_found(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def read_router(settings: Settings) -> APIRouter:
    """The read routes: behind the API key when AUTH_PROTECT_READS is on, pages of at most
    ITEMS_PAGE_MAX items."""
    reads = APIRouter(prefix=router.prefix, tags=["items"], route_class=StrictJSONRoute, **read_access(settings))
    page_size = Query(ge=1, le=settings.items_page_max, description="Page size.")

    @reads.get("", response_model=ItemPage, responses=UNAVAILABLE)
    def list_items(
        limit: Annotated[int, page_size] = 20,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        tag: Annotated[str | None, Query(min_length=1, max_length=40, description="Only items with this tag.")] = None,
        name_prefix: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
        count: Annotated[
            bool, Query(description=f"Also count the matching items, up to {COUNT_LIMIT:,} (`total`).")
        ] = False,
    ) -> dict:
        """Newest first; ties broken by id, so pages are stable. `has_more` says whether another
        page follows. Counting is asked for (`count=true`) and bounded: a page never costs more
        as the collection grows."""
        query = item_store.item_filter(tag, name_prefix)
        items, has_more = item_store.page(query, limit, offset)
        total = item_store.count(query, up_to=COUNT_LIMIT) if count else None
        return {"items": items, "limit": limit, "offset": offset, "has_more": has_more, "total": total}

    @reads.get("/{item_id}", response_model=Item, responses={**NOT_FOUND, **UNAVAILABLE})
    async def get_item(item_id: ObjectIdStr) -> Response:
        """Read one item through the cache; `X-Cache` says HIT, MISS or BYPASS (Redis unavailable)."""

        async def load() -> bytes | None:
            item = await item_store.read(item_id)
            return Item.model_validate(item).model_dump_json().encode() if item else None

        # The API's hottest path: async end to end, and a cached body is sent as it is.
        body, cache_status = await cache.read_through(item_id, load)
        if body is None:
            raise _not_found(item_id)
        return Response(body, media_type="application/json", headers={"X-Cache": cache_status})

    return reads
