"""The Celery side: the Celery app (`celery -A app.worker.celery_app worker|beat`), the tasks,
beat's scheduler, what each worker runs beside its tasks (the dead-letter recorder, the heartbeat),
the broker account set-up, and the call-out policy of the notify task."""
