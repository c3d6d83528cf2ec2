#!/usr/bin/env bash
# Build the sdist and the wheel as the release does (`python -m build`), check them as PyPI will
# (`twine check --strict`), then install the wheel as a user does into a training environment that
# already holds its own MLflow: a fresh venv with mlflow-skinny 3.5.1, SQLAlchemy 2.0.36 and requests
# 2.32.3, then `pip install --constraint <those pins> <wheel>`. `pip check` must be clean there and the
# console script must run. The packages are left in dist/ (the release uploads that folder).
# With --with-tests, the registration, events, signed-verify and MLflow-model end-to-end tests then run
# with the CLI from that environment, through `bash scripts/test.sh` and the services it uses (a real
# `mlflow server` of the lock's version, PostgreSQL on 127.0.0.1:5432, the Pub/Sub emulator).
#
# usage: scripts/check-dist.sh [--with-tests]
# environment: PYTHON=/path/to/python3 to choose the interpreter (3.11 to 3.13)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

with_tests=0
for arg in "$@"; do
    case $arg in
        --with-tests) with_tests=1 ;;
        *)
            echo "check-dist.sh: unknown argument '$arg'; usage: scripts/check-dist.sh [--with-tests]" >&2
            exit 2
            ;;
    esac
done

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
# the package that runs there is the wheel's, not this checkout's (asked from outside the checkout,
# as the tests run the CLI: Python puts the current folder first on its path)
(cd "$work" && "$work/user/bin/python" -c \
    'import hokusai_action, sys; sys.exit(not hokusai_action.__file__.startswith(sys.prefix))') \
    || { echo "check-dist.sh: the training environment imports hokusai_action from outside the installed wheel" >&2; exit 1; }
echo "check-dist.sh: $(basename "${sdists[0]}") and $(basename "${wheels[0]}") pass twine check --strict;" \
    "the wheel installs beside ${user_pins[*]} with pip check clean"

if [[ $with_tests == 1 ]]; then
    # A registration against a real server, its event, a signed one verified and an MLflow model
    # verified byte for byte, each run by the CLI the wheel installed beside the user's pins.
    HOKUSAI_TEST_CLI_PYTHON="$work/user/bin/python" bash scripts/test.sh -m "not slow" \
        tests/e2e/registration/test_register.py::test_register_uploads_records_and_announces \
        tests/e2e/events/test_events.py::test_all_three_sinks_receive_one_event_with_one_id \
        tests/e2e/signing/test_signing.py::test_key_signed_registration_records_and_verifies \
        tests/e2e/mlflow/test_mlflow_flavors.py::test_an_mlflow_model_verifies_and_stays_byte_identical_and_loadable
fi
