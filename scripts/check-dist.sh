#!/usr/bin/env bash
# Build the sdist and the wheel as the release does (`python -m build`), check them as PyPI will
# (`twine check --strict`), then install the wheel as a user does into a training environment that
# already holds its own MLflow: a fresh venv with mlflow-skinny 3.5.1, SQLAlchemy 2.0.36 and requests
# 2.32.3, then `pip install --constraint <those pins> <wheel>`. `pip check` must be clean there and the
# console script must run. The packages are left in dist/ (the release uploads that folder).
#
# usage: scripts/check-dist.sh
# environment: PYTHON=/path/to/python3 to choose the interpreter (3.11 to 3.13)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python="${PYTHON:-python3}"
# The build and check tools, pinned so every run builds and judges the same way.
tools=(build==1.6.1 twine==7.0.0)
# A training environment's own packages, older than the lock's: none of them may have to move.
user_pins=(mlflow-skinny==3.5.1 sqlalchemy==2.0.36 requests==2.32.3)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pip_install() { "$1" -m pip install --quiet --disable-pip-version-check "${@:2}"; }

"$python" -m venv "$work/tools"
pip_install "$work/tools/bin/python" "${tools[@]}"
rm -rf dist
"$work/tools/bin/python" -m build --outdir dist . >"$work/build.log" 2>&1 || {
    cat "$work/build.log" >&2
    exit 1
}
"$work/tools/bin/twine" check --strict dist/*
sdists=(dist/*.tar.gz)
wheels=(dist/*.whl)
if [[ ${#sdists[@]} != 1 || ${#wheels[@]} != 1 ]]; then
    echo "check-dist.sh: expected one sdist and one wheel in dist/, found: $(ls dist)" >&2
    exit 1
fi

printf '%s\n' "${user_pins[@]}" >"$work/user-pins.txt"
"$python" -m venv "$work/user"
pip_install "$work/user/bin/python" "${user_pins[@]}"
pip_install "$work/user/bin/python" --constraint "$work/user-pins.txt" "${wheels[0]}"
"$work/user/bin/python" -m pip check
"$work/user/bin/hokusai-ml-platform" --help >/dev/null
echo "check-dist.sh: $(basename "${sdists[0]}") and $(basename "${wheels[0]}") pass twine check --strict;" \
    "the wheel installs beside ${user_pins[*]} with pip check clean"
