#!/usr/bin/env bash
# Replace the running API replicas one at a time with the app image as it is now (built or
# pulled before): `make up` after a code change runs this. Compose itself replaces every
# replica of a service at once; here each old replica goes only once a new one is healthy.
# For each replica on an older image:
#   1. one more replica is started from the current image, and waited on until healthy
#      (nginx finds it by name within a second);
#   2. the old one is stopped: it stops accepting, drains its connections and finishes what
#      it took (app/api/gunicorn_worker.py), then is removed.
# Then the standby replica is brought to the current image.
#
# Usage: scripts/rollout.sh [docker compose options, e.g. -p NAME --env-file FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
compose=(docker compose "$@")

image=$("${compose[@]}" config --format json | python3 -c 'import json, sys; print(json.load(sys.stdin)["services"]["api"]["image"])')
current=$(docker image inspect -f '{{.Id}}' "$image")

healthy() {  # container id -> wait until its health check passes (run here, every 0.5 s; at most 120 s)
    for _ in $(seq 240); do
        docker exec "$1" python -m app.healthcheck api >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "error: $(docker inspect -f '{{.Name}}' "$1") did not become healthy; the old replicas keep serving" >&2
    return 1
}

replaced=0
for old in $("${compose[@]}" ps -q api); do
    [ "$(docker inspect -f '{{.Image}}' "$old")" = "$current" ] && continue
    before=$("${compose[@]}" ps -q api | sort)
    "${compose[@]}" up -d --no-deps --no-recreate --scale "api=$(($(wc -l <<<"$before") + 1))" api 2>/dev/null
    new=$(comm -13 <(echo "$before") <("${compose[@]}" ps -q api | sort))
    healthy "$new"
    name=$(docker inspect -f '{{.Name}}' "$old")
    docker stop "$old" >/dev/null
    docker rm "$old" >/dev/null
    echo "api: ${name#/} replaced by $(docker inspect -f '{{.Name}}' "$new" | cut -c2-)"
    replaced=$((replaced + 1))
done

standby=$("${compose[@]}" ps -q api-standby)
if [ -n "$standby" ] && [ "$(docker inspect -f '{{.Image}}' "$standby")" != "$current" ]; then
    "${compose[@]}" up -d --no-deps --wait api-standby 2>/dev/null
    echo "api-standby: on the current image"
fi
echo "rollout: $replaced API replica(s) replaced, one at a time"
