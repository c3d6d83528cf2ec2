"""``--help`` is documentation and must stay light: every command shows an example, imports no heavy client,
and appears in the README."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from hokusai_action.cli import main
from tests.helpers import CLI_PYTHON

pytestmark = [pytest.mark.unit]

REPO_ROOT = Path(__file__).resolve().parents[2]

COMMAND_PATHS = [
    (),
    ("model",),
    ("model", "register"),
    ("model", "verify"),
    ("db",),
    ("db", "upgrade"),
    ("token",),
    ("token", "create"),
    ("token", "show"),
    ("token", "reset"),
    ("events",),
    ("events", "relay"),
    ("events", "retry"),
    ("doctor",),
]
# DESIGN.md / STYLE.md: --help imports no MLflow, SQLAlchemy or Google client
FORBIDDEN = ("mlflow", "sqlalchemy", "alembic", "google", "grpc", "model_signing", "sigstore")
# hokusai_action.cli is always loaded: it shows the probe sees imports at all
WATCHED = (*FORBIDDEN, "google.cloud.pubsub", "requests", "jsonschema", "hokusai_action.cli")

# runs in a fresh interpreter, so sys.modules shows exactly what `--help` imported
HELP_PROBE = """
import contextlib, io, json, sys
from hokusai_action.cli import main
buffer = io.StringIO()
code = None
with contextlib.redirect_stdout(buffer):
    try:
        main(json.loads(sys.argv[1]), prog_name="hokusai-ml-platform")
    except SystemExit as exc:
        code = exc.code
watched = json.loads(sys.argv[2])
loaded = sorted(
    name for name in sys.modules if any(name == w or name.startswith(w + ".") for w in watched)
)
print(json.dumps({"code": code, "help": buffer.getvalue(), "loaded": loaded}))
"""


def walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            found += walk(sub, (*path, name))
    return found


def label(path: tuple[str, ...]) -> str:
    return " ".join(path) or "(root)"


@pytest.fixture(scope="module")
def help_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], dict[str, Any]]:
    """Run every `--help` at once, each in its own interpreter (in parallel: the suite stays fast)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_", "PUBSUB_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    cwd = tmp_path_factory.mktemp("help")  # no hokusai.yaml, no .hokusai: help must not need either
    running = {
        path: subprocess.Popen(
            [sys.executable, "-c", HELP_PROBE, json.dumps([*path, "--help"]), json.dumps(WATCHED)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for path in COMMAND_PATHS
    }
    results = {}
    for path, process in running.items():
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, f"{label(path)} --help crashed:\n{stderr}"
        results[path] = {**json.loads(stdout), "stderr": stderr}
    return results


def test_the_list_below_covers_every_command() -> None:
    assert walk(main) == sorted(COMMAND_PATHS)


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=label)
def test_help_exits_zero_without_loading_heavy_clients(help_runs, path: tuple[str, ...]) -> None:
    run = help_runs[path]
    assert run["code"] == 0
    assert run["stderr"] == ""
    assert "hokusai_action.cli" in run["loaded"]
    heavy = [name for name in run["loaded"] if name.split(".")[0] in FORBIDDEN]
    assert heavy == [], f"`{label(path)} --help` imported {sorted({n.split('.')[0] for n in heavy})}"


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=label)
def test_help_shows_usage_and_an_example(help_runs, path: tuple[str, ...]) -> None:
    text = help_runs[path]["help"]
    assert text.startswith(f"Usage: {' '.join(('hokusai-ml-platform', *path))} ")
    assert "Example" in text
    assert "hokusai-ml-platform" in text.split("Example", 1)[1]  # the example is a command to copy


def test_register_help_lists_the_design_options_and_exit_codes(help_runs) -> None:
    text = help_runs[("model", "register")]["help"]
    for option in (
        "--token-id",
        "--model-path",
        "--metric",
        "--baseline",
        "--metric-value",
        "--metrics-file",
        "--config",
        "--dry-run",
        "--output",
    ):
        assert option in text
    assert "Exit codes" in text


def test_every_command_appears_in_the_readme() -> None:
    readme = REPO_ROOT / "README.md"
    assert readme.is_file(), "README.md is missing: it must document every command"
    text = readme.read_text(encoding="utf-8")
    missing = [label(path) for path in walk(main) if path and label(path) not in text]
    assert missing == [], f"README.md does not mention: {', '.join(missing)}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model", "register", "--modle-path", "x"], "No such option '--modle-path'. Did you mean '--model-path'?"),
        (["model", "regster"], "No such command 'regster'."),
        (["token", "create"], "Missing argument 'SYMBOL'."),
        (["events", "relay", "--interval", "0"], "Invalid value for '--interval'"),
    ],
)
def test_click_usage_errors_are_one_line_and_exit_2(args: list[str], expected: str) -> None:
    done = subprocess.run(
        [CLI_PYTHON, "-m", "hokusai_action", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Run 'hokusai-ml-platform " in lines[0] and "--help'" in lines[0]
