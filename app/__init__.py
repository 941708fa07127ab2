"""FastAPI + Celery service: items on MongoDB, background tasks on RabbitMQ, cache and results in Redis."""

import os

# The image sets APP_VERSION (Dockerfile.app's VERSION build argument); the fallback is
# topology.VERSION (app/ imports nothing outside it: tests/test_topology.py checks).
__version__ = os.environ.get("APP_VERSION") or "0.1.0"
