"""Admission control: past its capacity, an API process sheds new requests with a fast 503.

Without it, every request past capacity queues (in the process's event loop, its thread pool
and the GIL) and each one waits behind all the others: latency grows until deadlines turn
requests into slow failures, and the process looks frozen. Shedding keeps the accepted
requests fast and tells the rest at once to come back (`Retry-After`).

Each process decides from two measures of its own (not a machine-wide figure, which a
shared host would skew):
- **event-loop lag**: how late a timer wakes, smoothed over about half a second. It grows
  when the process cannot get the CPU or the GIL for its requests, which is the queueing a
  caller would meet. One late wake-up (a garbage collection, a busy neighbour) does not shed
  unless it is over five times the bound (each sample weighs a fifth).
- **requests in flight**: a hard ceiling for the case where the CPU is idle but requests pile
  up waiting (a slow dependency), so the process never holds more than it can finish.

Health checks and /metrics are never shed: a process that sheds is overloaded, not down, and
must stay in the load balancer and in the monitoring. A shed request did nothing, so any
method may be retried. uvicorn's own `limit_concurrency` is no substitute: it counts idle
kept-alive connections, and answers plain text without Retry-After and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "1"
EXEMPT_PATHS = ("/health", "/metrics")
# The probe's timer period, and the weight of each new sample in the smoothed lag: with 0.2,
# the smoothed lag follows a sustained change within about half a second (10 samples).
PROBE_SECONDS = 0.05
SMOOTHING = 0.2
# At most one warning a second while shedding: overload must not also flood the log.
LOG_EVERY_SECONDS = 1.0


def exempt(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in EXEMPT_PATHS)


class AdmissionControl:
    """Pure ASGI, outermost: a shed request costs the process as little as possible."""

    def __init__(self, app: ASGIApp, max_in_flight: int, max_lag_ms: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight  # 0: no ceiling
        self.max_lag = max_lag_ms / 1000  # 0: lag is not measured
        self.in_flight = 0
        self.lag = 0.0  # smoothed, seconds
        self._probe: asyncio.Task | None = None
        self._logged = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._stopping_probe(receive), send)
            return
        if scope["type"] != "http" or exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        reason = self.overloaded()
        if reason:
            await self._shed(reason, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def overloaded(self) -> str | None:
        if self.max_in_flight and self.in_flight >= self.max_in_flight:
            return "in_flight"
        if self.max_lag:
            self._watch()
            # The smoothed lag alone: a request that arrives just after one stall (a neighbour took
            # the CPU for a moment) finds the probe overdue, but the stall is over and it is served.
            if self.lag > self.max_lag:
                return "event_loop_lag"
        return None

    def _watch(self) -> None:
        """Starts the probe on the running loop (again, after a test client's loop closed)."""
        loop = asyncio.get_running_loop()
        if self._probe is None or self._probe.done() or self._probe.get_loop() is not loop:
            self.lag = 0.0
            self._probe = loop.create_task(self._measure(), name="admission-lag-probe")

    async def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + PROBE_SECONDS
            await asyncio.sleep(PROBE_SECONDS)
            late = max(0.0, loop.time() - due)
            self.lag += SMOOTHING * (late - self.lag)

    def _stopping_probe(self, receive: Receive) -> Receive:
        """The lifespan's receive, which stops the probe when the process shuts down."""

        async def receive_and_stop() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown" and self._probe is not None:
                self._probe.cancel()
            return message

        return receive_and_stop

    async def _shed(self, reason: str, send: Send) -> None:
        metrics.REQUESTS_SHED.labels(reason=reason).inc()
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY_SECONDS:
            self._logged = now
            log.warning(
                "shedding load",
                extra={"reason": reason, "in_flight": self.in_flight, "lag_ms": round(self.lag * 1000, 1)},
            )
        body = json.dumps(
            {
                "detail": "The API is over capacity; the request was not processed. Retry after the Retry-After delay.",
                "reason": reason,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", RETRY_AFTER_SECONDS.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
