"""The metric gate: values computed from predictions or read from an MLflow run, margins, the champion."""

from __future__ import annotations

import pytest

from tests.helpers import register_args, write_predictions
from tests.mlflow_store import put_champion

pytestmark = [pytest.mark.e2e]


def register(run_cli, token, model, *extra, metric="auroc", baseline="0.82"):
    return run_cli(*register_args(token, model, "--output", "json", *extra, metric=metric, baseline=baseline))


def test_metric_computed_from_a_predictions_file(run_cli, make_token, make_model, mlflow_client, tmp_path):
    from sklearn.metrics import roc_auc_score

    token = make_token()
    predictions = tmp_path / "predictions.csv"
    write_predictions(predictions)
    labels, scores = [], []
    for line in predictions.read_text().splitlines()[1:]:
        label, score = line.split(",")
        labels.append(int(label))
        scores.append(float(score))

    result = register(run_cli, token, make_model(metrics=False), "--predictions", str(predictions))

    assert result.code == 0, result.stderr
    metric = result.json["metric"]
    assert metric["value"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert metric["source"] == "predictions"
    assert "sha256:" in metric["source_detail"]
    version = mlflow_client.get_model_version(f"hokusai-{token}", "1")
    assert version.tags["hokusai.metric_source"] == "predictions"
    assert version.tags["hokusai.metric_source_detail"] == metric["source_detail"]
    assert version.tags["hokusai.gate.passed"] == "true"


def test_predictions_with_wrong_columns_change_nothing(run_cli, make_token, make_model, snapshot, tmp_path):
    token = make_token()
    predictions = tmp_path / "predictions.csv"
    write_predictions(predictions, columns=("y_true", "proba"))
    before = snapshot(token)
    result = register(run_cli, token, make_model(metrics=False), "--predictions", str(predictions))
    assert result.code == 2
    assert "y_true" in result.stderr and "proba" in result.stderr
    assert "--label-column" in result.stderr and "--score-column" in result.stderr  # the flags that fix it
    assert snapshot(token) == before

    named = register(run_cli, token, make_model(metrics=False), "--predictions", str(predictions),
                     "--label-column", "y_true", "--score-column", "probability")  # fmt: skip
    assert named.code == 2
    assert "has no column 'probability'" in named.stderr
    assert "--score-column" in named.stderr and "--label-column" not in named.stderr
    assert snapshot(token) == before


def test_metric_read_from_an_mlflow_run_uses_its_latest_step(run_cli, make_token, make_model, mlflow_client):
    experiment = mlflow_client.get_experiment_by_name("training") or None
    experiment_id = experiment.experiment_id if experiment else mlflow_client.create_experiment("training")
    run = mlflow_client.create_run(experiment_id)
    mlflow_client.log_metric(run.info.run_id, "roc_auc", 0.84, step=0)
    mlflow_client.log_metric(run.info.run_id, "roc_auc", 0.93, step=5)
    mlflow_client.log_metric(run.info.run_id, "loss", 0.2, step=5)
    token = make_token()

    result = register(run_cli, token, make_model(metrics=False), "--mlflow-run-id", run.info.run_id)

    assert result.code == 0, result.stderr
    assert result.json["metric"]["value"] == 0.93
    assert result.json["metric"]["source"] == "mlflow-run"
    assert "step 5" in result.json["metric"]["source_detail"]

    missing = register(run_cli, make_token(), make_model(metrics=False), "--mlflow-run-id", run.info.run_id,
                       metric="f1", baseline="0.5")  # fmt: skip
    assert missing.code == 2
    assert "logged no f1 (it has: loss, roc_auc)" in missing.stderr

    nowhere = register(run_cli, make_token(), make_model(metrics=False), "--mlflow-run-id", "0" * 32)
    assert nowhere.code == 2
    assert f"MLflow run {'0' * 32} does not exist" in nowhere.stderr


@pytest.mark.parametrize(
    ("margin", "code", "required"),
    [("0.05", 1, 0.87), ("0.02", 0, 0.84), ("10%", 1, 0.902), ("2%", 0, 0.8364)],
)
def test_min_improvement_absolute_and_relative(run_cli, make_token, make_model, snapshot, margin, code, required):
    token = make_token()
    before = snapshot(token)
    result = register(run_cli, token, make_model(metrics={"auroc": 0.85}), "--min-improvement", margin)
    assert result.code == code, result.stderr
    if code == 1:
        assert f"does not meet the baseline 0.82 by {margin}" in result.stderr
        assert f"it must be >= {required:g}" in result.stderr
        assert snapshot(token) == before
    else:
        assert result.json["metric"]["required"] == pytest.approx(required)
        assert result.json["metric"]["margin"] == margin


def test_compare_to_champion_when_no_version_holds_it_the_baseline_decides(
    run_cli, make_token, make_model, mlflow_client
):
    token = make_token()
    result = register(run_cli, token, make_model(), "--compare-to", "champion", "--set-alias", "champion")
    assert result.code == 0, result.stderr
    assert result.json["metric"]["champion"] == {"alias": "champion", "version": None, "value": None}
    assert "the fixed baseline alone decides" in " ".join(result.json["metric"]["notes"])
    assert result.json["alias"] == "champion"
    holder = mlflow_client.get_model_version_by_alias(f"hokusai-{token}", "champion")
    assert holder.version == result.json["model_version"]


def test_a_model_must_also_beat_the_champion(run_cli, make_token, make_model, mlflow_client, snapshot):
    token = make_token()
    champion_version = put_champion(mlflow_client, token, 0.95)
    before = snapshot(token)

    worse = register(run_cli, token, make_model(metrics={"auroc": 0.91}), "--compare-to", "champion")

    assert worse.code == 1
    assert f"does not meet the champion 'champion' (version {champion_version}) at 0.95" in worse.stderr
    assert snapshot(token) == before

    better = register(run_cli, token, make_model(metrics={"auroc": 0.97}), "--compare-to", "champion",
                      "--set-alias", "champion")  # fmt: skip
    assert better.code == 0, better.stderr
    gate = better.json["metric"]
    assert gate["champion"] == {"alias": "champion", "version": champion_version, "value": 0.95}
    assert gate["required"] == 0.95
    assert gate["delta"] == pytest.approx(0.02)
    holder = mlflow_client.get_model_version_by_alias(f"hokusai-{token}", "champion")
    assert holder.version == better.json["model_version"] != champion_version
    tags = mlflow_client.get_model_version(f"hokusai-{token}", better.json["model_version"]).tags
    assert tags["hokusai.gate.champion_value"] == "0.95"
    assert tags["hokusai.gate.champion_version"] == champion_version


def test_an_alias_missing_on_a_model_with_versions_is_an_error(
    run_cli, make_token, make_model, mlflow_client, snapshot
):
    token = make_token()
    put_champion(mlflow_client, token, 0.7, alias="prod")
    before = snapshot(token)
    result = register(run_cli, token, make_model(), "--compare-to", "champion")
    assert result.code == 2
    assert f"No version of hokusai-{token} holds the alias 'champion'" in result.stderr
    assert snapshot(token) == before


def test_compare_to_a_version_name_is_refused_before_anything_changes(run_cli, make_token, make_model, snapshot):
    token = make_token()
    before = snapshot(token)
    result = register(run_cli, token, make_model(), "--compare-to", "v7")
    assert result.code == 2, result.output
    assert "--compare-to 'v7' is reserved by MLflow" in result.stderr
    assert result.json["error"]["kind"] == "input"
    assert snapshot(token) == before


def test_one_source_of_the_value_only(run_cli, make_token, make_model, snapshot, tmp_path):
    token = make_token()
    predictions = tmp_path / "p.csv"
    write_predictions(predictions)
    before = snapshot(token)
    result = register(run_cli, token, make_model(), "--metric-value", "0.9", "--predictions", str(predictions))
    assert result.code == 2
    assert "must come from one source, but --metric-value, --predictions were given" in result.stderr
    assert snapshot(token) == before
    assert result.json["error"]["kind"] == "input"  # --output json: the error object, nothing else
