"""Small helpers shared by the end-to-end tests and the benchmark."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

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


def cli_command(*args: str) -> list[str]:
    """The command line of ``hokusai-ml-platform ARGS`` as the tests run it, with ``CLI_PYTHON``."""
    return [CLI_PYTHON, "-m", "hokusai_action", *args]


def run_captured(
    command: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` to its end with its output captured as text, whatever its exit code."""
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def start_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """Start ``hokusai-ml-platform ARGS`` as a subprocess and return at once; stdout and stderr are
    pipes of text, for ``communicate()``."""
    return subprocess.Popen(
        cli_command(*args),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def registration_settings(token: str, model: Path, *, environ: dict[str, str], cwd: Path) -> Any:
    """The settings of ``model register --token-id TOKEN --model-path MODEL --metric auroc --baseline
    0.82`` in ``environ``, loaded as the command line loads them."""
    from hokusai_action.settings.loader import load_settings

    return load_settings(
        {"token_id": token, "model_path": str(model), "metric": "auroc", "baseline": "0.82"},
        environ=environ,
        cwd=cwd,
    )


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


def set_token(database, token_id: str, **values) -> None:
    """Set columns of the token's row, as the site (or a run elsewhere) would."""
    from hokusai_action.db.schema import tokens

    with database.unit_of_work() as uow:
        uow.execute(tokens.update().where(tokens.c.token_id == token_id).values(**values))
        uow.commit()


def load_script(path: Path, name: str) -> ModuleType:
    """Import the Python file at ``path`` (a script, outside any package) as a module named ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (relative POSIX path -> bytes) under ``root``; return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


def write_predictions(path, rows: int = 400, seed: int = 7, columns=("label", "score")) -> None:
    """A predictions CSV of a fair binary classifier (AUROC about 0.9), the same rows for the same seed."""
    rng = random.Random(seed)
    lines = [",".join(columns)]
    for _ in range(rows):
        label = rng.random() < 0.5
        score = min(1.0, max(0.0, (0.7 if label else 0.3) + rng.gauss(0, 0.2)))
        lines.append(f"{int(label)},{score:.6f}")
    path.write_text("\n".join(lines) + "\n")


def user_env() -> dict[str, str]:
    """This process's environment without the variables the tool or GitHub's runner read."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_", "PUBSUB_", "GITHUB_"))}


def embedded_env(home: Path) -> dict[str, str]:
    """The user's environment with nothing pointing at a server: the embedded default."""
    env = user_env()
    env.update(
        HOKUSAI_GIT_SHA="0123456789abcdef0123456789abcdef01234567",
        HOKUSAI_GIT_REF="refs/heads/main",
        HOKUSAI_GIT_REPOSITORY="hokusai/example",
    )
    return env
