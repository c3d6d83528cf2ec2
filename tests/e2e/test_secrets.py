"""Secrets are never printed: the CLI runs with a canary in every credential (tests/canaries.py; the
autouse fixture scans everything captured), and these tests add the places a user would look first."""

from __future__ import annotations

import json
import time

import pytest
from werkzeug import Request, Response

from tests.canaries import CANARIES, find_canaries
from tests.helpers import assert_one_clear_line, register_args
from tests.services import free_port

pytestmark = [pytest.mark.e2e]


@pytest.mark.parametrize(
    ("extra", "env"),
    [
        ((), {}),
        (("--debug",), {}),
        # the user turned MLflow's printing back on: the URI it prints is redacted on its way out
        ((), {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "false"}),
    ],
    ids=["plain", "debug", "mlflow-prints-the-uri"],
)
def test_a_registration_prints_no_credential(run_cli, make_token, make_model, cli_env, extra, env):
    assert CANARIES.uri_password in cli_env["MLFLOW_TRACKING_URI"]  # MLflow prints this URI when a run ends
    result = run_cli(*register_args(make_token(), make_model(), *extra), env=env)

    assert result.code == 0, result.stderr
    assert find_canaries(result.output) == []
    if env:
        assert "View run" in result.stderr  # stdout belongs to the result
        assert "://***@127.0.0.1:" in result.stderr


def test_a_json_registration_keeps_stdout_for_the_result(run_cli, make_token, make_model):
    result = run_cli(
        *register_args(make_token(), make_model(), "--output", "json"),
        env={"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "false"},
    )
    assert result.code == 0, result.stderr
    assert result.json["status"] == "registered"  # MLflow's lines went to stderr, redacted
    assert "://***@127.0.0.1:" in result.stderr
    assert find_canaries(result.output) == []


def test_an_unreachable_database_under_debug_prints_no_password(run_cli, make_model):
    dead = CANARIES.database_url(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/site")
    result = run_cli(*register_args("XRAY", make_model(), "--debug"), env={"HOKUSAI_DATABASE_URL": dead})

    assert result.code == 4
    assert "postgresql+psycopg2://postgres:***@127.0.0.1" in result.stderr
    assert find_canaries(result.output) == []


def test_an_unreachable_mlflow_under_debug_prints_no_credential(run_cli, make_token, make_model):
    dead = CANARIES.tracking_uri(f"http://127.0.0.1:{free_port()}")
    result = run_cli(
        *register_args(make_token(), make_model(), "--debug"),
        env={"MLFLOW_TRACKING_URI": dead, "HOKUSAI_MLFLOW_TIMEOUT": "2"},
    )
    assert result.code == 4
    assert "MLflow at http://***@127.0.0.1:" in result.stderr
    assert find_canaries(result.output) == []


@pytest.mark.parametrize(
    "args",
    [("db", "upgrade"), ("doctor",), ("doctor", "--output", "json"), ("events", "relay"), ("token", "show", "XRAY")],
    ids=lambda args: " ".join(args),
)
def test_other_commands_print_no_credential(run_cli, args):
    result = run_cli(*args, "--debug")
    # 5: `events relay` over the session database, which holds other tests' undeliverable events
    assert result.code in (0, 3, 5), result.stderr
    assert find_canaries(result.output) == []


@pytest.mark.parametrize("command", ["register", "doctor"])
def test_a_tracking_token_with_a_trailing_newline_is_a_settings_error_naming_the_variable(
    run_cli, make_token, make_model, snapshot, command
):
    """Requests refused the header only when it sent it, quoting it ('Bearer TOKEN\\n'): exit 4 after
    the MLflow timeout, the token printed. Now: exit 2 at once, the variable named, nothing changed."""
    token = make_token()
    before = snapshot(token)
    args = register_args(token, make_model()) if command == "register" else ["doctor"]
    started = time.monotonic()
    result = run_cli(*args, env={"MLFLOW_TRACKING_TOKEN": CANARIES.tracking_token + "\n"})

    assert_one_clear_line(result, 2, "MLFLOW_TRACKING_TOKEN ends with a control character")
    assert time.monotonic() - started < 20
    assert find_canaries(result.output) == []
    assert snapshot(token) == before


def test_basic_credentials_echoed_by_a_server_are_not_printed(run_cli, httpserver):
    """A proxy or server that echoes the request's Authorization header in its error: requests sends the
    tracking URI's user-info as basic auth, and the base64 of user:password is a credential too."""

    def echo(request: Request) -> Response:
        echoed = request.headers.get("Authorization")
        body = {"error_code": "BAD_REQUEST", "message": f"refused Authorization: {echoed}"}
        return Response(json.dumps(body), status=400, content_type="application/json")

    httpserver.expect_request("/api/2.0/mlflow/experiments/get-by-name").respond_with_handler(echo)
    uri = CANARIES.tracking_uri(httpserver.url_for("/").rstrip("/"))

    result = run_cli("doctor", "--output", "json", env={"MLFLOW_TRACKING_URI": uri, "HOKUSAI_MLFLOW_TIMEOUT": "3"})

    (mlflow_check,) = [check for check in json.loads(result.stdout)["checks"] if check["check"] == "mlflow"]
    assert mlflow_check["ok"] is False
    assert "refused Authorization: Basic ***" in mlflow_check["detail"], mlflow_check
    assert find_canaries(result.output) == []
