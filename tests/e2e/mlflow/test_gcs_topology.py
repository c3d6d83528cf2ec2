"""The production topology: MLflow's artifacts in a GCS bucket (fake-gcs-server), both ways it is deployed.

- proxied: ``mlflow server --serve-artifacts --artifacts-destination gs://B/prefix``; the client talks
  HTTP to the server only (it is run here without ``STORAGE_EMULATOR_HOST``), the server writes the bucket.
- direct: ``mlflow server --no-serve-artifacts --default-artifact-root gs://B/prefix``; the client writes
  the bucket itself through google-cloud-storage, anonymously because ``STORAGE_EMULATOR_HOST`` is set.

In both, what a user would check: ``model register`` exits 0, the registered version downloads
byte-identical, the bytes really are objects in the bucket, an MLflow model directory stays loadable,
and a re-run changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CliResult
from tests.gcs_emulator import GcsEmulator
from tests.helpers import cli_command, register_args, run_captured
from tests.services import MlflowServer, create_database, drop_database, start_mlflow_server

pytestmark = [pytest.mark.e2e]

# Google's credential variables the client must not need with the emulator (ADC would find them)
GOOGLE_CREDENTIAL_VARIABLES = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE")


@dataclass
class Topology:
    mode: str  # "proxied" or "direct"
    server: MlflowServer
    prefix: str  # the objects of this server live under gs://<bucket>/<prefix>/
    emulator: GcsEmulator

    @property
    def client_writes_bucket(self) -> bool:
        return self.mode == "direct"


@pytest.fixture(scope="session", params=["proxied", "direct"])
def gcs_topology(request, gcs_emulator: GcsEmulator, tmp_path_factory) -> Iterator[Topology]:
    """One MLflow server per mode (pytest runs one mode's tests, then stops it, then the other's)."""
    mode = request.param
    backend = create_database(f"hokusai_mlflow_gcs_{mode}")
    prefix = f"mlflow-{mode}"
    server = start_mlflow_server(
        tmp_path_factory.mktemp(f"mlflow-gcs-{mode}"),
        backend,
        artifact_store=gcs_emulator.artifact_uri(prefix),
        proxied=mode == "proxied",
        env={"STORAGE_EMULATOR_HOST": gcs_emulator.url},
    )
    try:
        yield Topology(mode=mode, server=server, prefix=prefix, emulator=gcs_emulator)
    finally:
        server.stop()
        drop_database(backend)


@pytest.fixture
def run_on(gcs_topology: Topology, cli_env: dict[str, str], tmp_path: Path) -> Callable[..., CliResult]:
    """Run the CLI against the topology's server, with what a user of that topology has set."""
    env = {k: v for k, v in cli_env.items() if k not in (*GOOGLE_CREDENTIAL_VARIABLES, "STORAGE_EMULATOR_HOST")}
    env["MLFLOW_TRACKING_URI"] = gcs_topology.server.url
    if gcs_topology.client_writes_bucket:
        env["STORAGE_EMULATOR_HOST"] = gcs_topology.emulator.url

    def run(*args: str, env_changes: dict[str, str | None] | None = None) -> CliResult:
        """``env_changes``: variables to set, or to remove where the value is None."""
        run_env = dict(env)
        for name, value in (env_changes or {}).items():
            if value is None:
                run_env.pop(name, None)
            else:
                run_env[name] = value
        done = run_captured(cli_command(*args), env=run_env, cwd=tmp_path)
        return CliResult(done.returncode, done.stdout, done.stderr, tuple(args))

    return run


@contextlib.contextmanager
def mlflow_pointed_at(url: str) -> Iterator[object]:
    """MLflow's global tracking/registry URIs on ``url`` (``models:/`` resolves through them), then back."""
    import mlflow

    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    try:
        yield mlflow.MlflowClient(tracking_uri=url, registry_uri=url)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def tree(root: Path) -> dict[str, bytes]:
    """relative posix path -> bytes of every file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def blobs_of_model(topology: Topology, model_id: str) -> dict[str, bytes]:
    """The logged model's files as objects in the bucket: relative path -> bytes."""
    marker = f"/models/{model_id}/artifacts/"
    found = {}
    for name, data in topology.emulator.blobs(topology.prefix + "/").items():
        if marker in name:
            found[name.split(marker, 1)[1]] = data
    return found


