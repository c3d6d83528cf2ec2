"""`hokusai-ml-platform model register` run as a user runs it, checked as a user would check it."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
import sqlalchemy as sa

from hokusai_action.db.schema import events
from hokusai_action.domain.event import event_id_for
from tests.helpers import register_args

pytestmark = [pytest.mark.e2e]

REGISTER = ("model", "register")


def test_register_uploads_records_and_announces(
    run_cli, make_token, make_model, mlflow_client, database, services, tmp_path
):
    token = make_token()
    model = make_model(metrics={"roc_auc": 0.91})

    result = run_cli(*register_args(token, model, "--output", "json"))

    assert result.code == 0, result.stderr
    out = result.json
    assert out["status"] == "registered"
    assert out["model_name"] == f"hokusai-{token}"
    assert out["model_version"] == "1"
    assert out["model_uri"] == f"models:/hokusai-{token}/1"
    assert out["metric"] == {
        "name": "auroc",
        "value": 0.91,
        "baseline": 0.82,
        "greater_is_better": True,
        "direction": "higher is better",
        "champion": None,
        "margin": None,
        "required": 0.82,
        "delta": pytest.approx(0.09),
        "passed": True,
        "notes": [],
        "source": "metrics-file",
        "source_detail": None,
    }
    assert out["artifact_digest"].startswith("sha256:")
    assert out["event_id"] == event_id_for(token, out["artifact_digest"])
    assert out["events_delivered"] == {"database": True}
    assert out["dry_run"] is False

    # MLflow: the version, its tags, its run with params and the metric
    version = mlflow_client.get_model_version(f"hokusai-{token}", "1")
    assert version.status == "READY"
    assert version.run_id == out["mlflow_run_id"]
    assert version.tags["hokusai.token_id"] == token
    assert version.tags["hokusai.artifact_digest"] == out["artifact_digest"]
    assert version.tags["hokusai.metric"] == "auroc"
    assert float(version.tags["hokusai.metric_value"]) == 0.91
    assert float(version.tags["hokusai.baseline"]) == 0.82
    assert version.tags["git.sha"] == "0123456789abcdef0123456789abcdef01234567"
    run = mlflow_client.get_run(out["mlflow_run_id"])
    assert run.data.metrics["auroc"] == 0.91
    assert run.data.params["token_id"] == token
    assert run.data.tags["hokusai.artifact_digest"] == out["artifact_digest"]
    assert run.info.status == "FINISHED"

    # the model downloads byte-identical
    from mlflow.artifacts import download_artifacts

    downloaded = Path(
        download_artifacts(
            artifact_uri=out["model_uri"], dst_path=str(tmp_path / "dl"), tracking_uri=services.mlflow_url
        )
    )
    compare = filecmp.dircmp(model, downloaded)
    assert not compare.left_only and not compare.right_only and not compare.diff_files
    assert (downloaded / "config" / "params.json").read_bytes() == (model / "config" / "params.json").read_bytes()

    # the Hokusai database: the row and one unprocessed event
    shown = run_cli("token", "show", token, "--output", "json").json
    assert shown["model_status"] == "registered"
    assert shown["mlflow_run_id"] == out["mlflow_run_id"]
    assert shown["model_version"] == "1"
    assert shown["metric_name"] == "auroc" and shown["metric_value"] == 0.91 and shown["baseline_value"] == 0.82
    assert shown["claim_owner"] is None
    with database.unit_of_work() as uow:
        rows = uow.execute(sa.select(events).where(events.c.token_id == token)).all()
    assert len(rows) == 1
    row = rows[0]
    assert str(row.event_id) == out["event_id"]
    assert row.event_type == "token_ready_for_deploy"
    assert row.processed is False
    assert row.payload["type"] == "token_ready_for_deploy"
    assert row.payload["specversion"] == "1.0"
    assert row.payload["subject"] == token
    assert row.payload["data"]["mlflow_run_id"] == out["mlflow_run_id"]
    assert row.payload["data"]["git"] == {
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "ref": "refs/heads/main",
        "repository": "hokusai/example",
    }


def test_rerun_same_bytes_is_idempotent_and_fast_path(run_cli, make_token, make_model, snapshot):
    token = make_token()
    model = make_model()
    first = run_cli(*register_args(token, model, "--output", "json"))
    assert first.code == 0, first.stderr
    before = snapshot(token)

    again = run_cli(*register_args(token, model, "--output", "json"))

    assert again.code == 0, again.stderr
    assert again.json["already_registered"] is True
    for key in ("mlflow_run_id", "model_version", "model_uri", "event_id", "artifact_digest"):
        assert again.json[key] == first.json[key]
    assert snapshot(token) == before  # no new version, no second event, row unchanged
    assert "already registered with these bytes" in again.stderr


def test_other_bytes_for_a_registered_token_exit_3(run_cli, make_token, make_model, snapshot):
    token = make_token()
    assert run_cli(*register_args(token, make_model())).code == 0
    before = snapshot(token)

    other = run_cli(*register_args(token, make_model()))

    assert other.code == 3
    assert f"Token {token} is already registered with other model bytes" in other.stderr
    assert "create a new token" in other.stderr
    assert snapshot(token) == before


def test_single_file_model_downloads_byte_identical(run_cli, make_token, make_model, mlflow_client, services, tmp_path):
    token = make_token()
    model = make_model(kind="file", name="model.onnx")

    result = run_cli(*register_args(token, model, "--metric-value", "0.9", "--output", "json"))

    assert result.code == 0, result.stderr
    from mlflow.artifacts import download_artifacts

    downloaded = Path(
        download_artifacts(
            artifact_uri=result.json["model_uri"],
            dst_path=str(tmp_path / "dl"),
            tracking_uri=services.mlflow_url,
        )
    )
    assert sorted(p.name for p in downloaded.iterdir()) == ["model.onnx"]
    assert (downloaded / "model.onnx").read_bytes() == model.read_bytes()
    assert result.json["metric"]["source"] == "flag"


@pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow nags about type hints on a test model
def test_mlflow_model_directory_stays_loadable_by_pyfunc(run_cli, make_token, tmp_path, mlflow_client):
    import mlflow.pyfunc
    import pandas as pd

    from tests.mlflow_models import save_multiplying_model

    model_dir = save_multiplying_model(tmp_path / "pyfunc-model", factor=2)
    token = make_token()

    result = run_cli(*register_args(token, model_dir, "--metric", "accuracy", "--baseline", "0.9", "--output", "json"))

    assert result.code == 0, result.stderr
    loaded = mlflow.pyfunc.load_model(result.json["model_uri"])
    assert list(loaded.predict(pd.DataFrame({"x": [1, 2, 3]}))) == [2, 4, 6]


def test_dry_run_contacts_services_and_changes_nothing(run_cli, make_token, make_model, snapshot):
    token = make_token()
    model = make_model()
    before = snapshot(token)

    result = run_cli(*register_args(token, model, "--dry-run", "--output", "json"))

    assert result.code == 0, result.stderr
    assert result.json["dry_run"] is True
    assert result.json["status"] == "draft"
    assert result.json["event"]["type"] == "token_ready_for_deploy"
    assert result.json["event"]["subject"] == token
    assert snapshot(token) == before
    assert "Dry run" in result.stderr
    model_line = next(line for line in result.stderr.splitlines() if line.startswith("  model "))
    assert "None" not in model_line and f"hokusai-{token}" in model_line


def test_config_file_settings_with_flags_winning(run_cli, make_token, make_model, tmp_path):
    token = make_token()
    model = make_model(metrics={"accuracy": 0.8, "f1": 0.7})
    (tmp_path / "hokusai.yaml").write_text(
        f"token_id: {token}\nmodel_path: {model.name}\nmetric: accuracy\nbaseline: 0.99\n"
    )

    below = run_cli(*REGISTER)  # 0.8 < 0.99 from the file
    assert below.code == 1
    assert "accuracy = 0.8 does not meet the baseline 0.99" in below.stderr

    result = run_cli(*REGISTER, "--baseline", "0.75", "--output", "json")  # the flag wins
    assert result.code == 0, result.stderr
    assert result.json["metric"]["baseline"] == 0.75


def test_a_deployed_token_with_the_same_bytes_is_a_success(run_cli, make_token, make_model, database, snapshot):
    from hokusai_action.db.schema import tokens

    token = make_token()
    model = make_model()
    assert run_cli(*register_args(token, model)).code == 0
    with database.unit_of_work() as uow:
        uow.execute(tokens.update().where(tokens.c.token_id == token).values(model_status="deployed"))
        uow.commit()
    before = snapshot(token)
    again = run_cli(*register_args(token, model, "--output", "json"))
    assert again.code == 0, again.stderr
    assert again.json["already_registered"] is True
    assert snapshot(token) == before  # still deployed, nothing new


def test_a_rerun_reports_the_registered_value_and_warns_of_the_new_one(run_cli, make_token, make_model, snapshot):
    token = make_token()
    model = make_model(metrics=False)
    first = run_cli(*register_args(token, model, "--metric-value", "0.9", "--output", "json"))
    assert first.code == 0, first.stderr
    assert first.json["warnings"] == []
    before = snapshot(token)

    again = run_cli(*register_args(token, model, "--metric-value", "0.95", "--baseline", "0.8", "--output", "json"))

    assert again.code == 0, again.stderr
    assert again.json["already_registered"] is True
    assert (again.json["metric"]["value"], again.json["metric"]["baseline"]) == (0.9, 0.82)  # what the row holds
    assert len(again.json["warnings"]) == 2
    assert "The auroc value given now (0.95) differs from the registered one (0.9)" in again.json["warnings"][0]
    assert "The baseline given now (0.8) differs from the registered one (0.82)" in again.json["warnings"][1]
    warned = [line for line in again.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 2 and f"token reset {token}" in warned[0]
    assert snapshot(token) == before

    text = run_cli(*register_args(token, model, "--metric-value", "0.95"))
    assert text.code == 0, text.stderr
    assert "auroc = 0.9 >= required 0.82" in text.stdout
    assert "0.95" not in text.stdout
    assert "warning: The auroc value given now (0.95) differs from the registered one (0.9)" in text.stderr

    same = run_cli(*register_args(token, model, "--metric-value", "0.9", "--output", "json"))
    assert same.code == 0 and same.json["warnings"] == [] and "warning:" not in same.stderr


def test_a_rerun_needs_no_measured_value_and_reports_the_registered_source(
    run_cli, make_token, make_model, snapshot, tmp_path
):
    from tests.helpers import write_predictions

    token = make_token()
    model = make_model(metrics=False)
    predictions = tmp_path / "predictions.csv"
    write_predictions(predictions)
    first = run_cli(*register_args(token, model, "--predictions", str(predictions), "--output", "json"))
    assert first.code == 0, first.stderr
    registered = first.json["metric"]
    before = snapshot(token)

    for extra in ((), ("--dry-run",), ("--metric-value", repr(registered["value"]))):
        again = run_cli(*register_args(token, model, *extra, "--output", "json"))
        assert again.code == 0, (extra, again.stderr)
        assert again.json["already_registered"] is True
        assert again.json["model_version"] == first.json["model_version"]
        metric = again.json["metric"]
        assert (metric["value"], metric["baseline"]) == (registered["value"], 0.82)
        # where the registered value came from, not where a value given now would have
        assert (metric["source"], metric["source_detail"]) == ("predictions", registered["source_detail"])
        assert again.json["warnings"] == []
    assert snapshot(token) == before

    fresh = make_token()
    unmeasured = run_cli(*register_args(fresh, make_model(metrics=False), "--output", "json"))
    assert unmeasured.code == 2
    assert "No measured value for 'auroc'" in unmeasured.json["error"]["message"]
    assert snapshot(fresh).token["model_status"] == "draft"


def test_the_action_reports_the_registered_value_with_a_warning_annotation(
    cli_env, services, make_token, make_model, tmp_path
):
    from tests.github_runner import base_inputs, parse_command, parse_output_file, run_entrypoint

    token = make_token()
    model = make_model(metrics=False)
    inputs = {**base_inputs(services, token, model), "metric-value": "0.9"}
    done, _, _ = run_entrypoint(cli_env, services, tmp_path, inputs)
    assert done.returncode == 0, done.stderr

    done, outputs_text, summary = run_entrypoint(cli_env, services, tmp_path, {**inputs, "metric-value": "0.95"})

    assert done.returncode == 0, done.stderr
    assert parse_output_file(outputs_text)["metric-value"] == "0.9"
    warnings = [parse_command(line) for line in done.stdout.splitlines() if line.startswith("::warning")]
    assert len(warnings) == 1
    _kind, properties, message = warnings[0]
    assert properties["title"] == "Registered value differs"
    assert "The auroc value given now (0.95) differs from the registered one (0.9)" in message
    assert "0.95" not in summary
