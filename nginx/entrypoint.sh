#!/bin/sh
# Start nginx with the configuration in /etc/nginx/app (a directory mount, so edits are what a
# reload reads). With a certificate and key mounted (non-empty /etc/nginx/certs/tls.crt and
# tls.key): HTTPS on 443, and port 80 only redirects to it. Without: the API on plain HTTP.
# HTTPS_PORT: the port clients reach HTTPS on, when it is not 443 (compose may publish another).
# ENVIRONMENT=production without a certificate: no start, unless ALLOW_PLAIN_HTTP=true.
set -eu
mkdir -p /etc/nginx/enabled /var/www/acme
rm -f /etc/nginx/enabled/*.conf
if [ -s /etc/nginx/certs/tls.crt ] && [ -s /etc/nginx/certs/tls.key ]; then
    cp /etc/nginx/app/tls.conf /etc/nginx/app/http-redirect.conf /etc/nginx/enabled/
    port=${HTTPS_PORT:-443}
    suffix=""
    [ "$port" = "443" ] || suffix=":$port"
    printf 'map "" $https_port_suffix { default "%s"; }\n' "$suffix" > /etc/nginx/enabled/https-port.conf
    echo "nginx: HTTPS on; port 80 redirects to it" >&2
elif [ "${ENVIRONMENT:-}" = production ] && [ "${ALLOW_PLAIN_HTTP:-false}" != true ]; then
    echo "nginx: ENVIRONMENT=production serves HTTPS only, and no certificate is mounted." \
        "Set TLS_CERT_FILE and TLS_KEY_FILE, or ALLOW_PLAIN_HTTP=true where TLS ends before this" \
        "load balancer." >&2
    exit 1
else
    cp /etc/nginx/app/http.conf /etc/nginx/enabled/
fi
# `nginx -s reload` and `nginx -t` in this container read the default path: point it here.
ln -sf /etc/nginx/app/nginx.conf /etc/nginx/nginx.conf
nginx -t -q
exec nginx -g 'daemon off;'
