"""The baseline: what a bare mlflow-skinny script does to upload and register the same model.

    python benchmarks/bare_mlflow_upload.py TRACKING_URI MODEL_DIR MODEL_NAME

One run with a metric, one logged model holding the files, one registered version, waited until
READY: the same MLflow work `hokusai-ml-platform model register` does, with none of its checks.
"""

from __future__ import annotations

import contextlib
import sys
import time

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus


def main(tracking_uri: str, model_dir: str, model_name: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name("bare-baseline")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("bare-baseline")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "auroc", 0.91)
    logged = client.create_logged_model(experiment_id, name="model", source_run_id=run.info.run_id)
    client.log_model_artifacts(logged.model_id, model_dir)
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.set_terminated(run.info.run_id, "FINISHED")
    with contextlib.suppress(mlflow.exceptions.MlflowException):  # it exists already
        client.create_registered_model(model_name)
    version = client.create_model_version(
        name=model_name,
        source=f"models:/{logged.model_id}",
        run_id=run.info.run_id,
        model_id=logged.model_id,
        await_creation_for=0,
    )
    while version.status == "PENDING_REGISTRATION":
        time.sleep(0.2)
        version = client.get_model_version(model_name, version.version)
    assert version.status == "READY", version.status


if __name__ == "__main__":
    main(*sys.argv[1:4])
