"""entrypoint.py as GitHub's runner runs it: INPUT_* with hyphens, output and summary files, annotations."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tests.github_runner import CANARY, base_inputs, parse_command, parse_output_file, run_entrypoint
from tests.helpers import CLI_PYTHON, register_args, run_captured

pytestmark = [pytest.mark.e2e]

WEBHOOK_CANARY = "whsec_" + "Y2FuYXJ5LXdlYmhvb2stc2VjcmV0LTMyLWJ5dGVzISE="


def test_action_registers_and_writes_outputs_summary(cli_env, services, make_token, make_model, tmp_path, snapshot):
    token = make_token()
    model = make_model()
    done, outputs_text, summary = run_entrypoint(cli_env, services, tmp_path, base_inputs(services, token, model))

    assert done.returncode == 0, done.stderr
    outputs = parse_output_file(outputs_text)
    after = snapshot(token)
    assert outputs["status"] == "registered"
    assert outputs["model-name"] == f"hokusai-{token}"
    assert outputs["model-version"] == "1"
    assert outputs["model-uri"] == f"models:/hokusai-{token}/1"
    assert outputs["mlflow-run-id"] == after.token["mlflow_run_id"]
    assert outputs["metric-value"] == "0.91"
    assert outputs["event-id"] == after.deliveries[0][0]
    assert "| Token |" in summary or "Token" in summary
    assert f"hokusai-{token}" in summary
    assert "0.82" in summary
    # the canary is masked first thing, and never printed anywhere else
    first_line = done.stdout.splitlines()[0]
    assert first_line.startswith("::add-mask::")
    masked = [line for line in done.stdout.splitlines() if line.startswith("::add-mask::")]
    assert f"::add-mask::{CANARY}" in masked
    rest = "\n".join(line for line in done.stdout.splitlines() if not line.startswith("::add-mask::"))
    for text in (rest, done.stderr, outputs_text, summary):
        assert CANARY not in text


def test_action_gate_failure_annotates_and_exits_1(cli_env, services, make_token, make_model, tmp_path, snapshot):
    token = make_token()
    model = make_model(metrics={"auroc": 0.7})
    before = snapshot(token)
    done, outputs_text, summary = run_entrypoint(cli_env, services, tmp_path, base_inputs(services, token, model))

    assert done.returncode == 1, done.stderr
    errors = [parse_command(line) for line in done.stdout.splitlines() if line.startswith("::error")]
    assert len(errors) == 1
    kind, properties, message = errors[0]
    assert kind == "error"
    assert properties["title"] == "Metric below baseline"
    assert "auroc = 0.7 does not meet the baseline 0.82" in message
    assert "Hokusai registration failed" in summary
    assert "| Status | `rejected` |" in summary  # the gate report, as a registration's table
    assert "required 0.82" in summary
    # the outputs a later step reads: what was measured and that it was refused; nothing registered
    outputs = parse_output_file(outputs_text)
    assert (outputs["status"], outputs["metric-value"]) == ("rejected", "0.7")
    assert not {"mlflow-run-id", "model-version", "model-uri", "event-id"} & set(outputs)
    assert snapshot(token) == before


def test_action_secret_inputs_never_leak_on_failure(cli_env, services, make_model, tmp_path):
    inputs = {**base_inputs(services, "NOSUCHTOKEN", make_model()), "webhook-secret": WEBHOOK_CANARY, "debug": "true"}
    done, outputs_text, summary = run_entrypoint(cli_env, services, tmp_path, inputs)

    assert done.returncode == 3
    rest = "\n".join(line for line in done.stdout.splitlines() if not line.startswith("::add-mask::"))
    for text in (rest, done.stderr, outputs_text, summary):
        assert CANARY not in text
        assert WEBHOOK_CANARY not in text
    assert "Token NOSUCHTOKEN does not exist" in done.stderr


def test_action_reads_hokusai_yaml_from_the_workspace(cli_env, services, make_token, make_model, tmp_path):
    token = make_token()
    model = make_model(metrics={"accuracy": 0.93})
    (tmp_path / "hokusai.yaml").write_text(
        f"token_id: {token}\nmodel_path: {model.name}\nmetric: accuracy\nbaseline: 0.9\n"
    )
    inputs = {"mlflow-tracking-uri": services.mlflow_url, "database-url": services.database_url}
    done, outputs_text, _ = run_entrypoint(cli_env, services, tmp_path, inputs)
    assert done.returncode == 0, done.stderr
    assert parse_output_file(outputs_text)["metric-value"] == "0.93"


def test_outside_github_the_entrypoint_is_the_cli(cli_env, services, make_token, make_model, tmp_path):
    token = make_token()
    model = make_model()
    env_cli = {**cli_env}
    args = register_args(token, model, "--output", "json")
    done = run_captured([CLI_PYTHON, str(REPO / "entrypoint.py"), *args], env=env_cli, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"status": "registered"' in done.stdout
    assert "::" not in done.stdout
