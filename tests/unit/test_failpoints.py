"""Failpoints are off unless named, refuse a typo, and do what their action says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from hokusai_action import failpoints
from tests.conftest import REPO

pytestmark = [pytest.mark.unit]


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        (None, None),
        ("", None),
        ("after_claim", ("after_claim", "kill", 0.0)),
        ("before_commit:term", ("before_commit", "term", 0.0)),
        ("mid_upload:sleep:2.5", ("mid_upload", "sleep", 2.5)),
        ("after_publish.webhook:kill", ("after_publish.webhook", "kill", 0.0)),
    ],
)
def test_a_spec_names_one_failpoint_and_its_action(spec, parsed):
    assert failpoints.parse(spec) == parsed


@pytest.mark.parametrize("spec", ["after_clam", "after_claim:explode", "mid_upload:sleep", "after_claim:kill:3"])
def test_a_typo_is_refused_rather_than_silently_never_firing(spec):
    with pytest.raises(ValueError, match="HOKUSAI_FAILPOINT"):
        failpoints.parse(spec)


def test_off_by_default_a_failpoint_does_nothing():
    assert failpoints._ARMED is None
    assert failpoints.failpoint("after_claim") is None


def _run(spec: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "HOKUSAI_FAILPOINT": spec},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_kill_ends_the_process_at_the_named_point_only():
    code = (
        "from hokusai_action.failpoints import failpoint\n"
        "failpoint('after_claim'); print('passed after_claim', flush=True)\n"
        "failpoint('after_publish', 'pubsub'); print('passed webhook', flush=True)\n"
        "failpoint('after_publish', 'webhook'); print('never', flush=True)\n"
    )
    done = _run("after_publish.webhook:kill", code)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.splitlines() == ["passed after_claim", "passed webhook"]
    assert done.stderr == "hokusai failpoint after_publish.webhook: kill\n"
