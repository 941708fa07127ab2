# Stand-in for rabbitmq:3-management, from Debian packages (RabbitMQ 3.10) with the
# management plugin. RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS create the user on first
# start, as with the official image. Runs as the rabbitmq user, uid and gid 999 as in the official
# image (Ansible gives it the cluster's Erlang cookie as a file it must own); data in /var/lib/rabbitmq.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}
RUN groupadd --system --gid 999 rabbitmq \
 && useradd --system --uid 999 --gid rabbitmq --home-dir /var/lib/rabbitmq --shell /usr/sbin/nologin rabbitmq \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
 && rm -rf /var/lib/apt/lists/* \
 && rabbitmq-plugins enable --offline rabbitmq_management \
 && chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /etc/rabbitmq
ENV RABBITMQ_LOGS=- HOME=/var/lib/rabbitmq
USER rabbitmq
VOLUME /var/lib/rabbitmq
EXPOSE 5672 15672
CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]
