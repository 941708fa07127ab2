#!/bin/sh
# Start nginx with the configuration in /etc/nginx/app (a directory mount, so edits are what a
# reload reads), and the HTTPS server when a certificate and key are mounted (non-empty files at
# /etc/nginx/certs/tls.crt and tls.key); HTTP only otherwise.
set -eu
mkdir -p /etc/nginx/tls-enabled
rm -f /etc/nginx/tls-enabled/tls.conf
if [ -s /etc/nginx/certs/tls.crt ] && [ -s /etc/nginx/certs/tls.key ]; then
    cp /etc/nginx/app/tls.conf /etc/nginx/tls-enabled/tls.conf
    echo "nginx: TLS enabled" >&2
fi
# `nginx -s reload` and `nginx -t` in this container read the default path: point it here.
ln -sf /etc/nginx/app/nginx.conf /etc/nginx/nginx.conf
nginx -t -q
exec nginx -g 'daemon off;'
