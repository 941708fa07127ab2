"""One pure-ASGI middleware for what every request needs: a request id, the replica's name, a
body-size limit, metrics, a JSON access log line (every request, or only the failed and slow
ones: ACCESS_LOG), and a JSON 500 for anything unhandled.
Pure ASGI keeps streaming responses unbuffered.

The body limit is ours rather than FastAPI's `max_body_size` because that one answers an
oversized Content-Length with a plain-text 413, and every error here is JSON.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import uuid

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import lifecycle
from app.api.errors import INTERNAL_ERROR_DETAIL
from app.core import metrics
from app.core.logging import request_id_var

access_log = logging.getLogger("app.access")
log = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
# Names the replica that answered (its hostname: the container id under Docker), so load
# balancing can be seen and a misbehaving replica found.
SERVED_BY = (b"x-served-by", socket.gethostname().encode())
# With ACCESS_LOG=errors, a request this slow is logged even when it succeeded.
SLOW_REQUEST_SECONDS = 1.0
# An incoming id is kept only if it is short and plain, so it is safe in logs and headers.
# nginx/nginx.conf keeps the same ones (tests/test_topology.py checks).
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class BodyTooLarge(HTTPException):
    """Raised while a body streams in; FastAPI's handler answers it as a JSON 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"Request body is larger than the limit of {limit} bytes.")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, access_log: str) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers = dict(scope["headers"])
        incoming = headers.get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        started_response = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                headers = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode()), SERVED_BY]
                if lifecycle.draining:
                    # This process is shutting down: the server closes the connection after this
                    # response, and the load balancer knows not to reuse it (no race with a close).
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        received = 0

        async def receive_with_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        try:
            declared = headers.get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                await self._reject(BodyTooLarge(self.max_body_bytes), send_with_request_id)
            else:
                await self.app(scope, receive_with_limit, send_with_request_id)
        except Exception:
            # Inside this middleware, unlike Starlette's outermost error handler, the 500 still
            # carries the request id, and so does its log line.
            log.exception("unhandled error")
            if started_response:
                raise  # too late for a 500: the server closes the connection
            await self._reject(HTTPException(500, detail=INTERNAL_ERROR_DETAIL), send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            # The route template, not the path, keeps the label set small.
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(route=template, method=method, status=str(status)).inc()
            metrics.HTTP_LATENCY.labels(route=template, method=method).observe(elapsed)
            if self._logged(status, elapsed):
                access_log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "client": (scope.get("client") or ("-",))[0],
                        "user_agent": headers.get(b"user-agent", b"").decode("latin-1"),
                    },
                )
            request_id_var.reset(token)

    def _logged(self, status: int, elapsed: float) -> bool:
        if self.access_log == "errors":
            return status >= 400 or elapsed >= SLOW_REQUEST_SECONDS
        return self.access_log == "all"

    @staticmethod
    async def _reject(error: HTTPException, send: Send) -> None:
        body = json.dumps({"detail": error.detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
