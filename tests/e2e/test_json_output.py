"""`--output json` as a script reads it: exactly one JSON object on stdout on every exit of every command
that takes it. The result on exit 0, 1 (a refused gate: `status` `rejected`, the gate report, nothing
registered) and 5; the error object `{"error": {exit_code, kind, message, hint}}` on exit 2, 3, 4
and 70. Human text goes to stderr."""

from __future__ import annotations

import pytest

from tests.helpers import assert_json_failure, assert_one_clear_line, register_args
from tests.mlflow_store import put_champion
from tests.services import free_port

pytestmark = [pytest.mark.e2e]


def register_json(run_cli, token, model, *extra, **kwargs):
    return run_cli(*register_args(token, model, "--output", "json", *extra), **kwargs)


def error_of(result, code: int, kind: str, *fragments: str) -> dict:
    line = assert_one_clear_line(result, code, *fragments)
    error = assert_json_failure(result.stdout, code, line)["error"]
    assert error["kind"] == kind, error
    return error


# ------------------------------------------------------------------------------- a refused gate


def test_a_refused_gate_prints_the_rejected_result(run_cli, make_token, make_model, snapshot):
    token = make_token()
    before = snapshot(token)

    result = register_json(run_cli, token, make_model(metrics={"auroc": 0.7}))

    line = assert_one_clear_line(result, 1, "auroc = 0.7 does not meet the baseline 0.82")
    data = assert_json_failure(result.stdout, 1, line)
    assert data["token_id"] == token
    assert data["status"] == "rejected"
    assert data["model_name"] == f"hokusai-{token}"
    assert (data["mlflow_run_id"], data["model_version"], data["model_uri"]) == (None, None, None)
    assert (data["event_id"], data["events_delivered"], data["dry_run"]) == (None, {}, False)
    gate = data["metric"]
    assert (gate["name"], gate["value"], gate["baseline"], gate["required"]) == ("auroc", 0.7, 0.82, 0.82)
    assert gate["passed"] is False and gate["delta"] == pytest.approx(-0.12)
    assert gate["source"] == "metrics-file"
    assert result.stderr == line + "\n"  # for a human, the one line says it all
    assert snapshot(token) == before


def test_a_model_below_the_champion_prints_the_rejected_result_with_the_champion(
    run_cli, make_token, make_model, mlflow_client, snapshot
):
    token = make_token()
    champion_version = put_champion(mlflow_client, token, 0.95)
    before = snapshot(token)

    result = register_json(run_cli, token, make_model(metrics={"auroc": 0.91}), "--compare-to", "champion")

    line = assert_one_clear_line(result, 1, "does not meet the champion 'champion'")
    data = assert_json_failure(result.stdout, 1, line)
    assert data["status"] == "rejected"
    assert data["metric"]["champion"] == {"alias": "champion", "version": champion_version, "value": 0.95}
    assert data["metric"]["required"] == 0.95
    assert snapshot(token) == before


def test_a_refused_gate_in_text_mode_keeps_stdout_empty(run_cli, make_token, make_model):
    result = run_cli(*register_args(make_token(), make_model(metrics={"auroc": 0.7})))
    line = assert_one_clear_line(result, 1, "does not meet the baseline 0.82", "it must be >= 0.82")
    assert result.stderr == line + "\n"


# ------------------------------------------------------------------------------- error objects


def test_register_bad_input_is_an_input_error_object(run_cli, make_token, make_model, snapshot):
    token = make_token()
    before = snapshot(token)
    result = register_json(run_cli, token, make_model(), "--metric-value", "not-a-number")
    error = error_of(result, 2, "input", "Metric value 'not-a-number' is not a number.")
    assert error["message"] == "Metric value 'not-a-number' is not a number."
    assert snapshot(token) == before


def test_register_a_missing_token_is_a_token_state_error_object(run_cli, make_model):
    error = error_of(register_json(run_cli, "NOSUCHTOKEN", make_model()), 3, "token_state", "does not exist")
    assert error["hint"]


def test_register_with_mlflow_down_is_a_service_unavailable_object(run_cli, make_token, make_model):
    dead = f"http://127.0.0.1:{free_port()}"
    result = register_json(
        run_cli, make_token(), make_model(), env={"MLFLOW_TRACKING_URI": dead, "HOKUSAI_MLFLOW_TIMEOUT": "1"}
    )
    error = error_of(result, 4, "service_unavailable", f"MLflow at {dead} did not answer")
    assert "HOKUSAI_MLFLOW_TIMEOUT" in error["hint"]


def test_a_click_usage_error_is_a_usage_error_object(run_cli):
    result = run_cli("token", "show", "XRAY", "--output", "json", "--no-such-option")
    error = error_of(result, 2, "usage", "No such option '--no-such-option'")
    assert error["hint"] == "Run 'hokusai-ml-platform token show --help' for the options and an example."


def test_token_show_of_a_missing_token_is_an_error_object(run_cli):
    error_of(run_cli("token", "show", "NOPE", "--output", "json"), 3, "token_state", "Token NOPE does not exist")


def test_events_relay_with_a_bad_event_id_is_an_error_object(run_cli):
    result = run_cli("events", "relay", "--event-id", "not-a-uuid", "--output", "json")
    error_of(result, 2, "input", "Event id 'not-a-uuid' is not a UUID.")


def test_model_verify_of_a_missing_token_is_an_error_object(run_cli):
    error_of(run_cli("model", "verify", "--token-id", "NOPE", "--output", "json"), 3, "token_state", "NOPE")
