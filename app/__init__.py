"""FastAPI + Celery service: items on MongoDB, background tasks on RabbitMQ, cache and results in Redis."""

__version__ = "0.1.0"
