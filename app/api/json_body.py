"""Strict JSON request bodies.

Python's `json` accepts what JSON (RFC 8259) and the stores behind the API do not: NaN and
Infinity, numbers that overflow a double (`1e400` becomes inf), integers of any size, lone UTF-16
surrogates (`"\\ud800"`), and any nesting depth until the interpreter's recursion limit. Each of
those used to reach the database or the JSON encoder of the error response and end as a 500.
Here they are a 422 that names the field, in the shape of FastAPI's validation errors.

`StrictJSONRoute` is FastAPI's documented way to give routes a custom `Request` class.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

# Deeper than any body this API takes, shallow enough for every encoder and validator after it.
MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class _Rejected:
    """A number the parser set aside, reported once its field is known."""

    __slots__ = ("error_type", "literal", "message")

    def __init__(self, error_type: str, literal: str, message: str) -> None:
        self.error_type, self.literal, self.message = error_type, literal, message


def _constant(literal: str) -> _Rejected:  # NaN, Infinity, -Infinity
    return _Rejected("finite_number", literal, "Input should be a finite number; JSON has no NaN or Infinity")


def _float(literal: str) -> float | _Rejected:
    value = float(literal)
    if math.isfinite(value):
        return value
    return _Rejected("finite_number", literal[:40], "Input should be a finite number; this one overflows a double")


def _int(literal: str) -> int | _Rejected:
    # Checked on the digits first: converting thousands of them is slow and, past 4300, an error.
    if len(literal.lstrip("-")) <= 19:
        value = int(literal)
        if INT64_MIN <= value <= INT64_MAX:
            return value
    return _Rejected("int_too_big", literal[:40], "Input should be an integer within 64 bits")


def _error(error_type: str, loc: tuple[Any, ...], msg: str, literal: Any = None) -> HTTPException:
    detail = {"type": error_type, "loc": list(loc), "msg": msg, "input": literal}
    return HTTPException(422, detail=[detail])


def _bad_string(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: from a \ud800 escape, or an invalid byte below
        return True
    return False


def _string_error(loc: tuple[Any, ...], text: str) -> HTTPException:
    shown = text.encode("utf-8", "backslashreplace").decode("utf-8")[:80]
    return _error(
        "string_unicode", loc, "Input should be valid Unicode: it holds a lone surrogate or invalid UTF-8", shown
    )


def _check(value: Any, loc: tuple[Any, ...], depth: int) -> HTTPException | None:
    if isinstance(value, _Rejected):
        return _error(value.error_type, loc, value.message, value.literal)
    if isinstance(value, str):
        return _string_error(loc, value) if _bad_string(value) else None
    if isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            return _error("too_deep", loc, f"JSON nested deeper than {MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            if isinstance(key, str) and _bad_string(key):
                return _string_error(loc, key)
            problem = _check(child, (*loc, key), depth + 1)
            if problem is not None:
                return problem
    return None


def _top_level_key(text: str) -> tuple[str, ...]:
    """The top-level field a too-deep value sits in, found by a scan that needs no recursion."""
    depth, key, in_string, escaped, start = 0, None, False, False, 0
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if depth == 1 and text[index + 1 :].lstrip().startswith(":"):
                    key = text[start:index]
        elif char == '"':
            in_string, start = True, index + 1
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                break
        elif char in "]}":
            depth -= 1
    return (key,) if key is not None else ()


def parse(body: bytes) -> Any:
    """The body as JSON, or an HTTPException(422) naming the first field that is not strict JSON."""
    # Invalid UTF-8 bytes become lone surrogates, reported below together with their field.
    text = body.decode("utf-8", errors="surrogateescape")
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except json.JSONDecodeError as exc:
        raise _error("json_invalid", ("body", exc.pos), f"JSON decode error: {exc.msg}") from None
    except RecursionError:
        raise _error(
            "too_deep", ("body", *_top_level_key(text)), f"JSON nested deeper than {MAX_DEPTH} levels"
        ) from None
    problem = _check(value, ("body",), 0)
    if problem is not None:
        raise problem
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_strict_json"):
            self._strict_json = parse(await self.body())
        return self._strict_json


class StrictJSONRoute(APIRoute):
    """Routes whose JSON bodies are parsed by `parse`."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
