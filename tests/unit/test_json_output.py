"""`--output json`: exactly one JSON object on stdout on every exit; the human line on stderr.

A failure (exit 2, 3, 4, 70, or click's own usage errors) prints ``{"error": {exit_code, kind,
message, hint}}``. The commands' own results on exit 0, 1 and 5 are checked end to end
(tests/e2e/test_json_output.py); here the CLI's failure boundary is driven with small commands that
raise, and with click's usage errors on the real command line.
"""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from hokusai_action.cli import main
from hokusai_action.cli.boundary import asks_for_json, handles_errors
from hokusai_action.cli.options import output_option
from hokusai_action.errors import (
    EXIT_INTERNAL,
    EXIT_SERVICE_UNAVAILABLE,
    InputError,
    ServiceUnavailable,
    TokenStateError,
)
from hokusai_action.redact import register_secret

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("fresh_secrets")]

SECRET = "canary-Json-5521"
ERROR_KEYS = {"exit_code", "kind", "message", "hint"}


def run_raising(exc: BaseException, *args: str):
    @click.command()
    @output_option
    @handles_errors
    def broken(output: str) -> None:
        raise exc

    return CliRunner().invoke(broken, list(args))


def error_object(result) -> dict:
    """The one JSON error object of a failed run, checked against its exit code and stderr line."""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    data = json.loads(lines[0])
    assert set(data) == {"error"}
    assert set(data["error"]) == ERROR_KEYS
    assert data["error"]["exit_code"] == result.exit_code
    (stderr_line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert data["error"]["message"] in stderr_line
    return data["error"]


@pytest.mark.parametrize(
    ("exc", "code", "kind"),
    [
        (InputError("Baseline 'x' is not a number.", hint="Pass a number."), 2, "input"),
        (TokenStateError("Token XRAY is 'deployed'."), 3, "token_state"),
        (ServiceUnavailable("MLflow at http://m did not answer within 3 s."), 4, "service_unavailable"),
    ],
)
def test_a_hokusai_error_is_one_json_error_object(exc, code: int, kind: str) -> None:
    result = run_raising(exc, "--output", "json")
    assert result.exit_code == code
    error = error_object(result)
    assert error == {"exit_code": code, "kind": kind, "message": exc.message, "hint": exc.hint}
    assert result.stderr == f"error: {exc.one_line()}\n"


def test_text_output_prints_nothing_on_stdout() -> None:
    result = run_raising(InputError("bad --metric"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == "error: bad --metric\n"


def test_a_bug_is_an_internal_error_object_with_the_debug_hint() -> None:
    result = run_raising(ZeroDivisionError("division by zero"), "--output", "json")
    assert result.exit_code == EXIT_INTERNAL
    assert error_object(result) == {
        "exit_code": EXIT_INTERNAL,
        "kind": "internal",
        "message": "internal error (ZeroDivisionError): division by zero.",
        "hint": "Re-run with --debug and report it.",
    }


def test_a_raw_outage_is_a_service_unavailable_object() -> None:
    result = run_raising(ConnectionRefusedError(111, "Connection refused"), "--output", "json")
    assert result.exit_code == EXIT_SERVICE_UNAVAILABLE
    error = error_object(result)
    assert error["kind"] == "service_unavailable"
    assert error["message"].startswith("a service did not answer (ConnectionRefusedError)")
    assert "Check that MLflow and the database are up" in error["hint"]


def test_an_interrupt_is_an_error_object_too() -> None:
    result = run_raising(KeyboardInterrupt(), "--output", "json")
    assert result.exit_code == 130
    assert error_object(result)["kind"] == "interrupted"


def test_secrets_never_reach_the_error_object() -> None:
    register_secret(SECRET)
    result = run_raising(
        InputError(f"cannot open postgresql://u:{SECRET}@db/x", hint=f"unset {SECRET}"), "--output", "json"
    )
    assert SECRET not in result.stdout + result.stderr
    assert "***" in error_object(result)["message"]


# ----------------------------------------------------------------------- click's own usage errors


def run_main(args: list[str]):
    return CliRunner().invoke(main, args, prog_name="hokusai-ml-platform")


@pytest.mark.parametrize(
    "args",
    [
        ["token", "show", "XRAY", "--output", "json", "--no-such-option"],
        ["token", "show", "--output=json", "XRAY", "--no-such-option"],
        ["events", "relay", "--output", "json", "--interval", "0"],
        ["model", "register", "--output", "json", "--sign", "gpg"],
        ["doctor", "--output", "json", "extra-argument"],
    ],
    ids=["unknown-option", "equals-form", "out-of-range", "bad-choice", "extra-argument"],
)
def test_a_usage_error_with_output_json_is_an_error_object(args: list[str]) -> None:
    result = run_main(args)
    assert result.exit_code == 2
    error = error_object(result)
    assert error["kind"] == "usage"
    assert error["hint"].startswith("Run 'hokusai-ml-platform ")
    assert error["hint"].endswith("--help' for the options and an example.")
    assert len(result.stderr.splitlines()) == 1


def test_a_usage_error_without_output_json_prints_nothing_on_stdout() -> None:
    result = run_main(["token", "show", "XRAY", "--no-such-option"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: No such option '--no-such-option'.")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--output", "json"], True),
        (["--output=json"], True),
        (["--output", "json", "--output", "text"], False),  # the last one wins, as in click
        (["--output=text", "--output", "json"], True),
        (["--output"], False),
        (["--", "--output", "json"], False),
    ],
)
def test_which_output_a_command_line_asks_for(args: list[str], expected: bool) -> None:
    assert asks_for_json(["token", "show", "XRAY", *args]) is expected


def test_json_named_after_a_double_dash_is_an_argument_not_the_output_option() -> None:
    result = run_main(["token", "show", "--", "--output", "json"])
    assert result.exit_code == 2  # "Got unexpected extra arguments"
    assert result.stdout == ""
