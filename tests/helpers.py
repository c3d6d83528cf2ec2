"""Small helpers shared by the end-to-end tests and the benchmark."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The interpreter that runs the CLI and the action entrypoint in end-to-end tests. scripts/test.sh
# points it at `.venv-cli`, which holds the runtime dependencies only (mlflow-skinny), as users install
# the tool: that is what is under test, and it starts in a third of the time of the test venv, whose
# full `mlflow` (needed for the server) imports pandas and friends. Without it, the test venv runs it.
CLI_PYTHON = os.environ.get("HOKUSAI_TEST_CLI_PYTHON") or sys.executable


def register_args(
    token: str, model: Path | str, *extra: str, metric: str = "auroc", baseline: str | None = "0.82"
) -> list[str]:
    """The arguments of `hokusai-ml-platform model register` as a user types them."""
    args = ["model", "register", "--token-id", token, "--model-path", str(model), "--metric", metric]
    if baseline is not None:
        args += ["--baseline", baseline]
    return [*args, *extra]


def assert_one_clear_line(result, code: int, *fragments: str) -> str:
    """A failed CLI run as a user must see it: ``code``, one ``error:`` line holding ``fragments``,
    no traceback, nothing on stdout. Returns the line."""
    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]
    assert result.stdout == ""
    return error_lines[0]


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (relative POSIX path -> bytes) under ``root``; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root
