"""Prometheus scrape endpoint."""

from fastapi import APIRouter, Response

from app.core import metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def scrape() -> Response:
    body, content_type = metrics.render()
    return Response(content=body, media_type=content_type)
