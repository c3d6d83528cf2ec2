"""Models saved by MLflow's own flavors (``mlflow.sklearn``, pyfunc), as most users bring them.

Registered, re-run, reset and verified with the CLI on the real MLflow server and on the embedded
store; signed ones are checked with the upstream ``model_signing`` verifier too (its CLI and its
Python API, the public key alone), over the version's files as MLflow gives them back.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hokusai_action.digest.hashing import inspect_model
from tests.helpers import cli_command, embedded_env, register_args, run_captured
from tests.mlflow_models import FLAVORS, load_prediction
from tests.signing_keys import SigningFiles, make_signing_files

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> SigningFiles:
    return make_signing_files(tmp_path_factory.mktemp("flavor-keys"))


def version_files(mlflow_client, model_name: str, version: str, into: Path) -> Path:
    """The version's files as a deploy side fetches them with MLflow alone: the download URI of the
    version (its logged model's artifacts), never the decorated ``models:/`` download."""
    import mlflow

    uri = mlflow_client.get_model_version_download_uri(model_name, version)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into)))


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def verify(run_cli, token: str, *extra: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return run_cli("model", "verify", "--token-id", token, "--output", "json", *extra, env=env, cwd=cwd)


def register(run_cli, token: str, model: Path, *extra: str, env=None, cwd=None):
    return run_cli(*register_args(token, model, "--metric-value", "0.91", "--output", "json", *extra), env=env, cwd=cwd)


def assert_verified(result) -> dict:
    assert result.code == 0, result.stderr
    assert result.json["verified"] is True, result.json["error"]
    assert "\r" not in result.stderr  # a CI log gets lines, never a redrawn bar
    return result.json


# ------------------------------------------------------------------------------ on the MLflow server


@pytest.mark.parametrize("flavor", FLAVORS)
def test_an_mlflow_model_verifies_and_stays_byte_identical_and_loadable(
    flavor, run_cli, make_token, mlflow_model, mlflow_client, tmp_path
):
    token = make_token()
    model = mlflow_model(flavor)

    registered = register(run_cli, token, model)

    assert registered.code == 0, registered.stderr
    out = registered.json
    report = assert_verified(verify(run_cli, token))
    assert report["artifact_digest"] == out["artifact_digest"] == inspect_model(model).digest
    assert tree(version_files(mlflow_client, out["model_name"], out["model_version"], tmp_path / "dl")) == tree(model)
    assert load_prediction(out["model_uri"]) == load_prediction(str(model))


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_signed_mlflow_model_verifies_with_our_cli_and_the_upstream_verifier(
    flavor, run_cli, make_token, mlflow_model, mlflow_client, keys, tmp_path
):
    token = make_token()
    model = mlflow_model(flavor)
    registered = register(run_cli, token, model, "--sign", "key", "--signing-key", str(keys.key))
    assert registered.code == 0, registered.stderr
    out = registered.json

    assert_verified(verify(run_cli, token, "--public-key", str(keys.public_key)))

    # the deploy side with MLflow and model_signing only: the version's files and the bundle it names
    files = version_files(mlflow_client, out["model_name"], out["model_version"], tmp_path / "files")
    bundle_folder = Path(
        __import__("mlflow").artifacts.download_artifacts(
            artifact_uri=out["signature"]["bundle_uri"], dst_path=str(tmp_path / "bundle")
        )
    )
    bundle = bundle_folder / "model.sig"
    assert upstream_verify(files, bundle, keys.public_key) == (True, "")

    changed = copy_tree(files, tmp_path / "changed")
    first = sorted(p for p in changed.rglob("*") if p.is_file())[0]
    first.write_bytes(first.read_bytes() + b" ")
    assert upstream_verify(changed, bundle, keys.public_key)[0] is False

    added = copy_tree(files, tmp_path / "added")
    (added / "extra.py").write_text("print('not registered')\n")
    assert upstream_verify(added, bundle, keys.public_key)[0] is False

    assert upstream_verify(files, bundle, keys.other_public_key)[0] is False


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def upstream_verify(model: Path, bundle: Path, public_key: Path) -> tuple[bool, str]:
    """``model_signing verify key`` (the upstream CLI) and its Python API with default settings: both
    must agree; returns (verified, the CLI's error output)."""
    from model_signing import verifying

    command = [sys.executable, "-m", "model_signing", "verify", "key", str(model)]
    done = subprocess.run(
        [*command, "--signature", str(bundle), "--public_key", str(public_key)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(model, bundle)
        api = True
    except Exception:  # the library raises ValueError and friends for a signature that does not hold
        api = False
    assert (done.returncode == 0) == api, (done.stdout, done.stderr)
    return api, "" if api else done.stdout + done.stderr


@pytest.mark.parametrize("flavor", FLAVORS)
def test_an_mlflow_model_rerun_and_reset_reuse_its_version_and_verify(
    flavor, run_cli, make_token, mlflow_model, mlflow_client
):
    token = make_token()
    model = mlflow_model(flavor)
    first = register(run_cli, token, model)
    assert first.code == 0, first.stderr

    rerun = register(run_cli, token, model)
    assert rerun.code == 0, rerun.stderr
    assert rerun.json["already_registered"] is True
    assert run_cli("token", "reset", token).code == 0
    again = register(run_cli, token, model)

    assert again.code == 0, again.stderr
    assert again.json["model_version"] == first.json["model_version"]
    assert again.json["event_id"] != first.json["event_id"]
    assert assert_verified(verify(run_cli, token))["model_version"] == first.json["model_version"]


# --------------------------------------------------------------------------------- embedded store


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_an_mlflow_model_verifies_on_the_embedded_store(signed, make_token, mlflow_model, keys, tmp_path):
    home = tmp_path / "project"
    home.mkdir()
    env = embedded_env(home)

    def cli(*args: str):
        return run_captured(cli_command(*args), env=env, cwd=home)

    assert cli("db", "upgrade").returncode == 0
    assert cli("token", "create", "FLAVOR").returncode == 0
    model = mlflow_model("sklearn")
    sign = ("--sign", "key", "--signing-key", str(keys.key)) if signed else ()
    registered = cli(*register_args("FLAVOR", model, "--metric-value", "0.91", *sign))
    assert registered.returncode == 0, registered.stderr

    key = ("--public-key", str(keys.public_key)) if signed else ()
    checked = cli("model", "verify", "--token-id", "FLAVOR", *key)

    assert checked.returncode == 0, checked.stderr
    assert "verified" in checked.stdout
    assert "\r" not in checked.stderr
