#!/usr/bin/env bash
# Make sure every image an env file names can be used: present locally, or pulled. When a
# pull fails (no registry reachable), build the stand-ins from Debian packages and point the
# env file at them. Usage: scripts/ensure-images.sh [ENV_FILE]   (default: .env)
set -euo pipefail
cd "$(dirname "$0")/.."
env_file=${1:-.env}

missing=()
for name in PYTHON_IMAGE MONGO_IMAGE REDIS_IMAGE RABBITMQ_IMAGE NGINX_IMAGE; do
    image=$(sed -n "s/^$name=//p" "$env_file" | tail -1)
    [ -n "$image" ] || continue
    docker image inspect "$image" >/dev/null 2>&1 && continue
    if [[ "$image" == local/* ]]; then
        missing+=("$image")
    elif ! timeout 300 docker pull -q "$image" >/dev/null 2>&1; then
        echo "cannot pull $image (no registry reachable?)"
        missing+=("$image")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "building the images from Debian packages instead (scripts/local-images.sh)"
    scripts/local-images.sh "$env_file"
fi
