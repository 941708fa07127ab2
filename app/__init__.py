"""FastAPI + Celery service: items on MongoDB, background tasks on RabbitMQ, cache and results in Redis."""

import os

# The image sets APP_VERSION (Dockerfile.app's VERSION build argument).
__version__ = os.environ.get("APP_VERSION") or "0.1.0"
