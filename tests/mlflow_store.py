"""The session's MLflow server as the end-to-end tests seed and inspect it: a champion someone else
registered, the logged models a registration left, the copies of a file in the artifact store."""

from __future__ import annotations

from pathlib import Path

import pytest


def put_champion(mlflow_client, token: str, value: float, alias: str = "champion") -> str:
    """A version of hokusai-<TOKEN> registered by someone else earlier, holding ``alias``."""
    from mlflow.entities import LoggedModelStatus

    name = f"hokusai-{token}"
    experiment = mlflow_client.get_experiment_by_name("hokusai") or None
    experiment_id = experiment.experiment_id if experiment else mlflow_client.create_experiment("hokusai")
    run = mlflow_client.create_run(experiment_id)
    logged = mlflow_client.create_logged_model(experiment_id, name="model", source_run_id=run.info.run_id)
    mlflow_client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    mlflow_client.create_registered_model(name)
    version = mlflow_client.create_model_version(
        name, source=f"models:/{logged.model_id}", run_id=run.info.run_id, model_id=logged.model_id,
        tags={"hokusai.metric": "auroc", "hokusai.metric_value": repr(value)},
    )  # fmt: skip
    mlflow_client.set_registered_model_alias(name, alias, version.version)
    return version.version


def logged_models(mlflow_client, token: str) -> dict[str, str]:
    experiment = mlflow_client.get_experiment_by_name("hokusai")
    found = mlflow_client.search_logged_models(
        [experiment.experiment_id], filter_string=f"tags.`hokusai.token_id` = '{token}'"
    )
    return {model.model_id: str(model.status).rsplit(".", 1)[-1] for model in found}


def stored_copies(tmp_path_factory: pytest.TempPathFactory, original: Path) -> list[Path]:
    """Files in the session's temporary tree with ``original``'s bytes, other than ``original``:
    the copy the MLflow server keeps in its artifact store (``--artifacts-destination`` under the
    session's temporary directory, tests/services.py)."""
    content = original.read_bytes()
    return [
        path
        for path in tmp_path_factory.getbasetemp().rglob(original.name)
        # the size first: the store also holds other tests' files of that name (one of them 2 GiB)
        if path.is_file()
        and path.resolve() != original.resolve()
        and path.stat().st_size == len(content)
        and path.read_bytes() == content
    ]
