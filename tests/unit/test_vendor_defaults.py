"""What the tool sets for its vendors before they load."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.helpers import CLI_PYTHON

pytestmark = [pytest.mark.unit]

PROBE = (
    "from hokusai_action.vendors import route_vendor_output; route_vendor_output(); "
    "from mlflow.telemetry.utils import is_telemetry_disabled; print(is_telemetry_disabled())"
)


def probe(**extra: str) -> str:
    # as on a laptop: MLflow turns its telemetry off by itself only when it sees CI or pytest
    # (CI, GITHUB_ACTIONS, PYTEST_CURRENT_TEST, ...), so the probe gets a bare environment
    environ = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PYTHONPATH", "LANG")}
    environ.update(extra)
    done = subprocess.run([CLI_PYTHON, "-c", PROBE], env=environ, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_mlflow_telemetry_is_off_unless_the_user_turns_it_on() -> None:
    """MLflow's telemetry thread fetches a config from the internet and, when that fails (no egress,
    a proxy), pops an environment variable while a request thread iterates os.environ for proxies:
    one registration in 16 at once died with KeyError('_MLFLOW_TELEMETRY_SESSION_ID'), exit 4."""
    assert probe() == "True"
    assert probe(MLFLOW_DISABLE_TELEMETRY="false") == "False"  # the user's choice wins
