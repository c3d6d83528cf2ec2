"""What the session fixtures tell at the end of a run, gathered from every pytest-xdist worker.

The suite runs on several xdist workers (scripts/test.sh), each a pytest session of its own with its
own services; a worker has no terminal, so a line a fixture reports there would be lost. Fixtures add
lines with ``report(title, line)`` and the figures of the fault matrix with ``tally().record(...)``;
each worker sends both to the controller when it finishes (``workeroutput``), and the controller (or
a run without workers) prints them once in pytest's terminal summary, each line under the worker that
said it and the fault figures added up over all of them. Loaded as a pytest plugin.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NoReturn

import pytest

from tests.faults import FaultTally

_WORKER_KEY = "hokusai_session_reports"

# title -> lines, in the order said; in the controller, lines from workers carry their worker's id
_sections: dict[str, list[str]] = {}
_tally = FaultTally()


def report(title: str, line: str) -> None:
    """Say ``line`` under ``title`` in the run's terminal summary."""
    _sections.setdefault(title, []).append(line)


def skip(title: str, reason: str) -> NoReturn:
    """Skip the test that needs the service ``title``, and say why under ``title`` in the summary."""
    report(title, f"SKIPPED: {reason}")
    pytest.skip(reason)


def tally() -> FaultTally:
    """This process's fault figures (a worker's are added to the controller's when it finishes)."""
    return _tally


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand everything to the controller (plain data only)
        workeroutput[_WORKER_KEY] = {"sections": _sections, "tally": dataclasses.asdict(_tally)}


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown where xdist is not installed
def pytest_testnodedown(node: Any, error: Any) -> None:
    sent = getattr(node, "workeroutput", {}).get(_WORKER_KEY)
    if not sent:  # a worker that crashed sends nothing; xdist reports the crash itself
        return
    worker = node.workerinput.get("workerid", "worker")
    for title, lines in sent["sections"].items():
        for line in lines:
            report(title, f"[{worker}] {line}")
    _tally.add(FaultTally(**sent["tally"]))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _tally.cases:
        terminalreporter.write_sep("-", "fault matrix")
        for line in _tally.lines():
            terminalreporter.write_line(line, bold=True)
    for title, lines in _sections.items():
        terminalreporter.write_sep("-", title)
        for line in lines:
            terminalreporter.write_line(line, red="SKIPPED: " in line, bold=True)
