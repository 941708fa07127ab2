# Stand-in for nginx:1.30, from Debian packages, with curl for the health check. The nginx
# configuration needs 1.27.4 or later (keepalive_min_timeout keeps a reload from resetting
# clients' keep-alive connections; `resolve` follows the compose replicas). Debian 12 and 13
# ship 1.22 and 1.26, so nginx comes from testing (forky), pinned so nothing else does.
# Testing's Release files carry a Valid-Until date that mirrors serving a snapshot have passed;
# the archive's signature is still checked.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}
RUN echo 'deb [check-valid-until=no] http://deb.debian.org/debian forky main' > /etc/apt/sources.list.d/forky.list \
 && printf 'Package: *\nPin: release n=forky\nPin-Priority: 100\n' > /etc/apt/preferences.d/forky \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -t forky nginx \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80 443
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
