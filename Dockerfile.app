# One image for the API, the Celery workers and beat (the command chooses the role).
#
#   docker build -f Dockerfile.app -t microservices-app .
#
# PYTHON_IMAGE defaults to the official slim image; machines without a registry pass the
# one built from Debian packages (make local-images). Where an intercepting proxy re-signs
# TLS, pass its CA bundle as the build secret `pip_ca` (compose does).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# The lock (make lock): every package pinned, each file checked against its hash. Every one
# ships a wheel for CPython 3.11, so the runtime stage needs no compiler.
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r /tmp/requirements.txt

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="microservices-app" \
      org.opencontainers.image.description="FastAPI API, Celery worker and beat" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://example.invalid/microservices-system" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /srv --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
COPY --chown=root:root app /srv/app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_VERSION=${VERSION} \
    APP_ROLE=api \
    BIND=0.0.0.0:8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
USER app
EXPOSE 8000
# One check for every role: APP_ROLE (api, worker, beat) says what to probe.
HEALTHCHECK --interval=5s --timeout=10s --start-period=20s --retries=5 CMD ["python", "-m", "app.healthcheck"]
CMD ["gunicorn", "-c", "python:app.api.gunicorn_conf", "app.api.main:app"]
