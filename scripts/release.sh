#!/usr/bin/env bash
# `make release STACK=dev`: ship the app in this checkout to a Pulumi stack as its next version.
#   1. `pulumi up` builds the image, tags it by its content (infra/release.py: src-<hash> of
#      Dockerfile.app and the build context), pushes it to the stack's ECR repository, and sets
#      the stack's app_image output to its digest. An unchanged source builds and pushes nothing.
#   2. `fleet deploy` (ansible/deploy.yml) rolls that digest out: API hosts one at a time, gated
#      on health, under the deploy lock.
# Back to the version before: `make rollback STACK=dev`.
# PULUMI_UP_ARGS passes flags to `pulumi up` (for example --yes, with no one to confirm).
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${STACK:-}
if [ -z "$stack" ]; then
    echo "error: name the Pulumi stack to release to: make release STACK=dev" >&2
    exit 2
fi
if ! command -v pulumi >/dev/null; then
    echo "error: the Pulumi CLI is not installed (https://www.pulumi.com/docs/install/)" >&2
    exit 1
fi
if [ -n "$(git status --porcelain -- app requirements.txt Dockerfile.app 2>/dev/null)" ]; then
    echo "note: app/ has uncommitted changes; they are part of this release (its tag says so)" >&2
fi
echo "release $(.venv-infra/bin/python -m infra.release) to stack $stack"
# shellcheck disable=SC2086 # PULUMI_UP_ARGS is a list of flags
pulumi up --stack "$stack" ${PULUMI_UP_ARGS:-}
PULUMI_STACK=$stack .venv/bin/fleet deploy
