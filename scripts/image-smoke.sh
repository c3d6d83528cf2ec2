#!/usr/bin/env bash
# Smoke-test the container image the way a user runs it, without a Docker engine.
#
# Builds the image (scripts/build-image.sh), then, inside a buildah working container:
#   1. runs the image's ENTRYPOINT with --help and expects exit 0;
#   2. when MLFLOW_TRACKING_URI and HOKUSAI_DATABASE_URL are set, runs a full registration against
#      those services: `db upgrade`, `token create SMOKE<random>`, then the entrypoint with
#      `model register ... --output json` on a small model in a temporary workspace mounted at
#      /github/workspace, and checks the JSON result says "registered".
# `buildah run` shares the host network, so services on 127.0.0.1 answer from inside the image.
#
# usage: scripts/image-smoke.sh [TAG]              default TAG: hokusai-ml-platform:dev
# environment:
#   MLFLOW_TRACKING_URI, HOKUSAI_DATABASE_URL   enable step 2; passed into the image together with
#                                               every other HOKUSAI_*, MLFLOW_* and PUBSUB_EMULATOR_HOST
#   SKIP_BUILD=1                                test the existing TAG without rebuilding it
#   BUILD_CONTEXT                               passed on to build-image.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${1:-hokusai-ml-platform:dev}"
cli=/opt/venv/bin/hokusai-ml-platform
python_in_image=/opt/venv/bin/python

export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
bah() { buildah --storage-driver vfs "$@"; }

log() { printf 'image-smoke: %s\n' "$*" >&2; }
fail() {
    log "FAIL: $*"
    exit 1
}

if [[ "${SKIP_BUILD:-}" != 1 ]]; then
    "${repo_root}/scripts/build-image.sh" "${tag}"
fi

container=""
scratch_dir="$(mktemp -d)"
cleanup() {
    if [[ -n "${container}" ]]; then
        bah rm "${container}" >/dev/null || log "could not remove working container ${container}"
    fi
    rm -rf "${scratch_dir}"
}
trap cleanup EXIT

workspace="${scratch_dir}/workspace" # mounted as /github/workspace, the image's WORKDIR
secrets="${scratch_dir}/secrets"     # mounted read-only; holds the environment handed to the image
mkdir -p "${workspace}" "${secrets}"
chmod 700 "${secrets}"

container="$(bah from --pull=never --name "hokusai-smoke-$$" "${tag}")"

# The image's own ENTRYPOINT, as `docker run` would start it.
mapfile -t entrypoint < <(bah inspect --type image "${tag}" |
    python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)["OCIv1"]["config"].get("Entrypoint") or []))')
((${#entrypoint[@]})) || fail "${tag} has no ENTRYPOINT"

# The environment reaches the image through a JSON file read by a tiny exec shim, not through
# `buildah run --env NAME=VALUE`, which would show a database password on the process list.
python3 - "${secrets}/env.json" <<'PY'
import json
import os
import re
import sys

wanted = re.compile(r"^(HOKUSAI_|MLFLOW_)|^PUBSUB_EMULATOR_HOST$")
with open(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as env_file:
    json.dump({name: value for name, value in os.environ.items() if wanted.search(name)}, env_file)
PY
with_env=("${python_in_image}" -c 'import json, os, sys
os.environ.update(json.load(open("/run/hokusai-smoke/env.json")))
os.execv(sys.argv[1], sys.argv[1:])')

# Run a command inside the image with the workspace and the environment mounted.
in_image() {
    bah run --isolation chroot --network host \
        --volume "${workspace}:/github/workspace" \
        --volume "${secrets}:/run/hokusai-smoke:ro" \
        "${container}" -- "${with_env[@]}" "$@"
}

# 1. --help through the entrypoint.
help_out="${scratch_dir}/help.out"
status=0
in_image "${entrypoint[@]}" --help >"${help_out}" 2>&1 || status=$?
if ((status != 0)); then
    cat "${help_out}" >&2
    fail "'${entrypoint[*]} --help' exited ${status}, expected 0"
fi
grep -q 'model' "${help_out}" || fail "--help does not list the model command: $(head -c 500 "${help_out}")"
log "ok: ${entrypoint[*]} --help exits 0"

# 2. A full registration against real services.
if [[ -z "${MLFLOW_TRACKING_URI:-}" || -z "${HOKUSAI_DATABASE_URL:-}" ]]; then
    log "skipped the registration check: set MLFLOW_TRACKING_URI and HOKUSAI_DATABASE_URL to run it"
    log "PASS (--help only)"
    exit 0
fi

token="SMOKE$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F')"
mkdir -p "${workspace}/model"
printf 'smoke-test model for %s, %s\n' "${token}" "$(date -u +%FT%TZ)" >"${workspace}/model/weights.txt"
printf '{"accuracy": 0.9}\n' >"${workspace}/model/metrics.json"

# Run one step; on failure show what it printed and stop.
step() {
    local name="$1" status=0
    shift
    in_image "$@" >"${scratch_dir}/${name}.out" 2>"${scratch_dir}/${name}.err" || status=$?
    if ((status != 0)); then
        cat "${scratch_dir}/${name}.err" "${scratch_dir}/${name}.out" >&2
        fail "${name}: '$*' exited ${status}"
    fi
    log "ok: ${name}"
}

step db-upgrade "${cli}" db upgrade
step token-create "${cli}" token create "${token}"
step register "${entrypoint[@]}" model register --token-id "${token}" --model-path model \
    --metric accuracy --baseline 0.5 --output json

python3 - "${scratch_dir}/register.out" "${token}" <<'PY' || fail "registration result is not what was expected"
import json
import sys

path, token = sys.argv[1:]
with open(path) as out:
    text = out.read()
try:
    result = json.loads(text)
except ValueError:
    sys.exit(f"stdout is not one JSON object: {text[:500]!r}")
problems = []
if result.get("status") != "registered":
    problems.append(f"status is {result.get('status')!r}, expected 'registered'")
if result.get("token_id") != token:
    problems.append(f"token_id is {result.get('token_id')!r}, expected {token!r}")
if not result.get("model_version"):
    problems.append("model_version is empty")
if problems:
    sys.exit("; ".join(problems) + f"\nresult: {text}")
print(
    f"image-smoke: ok: {token} registered as {result.get('model_name')} "
    f"version {result['model_version']}, event {result.get('event_id')}",
    file=sys.stderr,
)
PY
log "PASS (--help and a full registration)"
