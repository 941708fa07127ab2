# The lab's cloud services (cloud.py), one image for all three: Debian's docker-registry and
# pebble (an ACME server), and moto's S3 API server from the lock (cloud.txt). Each runs in a
# container of its own, as a user of its own. BASE_IMAGE: debian:12, or local/debian:bookworm
# without a registry.
ARG BASE_IMAGE=debian:12
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      docker-registry pebble apache2-utils python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY cloud.txt /tmp/cloud.txt
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python3 -m venv /opt/moto \
 && /opt/moto/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes -r /tmp/cloud.txt
