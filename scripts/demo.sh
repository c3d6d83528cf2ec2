#!/usr/bin/env bash
# Install the package and run a complete registration on the embedded defaults: a SQLite Hokusai
# database and a local MLflow store under ./.hokusai/ (no server, no settings). Safe to re-run: the
# second run finds the same bytes already registered and exits 0 without uploading anything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
cli=.venv/bin/hokusai-ml-platform

# keep the demo away from any MLflow or database the shell points at
unset MLFLOW_TRACKING_URI HOKUSAI_DATABASE_URL HOKUSAI_EVENT_SINKS

echo "== train a small model (examples/train.py) =="
.venv/bin/python examples/train.py --out examples/checkpoints/final

echo "== create the schema and the draft token XRAY =="
"$cli" db upgrade
"$cli" token show XRAY >/dev/null 2>&1 || "$cli" token create XRAY

echo "== register =="
"$cli" model register --token-id XRAY --model-path examples/checkpoints/final \
    --metric auroc --baseline 0.82

echo "== the token now =="
"$cli" token show XRAY
