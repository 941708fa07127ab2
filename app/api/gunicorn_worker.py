"""The gunicorn worker: uvicorn's, with a shutdown that loses no request on a kept-alive connection.

A worker shuts down when gunicorn recycles it (`max_requests`) or stops (a deploy, `docker stop`).
uvicorn then closes every idle keep-alive connection at once. nginx may be sending a request on
one of them at that very moment: the request is lost, and nginx retries it elsewhere only if its
method is idempotent (a POST gets a 502). This worker drains instead:

1. it stops accepting connections (the other workers, or the other replicas, take new ones);
2. every response from then on says `Connection: close` (app/api/middleware.py), so the connection
   it answers on is closed by the server once the client knows not to reuse it;
3. idle connections are left to the client, which closes them within its keep-alive timeout
   (nginx: 10 s, nginx/upstream.conf), for at most GUNICORN_DRAIN_SECONDS;
4. then uvicorn's own shutdown runs: whatever is still open is closed, and requests in flight finish.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from app.api import lifecycle

# Longer than the load balancer's idle keep-alive timeout towards the API (nginx: 10 s).
DEFAULT_DRAIN_SECONDS = 12.0


class DrainingServer(Server):
    drain_seconds = DEFAULT_DRAIN_SECONDS

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        lifecycle.start_draining()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        while self.server_state.connections and not self.force_exit and loop.time() < deadline:
            for connection in list(self.server_state.connections):
                cycle = getattr(connection, "cycle", None)
                if cycle is not None and not cycle.response_complete:
                    cycle.keep_alive = False  # the response in progress closes its connection
            await asyncio.sleep(0.1)
        await super().shutdown(sockets=[])


class DrainingUvicornWorker(UvicornWorker):
    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        server.drain_seconds = float(os.environ.get("GUNICORN_DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS))
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
