# Stand-in for mongo:7 where no registry is reachable: SecantusDB, a MongoDB-wire-compatible
# server from PyPI. Understands the official image's MONGO_INITDB_ROOT_USERNAME/PASSWORD and
# MONGO_INITDB_DATABASE, plus MONGO_APP_USERNAME/PASSWORD (docker/mongo-init does the same
# on mongo:7), and stand-ins for mongodump and mongorestore. Runs as a non-root user; data in /data/db.
ARG PYTHON_IMAGE=local/python:3.11
FROM ${PYTHON_IMAGE}
# secantus.txt: the lock (make lock), at the version the tests run.
COPY secantus.txt /tmp/secantus.txt
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python -m venv /opt/secantus \
 && /opt/secantus/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes -r /tmp/secantus.txt
RUN groupadd --system --gid 999 mongodb \
 && useradd --system --uid 999 --gid mongodb --home-dir /data --shell /usr/sbin/nologin mongodb \
 && mkdir -p /data/db && chown -R mongodb:mongodb /data
COPY secantus-entrypoint.py /usr/local/bin/docker-entrypoint
COPY mongo-ping.py /usr/local/bin/mongo-ping
# mongodump and mongorestore, as the backup uses them (mongo:7 has the real ones).
COPY mongo-tools.py /usr/local/bin/mongodump
RUN chmod 0755 /usr/local/bin/docker-entrypoint /usr/local/bin/mongo-ping /usr/local/bin/mongodump \
 && ln -s mongodump /usr/local/bin/mongorestore
ENV PATH=/opt/secantus/bin:$PATH
USER mongodb
VOLUME /data/db
EXPOSE 27017
ENTRYPOINT ["docker-entrypoint"]
