"""Exit 70 for a bug, exit 4 for an outage that escaped an adapter raw, one line either way.

A real path to an internal error cannot be provoked from outside (that is what makes it a bug), so
these tests wrap a small command that raises with the CLI's own ``handles_errors`` and drive the
action entrypoint's failure report with a registration that raises.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import entrypoint
from hokusai_action.cli.boundary import handles_errors
from hokusai_action.errors import EXIT_INTERNAL, EXIT_SERVICE_UNAVAILABLE, InputError, TokenStateError
from hokusai_action.failure import one_line
from hokusai_action.redact import register_secret

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("fresh_secrets")]

SECRET = "canary-Secret-9931"


def run_raising(exc: BaseException, *args: str):
    @click.command()
    @handles_errors
    def broken() -> None:
        raise exc

    return CliRunner().invoke(broken, list(args))


def error_lines(result) -> list[str]:
    return result.stderr.splitlines()


def test_an_unexpected_exception_is_exit_70_with_one_line_naming_its_type() -> None:
    result = run_raising(ValueError("could not convert 'x'\nsecond line of detail"))
    assert result.exit_code == EXIT_INTERNAL
    assert error_lines(result) == [
        "error: internal error (ValueError): could not convert 'x'. Re-run with --debug and report it."
    ]
    assert result.stdout == ""


def test_the_internal_error_line_is_redacted() -> None:
    register_secret(SECRET)
    result = run_raising(KeyError(f"postgresql://hokusai:{SECRET}@db/site"))
    assert result.exit_code == EXIT_INTERNAL
    assert SECRET not in result.stderr
    assert "internal error (KeyError): " in result.stderr and "***" in result.stderr


def test_debug_adds_the_redacted_traceback_and_keeps_exit_70() -> None:
    register_secret(SECRET)
    result = run_raising(RuntimeError(f"boom {SECRET}"), "--debug")
    assert result.exit_code == EXIT_INTERNAL
    assert "Traceback (most recent call last)" in result.stderr
    assert "error: internal error (RuntimeError): boom ***. Re-run with --debug and report it." in result.stderr
    assert SECRET not in result.stderr


def test_an_exception_without_a_message_says_no_detail() -> None:
    result = run_raising(AssertionError())
    assert error_lines(result) == [
        "error: internal error (AssertionError): no detail. Re-run with --debug and report it."
    ]


@pytest.mark.parametrize(("exc", "code"), [(InputError("bad --metric"), 2), (TokenStateError("token is deployed"), 3)])
def test_a_hokusai_error_keeps_its_own_code(exc, code: int) -> None:
    result = run_raising(exc)
    assert result.exit_code == code
    assert error_lines(result) == [f"error: {exc.message}"]


def _requests_connection_error() -> BaseException:
    import requests

    return requests.exceptions.ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded")


def _sqlalchemy_operational_error() -> BaseException:
    from sqlalchemy import exc

    return exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


def _mlflow_error_raised_while_handling_a_connection_error() -> BaseException:
    # MLflow's rest_utils raises MlflowException inside `except Exception` without `from`: the
    # connection error is only the implicit __context__
    from mlflow.exceptions import MlflowException

    try:
        try:
            raise _requests_connection_error()
        except Exception as inner:
            raise MlflowException(f"API request to http://127.0.0.1:9 failed with exception {inner}")  # noqa: B904
    except MlflowException as outer:
        return outer


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConnectionRefusedError(111, "Connection refused"),
        lambda: TimeoutError("timed out"),
        lambda: socket.gaierror(-2, "Name or service not known"),
        _requests_connection_error,
        _sqlalchemy_operational_error,
        _mlflow_error_raised_while_handling_a_connection_error,
    ],
    ids=["refused", "timeout", "dns", "requests", "sqlalchemy", "mlflow-context"],
)
def test_a_raw_connection_failure_is_an_outage_exit_4_not_70(make) -> None:
    result = run_raising(make())
    assert result.exit_code == EXIT_SERVICE_UNAVAILABLE, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: a service did not answer ("), lines
    assert "Check that MLflow and the database are up" in lines[0]


@pytest.mark.parametrize(
    "exc",
    [FileNotFoundError(2, "No such file"), PermissionError(13, "denied"), ValueError("x"), OSError("disk")],
    ids=["not-found", "permission", "value", "oserror"],
)
def test_other_errors_are_bugs_not_outages(exc: BaseException) -> None:
    assert run_raising(exc).exit_code == EXIT_INTERNAL


def _bug_raised_while_handling_a_connection_error() -> BaseException:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionError:
            raise KeyError("retry_state")  # noqa: B904 - a bug in a handler: the outage is only its context
    except KeyError as bug:
        return bug


@pytest.mark.parametrize(
    "make",
    [_bug_raised_while_handling_a_connection_error, lambda: BrokenPipeError(32, "Broken pipe")],
    ids=["bug-in-a-handler", "broken-pipe"],
)
def test_a_bug_near_an_outage_is_still_a_bug(make) -> None:
    result = run_raising(make())
    assert result.exit_code == EXIT_INTERNAL, result.stderr


def test_one_line_escapes_control_characters() -> None:
    assert one_line("Token id 'XRAY\n' is\tnot valid\x00\u2028") == "Token id 'XRAY\\n' is\\tnot valid\\x00\\u2028"
    assert one_line("caf\u00e9 ok") == "caf\u00e9 ok"


# ------------------------------------------------------------------------------- the action entrypoint


@pytest.fixture
def on_github(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    import signal

    files = {"output": tmp_path / "output", "summary": tmp_path / "summary"}
    for path in files.values():
        path.write_text("")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(files["output"]))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(files["summary"]))
    monkeypatch.setenv("HOKUSAI_GIT_SHA", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setenv("HOKUSAI_HOME", str(tmp_path / ".hokusai"))
    monkeypatch.chdir(tmp_path)
    for name in ("INPUT_TOKEN-ID", "INPUT_MODEL-PATH", "INPUT_METRIC", "INPUT_BASELINE"):
        monkeypatch.setenv(
            name, {"INPUT_TOKEN-ID": "XRAY", "INPUT_METRIC": "auroc", "INPUT_BASELINE": "0.5"}.get(name, "m")
        )
    sigterm = signal.getsignal(signal.SIGTERM)
    yield files
    signal.signal(signal.SIGTERM, sigterm)  # the entrypoint installs its own handler


def _raise_in_registration(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    import hokusai_action.commands.register as commands

    def run_register(settings, **options):
        raise exc

    monkeypatch.setattr(commands, "run_register", run_register)


def test_the_action_reports_an_internal_error_as_exit_70_with_an_annotation(
    on_github, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _raise_in_registration(monkeypatch, ZeroDivisionError("division by zero"))
    assert entrypoint.main([]) == EXIT_INTERNAL
    out, err = capsys.readouterr()
    line = "internal error (ZeroDivisionError): division by zero. Re-run with the input debug: true and report it."
    assert err.splitlines() == [f"error: {line}"]
    assert f"::error title=Internal error::{line}" in out
    assert "Internal error" in on_github["summary"].read_text()
    assert "Traceback" not in out + err


def test_the_action_reports_a_raw_outage_as_exit_4(
    on_github, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _raise_in_registration(monkeypatch, ConnectionResetError(104, "Connection reset by peer"))
    assert entrypoint.main([]) == EXIT_SERVICE_UNAVAILABLE
    out, err = capsys.readouterr()
    assert err.startswith("error: a service did not answer (ConnectionResetError)")
    assert "::error title=Service unreachable::" in out


def test_the_action_starts_the_models_hash_before_the_registration_as_the_cli_does(
    on_github, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run's wall time is its hash: the action hands the registration a hash already under way."""
    import hokusai_action.commands.register as commands
    from hokusai_action.digest import background as digest

    under_way = object()
    started: list[str] = []
    monkeypatch.setattr(digest, "prefetch_digest", lambda path: started.append(path) or under_way)
    handed: dict[str, object] = {}

    def run_register(settings, **options):
        handed.update(options)
        raise TokenStateError("Token XRAY is 'deployed'.")

    monkeypatch.setattr(commands, "run_register", run_register)
    assert entrypoint.main([]) == 3
    assert [Path(path).name for path in started] == ["m"]
    assert handed.get("prefetched") is under_way


def test_neither_face_imports_the_other() -> None:
    """The action and the command line share ``hokusai_action.failure``, not each other's modules;
    the image's entrypoint imports neither before it knows which one runs."""
    import subprocess
    import sys

    from tests.conftest import REPO

    faces = ("entrypoint", "hokusai_action.action", "hokusai_action.cli")
    probe = (
        "import importlib, json, sys\n"
        "importlib.import_module(sys.argv[1])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m in sys.argv[2:])))\n"
    )
    loaded = {}
    for face in faces:
        done = subprocess.run(
            [sys.executable, "-c", probe, face, *faces],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        loaded[face] = done.stdout.strip()
    assert loaded == {face: f'["{face}"]' for face in faces}
