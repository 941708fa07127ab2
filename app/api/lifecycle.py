"""Where this process is in its life, shared by the server (app/api/gunicorn_worker.py) and the app."""

from __future__ import annotations

# Set when the worker starts its graceful shutdown: every response from then on says
# `Connection: close`, so the load balancer stops reusing this process's connections.
draining = False


def start_draining() -> None:
    global draining
    draining = True
