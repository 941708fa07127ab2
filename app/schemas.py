"""Request and response models. Inputs are strict: a wrong type is a 422 naming the field."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    JsonValue,
    StringConstraints,
    field_validator,
)

MAX_TASK_DATA_BYTES = 16 * 1024
MAX_ITERATIONS = 1000

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]


def _check_object_id(value: str) -> str:
    if len(value) != 24 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"{value!r} is not a valid item id: expected 24 hexadecimal characters")
    return value.lower()


ObjectIdStr = Annotated[str, AfterValidator(_check_object_id)]


class _Input(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ItemCreate(_Input):
    name: Name = Field(description="Unique name of the item.", examples=["widget"])
    description: str | None = Field(None, max_length=2000)
    price: float = Field(0.0, ge=0, le=1e9, allow_inf_nan=False)
    quantity: int = Field(0, ge=0, le=1_000_000_000)
    tags: list[Tag] = Field(default_factory=list, max_length=20)


class ItemUpdate(_Input):
    """Partial update: only the fields sent are changed; at least one is required."""

    name: Name | None = None
    description: str | None = Field(None, max_length=2000)
    price: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False)
    quantity: int | None = Field(None, ge=0, le=1_000_000_000)
    tags: list[Tag] | None = Field(None, max_length=20)

    @field_validator("name", "price", "quantity", "tags")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


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
    total: int
    limit: int
    offset: int


# --- background tasks ------------------------------------------------------------------


def _bounded_json(value: Any) -> Any:
    size = len(json.dumps(value, separators=(",", ":")))
    if size > MAX_TASK_DATA_BYTES:
        raise ValueError(f"is {size} bytes of JSON; the limit is {MAX_TASK_DATA_BYTES}")
    return value


class ProcessRequest(_Input):
    data: Annotated[JsonValue, AfterValidator(_bounded_json)] = Field(
        description=f"Any JSON value up to {MAX_TASK_DATA_BYTES} bytes.", examples=["hello"]
    )
    iterations: int = Field(
        10, ge=1, le=MAX_ITERATIONS, description="Processing rounds; progress is reported after each."
    )


class ReportRequest(_Input):
    tag: Tag | None = Field(None, description="Only items with this tag.")
    name_prefix: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None


class NotifyRequest(_Input):
    url: HttpUrl = Field(description="Where to POST the payload; its host must be in CALLOUT_ALLOWED_HOSTS.")
    payload: Annotated[dict[str, JsonValue], AfterValidator(_bounded_json)] = Field(default_factory=dict)

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
    submitted_at: datetime
    finished_at: datetime | None = None
