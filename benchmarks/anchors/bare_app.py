"""The bare FastAPI anchor: the same framework, server and gunicorn settings as the API (it
runs under app.api.gunicorn_conf), with none of the app's work: no middleware, no database, no
logging per request. What the stack's /health could be at best."""

from fastapi import FastAPI

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}
