"""Small helpers shared by the end-to-end tests and the benchmark."""

from __future__ import annotations

import json
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
    no traceback, and on stdout nothing, or with ``--output json`` the one JSON object the failure
    prints (``assert_json_failure``). Returns the line."""
    from hokusai_action.cli.boundary import asks_for_json

    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]
    if asks_for_json(getattr(result, "args", ())):
        assert_json_failure(result.stdout, code, error_lines[0])
    else:
        assert result.stdout == ""
    return error_lines[0]


ERROR_OBJECT_KEYS = {"exit_code", "kind", "message", "hint"}


def assert_json_failure(stdout: str, code: int, error_line: str | None = None) -> dict:
    """The stdout of a failed ``--output json`` run: exactly one JSON object. Exit 1 of a registration
    is its result (``status`` ``rejected``, nothing registered) and exit 5 its result; any other exit
    is the error object ``{"error": {exit_code, kind, message, hint}}`` whose message is on the
    ``error:`` line. Returns the object."""
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    data = json.loads(lines[0])
    assert isinstance(data, dict), data
    if "error" in data:
        assert set(data["error"]) == ERROR_OBJECT_KEYS, data
        assert data["error"]["exit_code"] == code, data
        assert isinstance(data["error"]["kind"], str) and data["error"]["kind"], data
        if error_line is not None:
            assert data["error"]["message"] in error_line, (data, error_line)
    else:
        assert code in (1, 5), data
        if data.get("status") == "rejected":
            assert code == 1
            assert (data["mlflow_run_id"], data["model_version"], data["event_id"]) == (None, None, None), data
            assert data["metric"]["passed"] is False, data
    return data


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (relative POSIX path -> bytes) under ``root``; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root