def test_register_puts_the_bytes_in_the_bucket_and_they_download_identical(
    gcs_topology: Topology, run_on, make_token, make_model, tmp_path
):
    token = make_token()
    files = {
        # over google-cloud-storage's 8 MiB single-request limit: sent as a resumable upload
        "weights.bin": os.urandom(9 * 1024 * 1024 + 17),
        "tokenizer/vocab.txt": b"a\nb\nc\n",
        "tokenizer/deep/config.json": b'{"layers": 2}',
        "empty.txt": b"",
    }
    model = make_model(files=files)

    result = run_on(*register_args(token, model, "--output", "json"))

    assert result.code == 0, result.stderr
    out = result.json
    assert out["status"] == "registered" and out["model_version"] == "1"
    with mlflow_pointed_at(gcs_topology.server.url) as client:
        from mlflow.artifacts import download_artifacts

        version = client.get_model_version(out["model_name"], "1")
        assert version.status == "READY"
        model_id = version.source.removeprefix("models:/")  # the server leaves version.model_id empty
        location = client.get_logged_model(model_id).artifact_location
        expected_scheme = "gs://" if gcs_topology.client_writes_bucket else "mlflow-artifacts:"
        assert location.startswith(expected_scheme), location
        downloaded = Path(
            download_artifacts(
                artifact_uri=out["model_uri"], dst_path=str(tmp_path / "dl"), tracking_uri=gcs_topology.server.url
            )
        )
    assert tree(downloaded) == tree(model)  # file by file, bytes and names
    # the bytes are objects in the bucket, not on some local disk
    assert blobs_of_model(gcs_topology, model_id) == tree(model)

    objects_before = gcs_topology.emulator.blob_names(gcs_topology.prefix + "/")
    again = run_on(*register_args(token, model, "--output", "json"))

    assert again.code == 0, again.stderr
    assert "already registered with these bytes" in again.stderr
    for key in ("model_version", "mlflow_run_id", "artifact_digest", "event_id"):
        assert again.json[key] == out[key]
    assert gcs_topology.emulator.blob_names(gcs_topology.prefix + "/") == objects_before  # nothing uploaded
    with mlflow_pointed_at(gcs_topology.server.url) as client:
        assert [v.version for v in client.search_model_versions(f"name = '{out['model_name']}'")] == ["1"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # MLflow nags about type hints on a test model
def test_mlflow_model_directory_stays_loadable(gcs_topology: Topology, run_on, make_token, tmp_path):
    import mlflow.pyfunc
    import pandas as pd

    from tests.mlflow_models import save_multiplying_model

    model_dir = save_multiplying_model(tmp_path / "pyfunc-model", factor=3)
    token = make_token()

    result = run_on(*register_args(token, model_dir, "--metric", "accuracy", "--baseline", "0.9", "--output", "json"))

    assert result.code == 0, result.stderr
    with mlflow_pointed_at(gcs_topology.server.url):
        loaded = mlflow.pyfunc.load_model(result.json["model_uri"])
    assert list(loaded.predict(pd.DataFrame({"x": [1, 2, 3]}))) == [3, 6, 9]


# ------------------------------------------------------------------------------------------- doctor


def test_doctor_names_the_identity_that_writes_the_bucket(gcs_topology: Topology, run_on, tmp_path):
    """Direct mode: this machine writes gs://, so doctor says as whom (read from the credentials file,
    no call to Google). Proxied mode: the server writes the bucket with its own identity; no line."""
    from tests.google_credentials import github_wif

    experiment = f"doctor-{gcs_topology.mode}"
    with mlflow_pointed_at(gcs_topology.server.url) as client:
        if client.get_experiment_by_name(experiment) is None:
            client.create_experiment(experiment)  # artifact location: the server's default root
    info, secrets = github_wif()
    credentials = tmp_path / "gha-creds-0123456789abcdef.json"
    credentials.write_text(json.dumps(info))

    result = run_on(
        "doctor",
        "--output",
        "json",
        env_changes={
            "HOKUSAI_MLFLOW_EXPERIMENT": experiment,
            "STORAGE_EMULATOR_HOST": None,  # as in production: the real GCS, so credentials matter
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
        },
    )

    assert result.code == 0, result.output
    checks = {item["check"]: item for item in result.json["checks"]}
    for secret in secrets:
        assert secret not in result.output
    if not gcs_topology.client_writes_bucket:
        assert "gcs auth" not in checks
        return
    assert checks["gcs auth"]["ok"]
    detail = checks["gcs auth"]["detail"]
    assert detail.startswith("external_account, Workload Identity Federation, provider //iam.googleapis.com/")
    assert "impersonating deployer@hokusai-prod.iam.gserviceaccount.com" in detail
    assert detail.endswith(f"file {credentials} (GOOGLE_APPLICATION_CREDENTIALS)")

    emulated = run_on("doctor", env_changes={"HOKUSAI_MLFLOW_EXPERIMENT": experiment})
    assert emulated.code == 0, emulated.output
    assert f"gcs auth  emulator at {gcs_topology.emulator.url} (STORAGE_EMULATOR_HOST), no credentials" in (
        emulated.stdout
    )

    missing = run_on(
        "doctor",
        env_changes={
            "HOKUSAI_MLFLOW_EXPERIMENT": experiment,
            "STORAGE_EMULATOR_HOST": None,
            "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "gha-creds-gone.json"),
        },
    )
    assert missing.code == 2
    assert "FAIL gcs auth" in missing.stdout and "gha-creds-gone.json, which does not exist" in missing.stdout
