"""The HTTP API, everything its process runs: the FastAPI app (`gunicorn -c python:app.api.gunicorn_conf
app.api.main:app`), gunicorn's settings and worker class, the request middleware, the routes
(`*_routes.py`), what they share (deps, errors, schemas, strict JSON bodies, Idempotency-Key) and the
bounded publishing of tasks."""
