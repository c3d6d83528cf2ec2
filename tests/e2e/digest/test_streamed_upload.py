"""Bytes read once: a first registration hashes while it uploads, and reuses what a killed run left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hokusai_action.digest.hashing import inspect_model
from tests.faults import run_to_failpoint
from tests.helpers import CLI_PYTHON, register_args
from tests.mlflow_store import logged_models

pytestmark = [pytest.mark.e2e]


def shards(count: int = 5, size: int = 200 * 1024) -> dict[str, bytes]:
    return {f"shard-{i}.bin": os.urandom(size) for i in range(count)}


def test_a_first_registration_records_the_digest_of_the_bytes_it_sent(
    run_cli, make_token, make_model, mlflow_client, tmp_path: Path
) -> None:
    import mlflow

    token, model = make_token(), make_model(files=shards())
    result = run_cli(*register_args(token, model, "--output", "json"))
    assert result.code == 0, result.stderr
    digest = inspect_model(model).digest  # the hash-first formula: the same digest as before streaming
    assert result.json["artifact_digest"] == digest
    version = mlflow_client.get_model_version(f"hokusai-{token}", result.json["model_version"])
    assert version.tags["hokusai.artifact_digest"] == digest
    assert mlflow_client.get_run(version.run_id).data.tags["hokusai.artifact_digest"] == digest
    (logged_id,) = logged_models(mlflow_client, token)
    assert mlflow_client.get_logged_model(logged_id).tags["hokusai.artifact_digest"] == digest
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(tmp_path / "dl")))
    assert {p.name: p.read_bytes() for p in local.iterdir()} == {p.name: p.read_bytes() for p in model.iterdir()}


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["after_finalize", "after_version_created"])
def test_a_rerun_reuses_what_a_killed_run_left_instead_of_a_second_copy(
    phase, run_cli, cli_env, make_token, make_model, mlflow_client, tmp_path: Path
) -> None:
    token, model = make_token(), make_model(files=shards())
    first = run_to_failpoint(
        [CLI_PYTHON, "-m", "hokusai_action", *register_args(token, model)],
        env=cli_env,
        cwd=tmp_path,
        failpoint=f"{phase}:kill",
    )
    assert first.reached, first.stderr
    (left,) = logged_models(mlflow_client, token)  # READY, tagged with the digest

    rerun = run_cli(*register_args(token, model, "--output", "json"))

    assert rerun.code == 0, rerun.stderr
    versions = mlflow_client.search_model_versions(f"name = 'hokusai-{token}'")
    assert [v.version for v in versions] == ["1"]
    assert versions[0].source == f"models:/{left}"  # the killed run's upload is the one registered
    # the token was left 'registering': the re-run hashes first and finds what was left before sending
    assert logged_models(mlflow_client, token) == {left: "READY"}  # no copy of its own
    assert rerun.json.get("upload", {"bytes": 0})["bytes"] == 0
    assert rerun.json["artifact_digest"] == inspect_model(model).digest
