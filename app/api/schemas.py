"""Request and response models. Inputs are strict: a wrong type is a 422 naming the field."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
)

MAX_TASK_DATA_BYTES = 16 * 1024
MAX_ITERATIONS = 1000

# One notion of a blank for the strip, the check and the documented pattern. `\s` would not do:
# it differs between the schema's ECMA regex (U+FEFF), pydantic's Rust regex and Python's
# str.strip (U+0085, U+001C-U+001F). So the blanks are str.strip's, spelled out as \uXXXX in a
# class that every engine reads alike (Unicode has no blank above U+3000).
BLANKS = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
NOT_BLANK = "[^" + "".join(f"\\u{ord(c):04x}" for c in BLANKS) + "]"


def _strip_blanks(value: Any) -> Any:
    return value.strip(BLANKS) if isinstance(value, str) else value


# Leading and trailing blanks are dropped; the pattern (at least one non-blank) keeps the
# documented schema true to what is accepted.
STRIPPED = BeforeValidator(_strip_blanks)
Name = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NOT_BLANK), STRIPPED]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=NOT_BLANK), STRIPPED]


def _check_object_id(value: str) -> str:
    if len(value) != 24 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"{value!r} is not a valid item id: expected 24 hexadecimal characters")
    return value.lower()


OBJECT_ID_PATTERN = "^[0-9a-fA-F]{24}$"
# Validated by our function for a clear message; documented with the pattern it enforces.
ObjectIdStr = Annotated[
    str,
    AfterValidator(_check_object_id),
    WithJsonSchema({"type": "string", "pattern": OBJECT_ID_PATTERN, "examples": ["6650c0ffee0123456789abcd"]}),
]


def _json_number(value: Any) -> Any:
    # Strict about types (no "5", no true) but, as JSON has one number type, 5.0 is the integer 5.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


# An integer as JSON Schema defines it: 5 and 5.0, not 5.5, "5" or true.
Integer = Annotated[int, BeforeValidator(_json_number), Field(strict=False)]


class _Input(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ItemCreate(_Input):
    name: Name = Field(description="Unique name of the item.", examples=["widget"])
    description: str | None = Field(None, max_length=2000)
    price: float = Field(0.0, ge=0, le=1e9, allow_inf_nan=False)
    quantity: Integer = Field(0, ge=0, le=1_000_000_000)
    tags: list[Tag] = Field(default_factory=list, max_length=20)


class ItemUpdate(_Input):
    """Partial update: only the fields sent are changed; at least one is required.

    The defaults are never validated, so a field may be omitted; sent as null it is refused
    (except `description`, which null clears).
    """

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: Name = None  # type: ignore[assignment]
    description: str | None = Field(None, max_length=2000)
    price: float = Field(None, ge=0, le=1e9, allow_inf_nan=False)  # type: ignore[assignment]
    quantity: Integer = Field(None, ge=0, le=1_000_000_000)  # type: ignore[assignment]
    tags: list[Tag] = Field(None, max_length=20)  # type: ignore[assignment]


class Item(BaseModel):
    id: str
    name: str
    description: str | None = None
    price: float
    quantity: int
    tags: list[str]
    created_at: datetime
    updated_at: datetime


class ItemPage(BaseModel):
    items: list[Item]
    limit: int
    offset: int
    has_more: bool = Field(description="Whether items follow this page (ask again with offset + limit).")
    total: int | None = Field(
        description="With count=true, how many items match; null without it, or past the count's limit."
    )


# --- background tasks ------------------------------------------------------------------


def _bounded_json(value: Any) -> Any:
    size = len(json.dumps(value, separators=(",", ":")))
    if size > MAX_TASK_DATA_BYTES:
        raise ValueError(f"is {size} bytes of JSON; the limit is {MAX_TASK_DATA_BYTES}")
    return value


# Free-form JSON, as strict as every body (app/api/json_body.py): integers within 64 bits, no
# NaN or Infinity, valid Unicode, nested at most 32 deep.
JSON_LIMITS = "Integers within 64 bits, nesting at most 32 deep."


class ProcessRequest(_Input):
    data: Annotated[JsonValue, AfterValidator(_bounded_json)] = Field(
        description=f"Any JSON value up to {MAX_TASK_DATA_BYTES} bytes. {JSON_LIMITS}", examples=["hello"]
    )
    iterations: Integer = Field(
        10, ge=1, le=MAX_ITERATIONS, description="Processing rounds; progress is reported after each."
    )


class ReportRequest(_Input):
    tag: Tag | None = Field(None, description="Only items with this tag.")
    name_prefix: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None


class NotifyRequest(_Input):
    url: HttpUrl = Field(description="Where to POST the payload; its host must be in CALLOUT_ALLOWED_HOSTS.")
    payload: Annotated[dict[str, JsonValue], AfterValidator(_bounded_json)] = Field(
        default_factory=dict, description=f"A JSON object up to {MAX_TASK_DATA_BYTES} bytes. {JSON_LIMITS}"
    )

    # HttpUrl is not a str, which strict mode would refuse for JSON input.
    model_config = ConfigDict(strict=False, extra="forbid")


TaskState = Literal["PENDING", "STARTED", "PROGRESS", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]


class TaskAccepted(BaseModel):
    task_id: str
    kind: str
    state: TaskState
    status_url: str


class TaskProgress(BaseModel):
    current: int
    total: int
    percent: float


class TaskError(BaseModel):
    type: str
    message: str


class TaskStatus(BaseModel):
    task_id: str
    kind: str
    state: TaskState
    progress: TaskProgress | None = None
    result: Any = None
    error: TaskError | None = None
    retries: int = 0
    worker: str | None = Field(None, description="The Celery worker that finished the task.")
    submitted_at: datetime
    finished_at: datetime | None = None
