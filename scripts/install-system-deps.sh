#!/usr/bin/env bash
# Install the Debian packages the test suite and the local stack run: redis-server and
# rabbitmq-server (started by the tests on their own ports, never as system services),
# Python 3.11 with venv, and for the compose stack's tests Docker (docker.io), debootstrap
# (images without a registry) and openssl; wrk for the benchmark; the AWS CLI, which a
# controller reads a stack's backups with (restore.yml; the lab's S3 API). Idempotent: does
# nothing when all is present.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
if ! command -v python3.11 >/dev/null 2>&1; then
    missing+=(python3.11 python3.11-venv)
elif ! python3.11 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3.11-venv)
fi
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v aws >/dev/null 2>&1 || missing+=(awscli)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "installing Debian packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
# Tests start their own instances on free ports, so a system service that the package may
# start does not get in the way.
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
