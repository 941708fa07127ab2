#!/usr/bin/env bash
# `make up`: the whole stack, healthy, from nothing. Starts a Docker engine if needed,
# writes .env with generated secrets if there is none, uses the official images or builds
# stand-ins from Debian packages where no registry is reachable, then waits until every
# service is healthy and says where things are. On a running stack it is the update: the
# new app image replaces the API replicas one at a time (scripts/rollout.sh).
# ENV_FILE names another env file than .env (the e2e tests' stack uses its own).
set -euo pipefail
cd "$(dirname "$0")/.."
env_file=${ENV_FILE:-.env}
compose=(docker compose --env-file "$env_file")

# The app image installs from the lock: a stale one stops here, saying `make lock`.
python3 scripts/lock.py check
scripts/docker-engine.sh

project=$( (sed -n 's/^COMPOSE_PROJECT_NAME=//p' "$env_file" 2>/dev/null || true) | tail -1)
project=${project:-microservices}
if [ ! -f "$env_file" ] && [ -n "$(docker volume ls -q --filter "label=com.docker.compose.project=$project")" ]; then
    cat >&2 <<MSG
error: data volumes of an earlier stack exist ($project), but $env_file is gone: the databases
there were initialised with the passwords it held. Restore it, or delete the old data with
  docker compose -p $project down -v
and run make up again.
MSG
    exit 1
fi
python3 scripts/envfile.py generate --file "$env_file"
scripts/ensure-images.sh "$env_file"

# nginx asks for 65535 open files; some daemons allow fewer, and the container would not start.
limit=$(awk '/Max open files/ {print $5}' "/proc/$(pgrep -o dockerd)/limits" 2>/dev/null || true)
if [ -n "${limit:-}" ] && [ "$limit" != "unlimited" ] && [ "$limit" -lt 65535 ] && [ -z "${NGINX_NOFILE:-}" ]; then
    export NGINX_NOFILE=$limit
fi

started=$(date +%s)
if [ -n "$("${compose[@]}" ps -q api 2>/dev/null)" ]; then
    # Running already (an update): build, then replace the API replicas one at a time; a plain
    # `up` would replace them all at once. The workers and beat follow below (their running
    # tasks finish, or go back to the queue).
    "${compose[@]}" build
    scripts/rollout.sh --env-file "$env_file"
fi
"${compose[@]}" up -d --build --wait
port=$(sed -n 's/^HTTP_PORT=//p' "$env_file" | tail -1)
ui=$(sed -n 's/^RABBITMQ_UI_PORT=//p' "$env_file" | tail -1)
base="http://localhost${port:+:$port}"
[ "${port:-80}" = "80" ] && base="http://localhost"
environment=$(sed -n 's/^ENVIRONMENT=//p' "$env_file" | tail -1)
environment=${environment:-development}
[ "$environment" = development ] && environment="development, over plain HTTP (ENVIRONMENT in $env_file)"
cat <<MSG

The stack is up and healthy ($(( $(date +%s) - started ))s): $environment.
  API            $base/api/items   (writes need X-API-Key: see API_KEYS in .env)
  Docs           $base/docs  and  $base/redoc
  Health         $base/health/ready
  RabbitMQ UI    http://127.0.0.1:${ui:-15672}  (the administrator: RABBITMQ_ADMIN_USER, RABBITMQ_ADMIN_PASSWORD in .env)
  Logs           docker compose logs -f        Stop: make down
MSG
