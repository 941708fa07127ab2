#!/usr/bin/env bash
# Build every image the stack uses from Debian packages, for machines that cannot reach a
# container registry: a Debian 12 base from debootstrap + docker import, then Python, Redis,
# RabbitMQ, nginx and a MongoDB-protocol stand-in (SecantusDB) on it. Then point the image
# variables in .env at them (the app image is built on local/python by compose).
#
# Usage: scripts/local-images.sh [ENV_FILE]   (default: .env)
# PIP_CA_BUNDLE: CA bundle for pip inside the builds (default: the host's).
set -euo pipefail
cd "$(dirname "$0")/.."
env_file=${1:-.env}

scripts/docker-engine.sh

if ! docker image inspect local/debian:bookworm >/dev/null 2>&1; then
    command -v debootstrap >/dev/null 2>&1 || {
        [ "$(id -u)" -eq 0 ] && sudo="" || sudo="sudo"
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap >/dev/null
    }
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap: Debian 12 minbase into $root"
    debootstrap --variant=minbase bookworm "$root/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$root/debootstrap.log" \
        || { tail -20 "$root/debootstrap.log" >&2; exit 1; }
    rm -rf "$root"/rootfs/var/cache/apt/archives/*.deb "$root"/rootfs/var/lib/apt/lists/*
    tar -C "$root/rootfs" -c . | docker import -c 'CMD ["bash"]' - local/debian:bookworm >/dev/null
    echo "imported local/debian:bookworm"
fi

docker compose -f docker/local/images.yml build python redis rabbitmq nginx
docker compose -f docker/local/images.yml build mongo
"${PYTHON:-python3}" scripts/envfile.py use-local-images --file "$env_file"
