"""The end-of-run reports survive the suite's xdist workers: each worker's lines are printed once under
its id, and the fault matrix's figures are added up over all of them (tests/session_reports.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.unit]

REPO = Path(__file__).resolve().parents[3]

# Two tests that each inject one fault and report one line; under two workers each runs in its own.
RECORDING_TESTS = """
import os

from tests import session_reports
from tests.faults import Verdict


def _record(fault_tally, case, duplicated):
    verdict = Verdict(token_id=case, problems=[], versions_duplicated=duplicated, events_lost=0, event_id=None)
    fault_tally.record(case, reached=True, rerun_ok=True, verdict=verdict)
    session_reports.report("demo service", f"{case} said this in {os.environ.get('PYTEST_XDIST_WORKER', 'main')}")


def test_one(fault_tally):
    _record(fault_tally, "one", 0)


def test_two(fault_tally):
    _record(fault_tally, "two", 1)
"""


def run_pytest(tmp_path: Path, *args: str) -> str:
    (tmp_path / "test_recording.py").write_text(RECORDING_TESTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.session_reports", "-p", "tests.fault_fixtures", "-q", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_two_workers_figures_are_added_up_and_each_workers_lines_printed_once(tmp_path):
    # --dist each: both tests run on both workers, so each worker has figures and lines to hand over
    out = run_pytest(tmp_path, "-n", "2", "--dist", "each")
    assert "end states checked: 4" in out
    assert "faults injected: 4" in out
    assert "re-runs converged: 4" in out
    assert "versions duplicated: 2 (must be 0)" in out
    said = re.findall(r"^\[(gw\d)\] (one|two) said this in (gw\d)$", out, flags=re.MULTILINE)
    assert sorted((worker, case) for worker, case, _ in said) == [
        ("gw0", "one"),
        ("gw0", "two"),
        ("gw1", "one"),
        ("gw1", "two"),
    ], out
    assert all(prefix == worker for prefix, _, worker in said), out
    assert out.count("demo service") == 1, out  # one section, not one per worker


def test_without_workers_the_same_report_is_printed(tmp_path):
    out = run_pytest(tmp_path, "-p", "no:xdist")
    assert "faults injected: 2" in out
    assert "versions duplicated: 1 (must be 0)" in out
    assert re.search(r"^one said this in main$", out, flags=re.MULTILINE), out
    assert re.search(r"^two said this in main$", out, flags=re.MULTILINE), out
