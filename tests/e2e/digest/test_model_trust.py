"""The model directory is trusted only as far as it goes: links stay inside it, and files hold still.

A symbolic link that leaves the model directory (``leak.txt -> /etc/passwd``, ``env -> /proc/self/environ``)
or points at something that is not a file or folder is refused before anything is claimed; links
inside it are followed and uploaded as what they point at. A file that changes while it is uploaded
stops the run before a version exists, and gives the token back.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from hokusai_action.digest.hashing import inspect_model
from hokusai_action.domain.tags import TAG_DIGEST
from hokusai_action.errors import InputError
from tests.helpers import assert_one_clear_line, register_args, registration_settings, start_cli
from tests.mlflow_store import logged_models

pytestmark = [pytest.mark.e2e]


def register(run_cli, token: str, model: Path, *extra: str):
    return run_cli(*register_args(token, model, "--metric-value", "0.91", *extra))


def assert_refused(result, *fragments: str) -> str:
    return assert_one_clear_line(result, 2, *fragments)


def assert_refused_unchanged(run_cli, snapshot, token: str, model: Path, *fragments: str) -> None:
    """Registering ``model`` is refused with ``fragments`` named, and changes nothing a user would see."""
    before = snapshot(token)
    assert_refused(register(run_cli, token, model), *fragments)
    assert snapshot(token) == before


def assert_given_back(snapshot, token: str) -> None:
    """The run stopped before anything was registered, and gave the token back."""
    after = snapshot(token)
    assert after.versions == ()
    assert after.events == 0
    assert after.token["model_status"] == "draft"
    assert after.token["claim_owner"] is None


def downloaded_tree(mlflow_client, token: str, version: str, into: Path) -> dict[str, bytes]:
    """What a deployer gets: the version's artifacts, downloaded, as relative path -> bytes."""
    import mlflow

    model_version = mlflow_client.get_model_version(f"hokusai-{token}", version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_version.source, dst_path=str(into)))
    return {
        path.relative_to(local).as_posix(): path.read_bytes()
        for path in sorted(local.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


# ---------------------------------------------------------------------------- links out of the model


@pytest.mark.parametrize("target", ["/etc/passwd", "/proc/self/environ"])
def test_a_link_to_a_file_outside_the_model_is_refused(run_cli, make_token, make_model, snapshot, target):
    token = make_token()
    model = make_model()
    (model / "leak.txt").symlink_to(target)
    before = snapshot(token)

    line = assert_refused(register(run_cli, token, model), f"{model / 'leak.txt'}", target, "outside")

    assert "registering" not in line
    after = snapshot(token)
    assert after == before
    assert after.versions == ()
    assert after.token["model_status"] == "draft"


def test_a_link_to_a_folder_outside_the_model_is_refused(run_cli, make_token, make_model, snapshot, tmp_path):
    token = make_token()
    model = make_model()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("not part of the model")
    (model / "extra").symlink_to(outside)
    assert_refused_unchanged(run_cli, snapshot, token, model, f"{model / 'extra'}", "outside")


def test_a_relative_link_climbing_out_of_the_model_is_refused(run_cli, make_token, make_model, snapshot, tmp_path):
    token = make_token()
    model = make_model()
    (tmp_path / "neighbour.txt").write_text("next to the model, not in it")
    (model / "config" / "sneaky.txt").symlink_to(Path("..") / ".." / "neighbour.txt")
    assert_refused_unchanged(run_cli, snapshot, token, model, f"{model / 'config' / 'sneaky.txt'}", "outside")


def test_a_link_to_a_fifo_is_refused_naming_the_link(run_cli, make_token, make_model, snapshot):
    # opening a FIFO blocks until a writer comes: the walker must refuse it before reading anything
    token = make_token()
    model = make_model()
    (model / "z").mkdir()
    os.mkfifo(model / "z" / "pipe")
    (model / "a-stream").symlink_to(Path("z") / "pipe")  # walked (sorted) before the FIFO itself
    assert_refused_unchanged(
        run_cli, snapshot, token, model, f"{model / 'a-stream'}", "not a regular file or directory"
    )


def test_a_link_to_a_device_is_refused(run_cli, make_token, make_model, snapshot):
    token = make_token()
    model = make_model()
    (model / "zeros.bin").symlink_to("/dev/zero")  # would hash for ever
    assert_refused_unchanged(run_cli, snapshot, token, model, f"{model / 'zeros.bin'}")


def test_a_dangling_link_is_refused_naming_it(run_cli, make_token, make_model, snapshot):
    token = make_token()
    model = make_model()
    (model / "weights-old.bin").symlink_to("weights-gone.bin")
    assert_refused_unchanged(run_cli, snapshot, token, model, f"{model / 'weights-old.bin'}")


@pytest.mark.parametrize("target", [".", "..", "config/.."])
def test_a_link_looping_back_to_the_model_is_refused(run_cli, make_token, make_model, snapshot, target):
    token = make_token()
    model = make_model()
    (model / "config" / "again").symlink_to(Path("..") if target == "." else Path("..") / target)
    assert_refused_unchanged(run_cli, snapshot, token, model, f"{model / 'config' / 'again'}")


def test_two_links_making_a_cycle_are_refused(run_cli, make_token, make_model, snapshot):
    token = make_token()
    model = make_model()
    (model / "p").mkdir()
    (model / "q").mkdir()
    (model / "p" / "to-q").symlink_to(Path("..") / "q")
    (model / "q" / "to-p").symlink_to(Path("..") / "p")
    assert_refused_unchanged(run_cli, snapshot, token, model, "loop")


# ----------------------------------------------------------------------------- links inside the model


def test_links_inside_the_model_are_followed_and_uploaded_as_hashed(
    run_cli, make_token, make_model, snapshot, mlflow_client, tmp_path
):
    token = make_token()
    weights = os.urandom(200_000)
    model = make_model(files={"checkpoints/step-3/weights.bin": weights, "checkpoints/step-3/config.json": b"{}"})
    (model / "latest").symlink_to(Path("checkpoints") / "step-3")  # a folder link
    (model / "weights.bin").symlink_to(Path("checkpoints") / "step-3" / "weights.bin")  # a file link
    hashed = inspect_model(model)
    assert hashed.files == (
        "checkpoints/step-3/config.json",
        "checkpoints/step-3/weights.bin",
        "latest/config.json",
        "latest/weights.bin",
        "metrics.json",
        "weights.bin",
    )

    result = register(run_cli, token, model, "--output", "json")

    assert result.code == 0, result.stderr
    version = result.json["model_version"]
    assert result.json["artifact_digest"] == hashed.digest
    tree = downloaded_tree(mlflow_client, token, version, tmp_path / "download")
    assert sorted(tree) == list(hashed.files)
    for relative, content in tree.items():
        assert content == (model / relative).read_bytes(), relative
    assert tree["latest/weights.bin"] == weights and tree["weights.bin"] == weights
    # the downloaded tree, hashed again, is the registered digest: what was hashed is what was uploaded
    assert inspect_model(_download_root(tmp_path)).digest == hashed.digest
    assert mlflow_client.get_model_version(f"hokusai-{token}", version).tags[TAG_DIGEST] == hashed.digest


def _download_root(tmp_path: Path) -> Path:
    """The folder holding the downloaded model files (MLflow nests them one level down)."""
    roots = list((tmp_path / "download").rglob("metrics.json"))
    assert len(roots) == 1, roots
    return roots[0].parent


def test_a_model_path_that_is_itself_a_link_is_allowed(run_cli, make_token, make_model, mlflow_client, tmp_path):
    token = make_token()
    model = make_model()
    link = tmp_path / "current-model"
    link.symlink_to(model)
    result = register(run_cli, token, link, "--output", "json")
    assert result.code == 0, result.stderr
    assert result.json["artifact_digest"] == inspect_model(model).digest


def test_a_single_file_model_path_that_is_a_link_is_allowed(run_cli, make_token, tmp_path, mlflow_client):
    token = make_token()
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "model-7f3a.pkl"
    real.write_bytes(os.urandom(5000))
    link = tmp_path / "model.pkl"
    link.symlink_to(real)
    result = register(run_cli, token, link, "--output", "json")
    assert result.code == 0, result.stderr
    tree = downloaded_tree(mlflow_client, token, result.json["model_version"], tmp_path / "download")
    assert tree == {"model.pkl": real.read_bytes()}  # uploaded under the name the user gave


# --------------------------------------------------------------------- files changing during the upload

CHANGED = "The model changed while it was being uploaded"


def test_a_file_changed_between_hashing_and_upload_stops_before_a_version(
    services, database, make_token, make_model, snapshot, mlflow_client, cli_env, tmp_path
):
    """Drive the core directly: hash, then change a file, then register (the upload reads new bytes)."""
    from hokusai_action.mlflow.registry import MlflowRegistry
    from hokusai_action.registration.register import register as register_request
    from hokusai_action.registration.request import build_request

    token = make_token()
    model = make_model()
    settings = registration_settings(token, model, environ=cli_env, cwd=tmp_path)
    request = build_request(settings)
    with (model / "weights.bin").open("ab") as handle:  # the training job writes one more block
        handle.write(os.urandom(1024))
    registry = MlflowRegistry(services.mlflow_url, experiment="hokusai", timeout=10)

    with pytest.raises(InputError) as raised:
        register_request(request, registry=registry, database=database, sinks={})

    assert raised.value.exit_code == 2
    assert CHANGED in raised.value.one_line()
    assert "weights.bin" in raised.value.one_line()
    assert "Re-run once the training job has finished writing" in raised.value.one_line()
    assert_given_back(snapshot, token)
    uploaded = _logged_models(mlflow_client, token)
    assert uploaded and all(status != "READY" for status in uploaded), uploaded

    # the re-run, once the job has finished writing, registers the new bytes (the half upload is not reused)
    again = build_request(settings)
    result = register_request(again, registry=registry, database=database, sinks={})
    assert result.status == "registered"
    assert result.artifact_digest == inspect_model(model).digest != request.model.digest
    assert snapshot(token).versions == ("1",)
    assert sorted(_logged_models(mlflow_client, token)) == ["FAILED", "READY"]


SECRET = b"AWS_SECRET_ACCESS_KEY=canary-swapped-in-7c1e"


def _hashed_request(services, make_token, make_model, cli_env, tmp_path):
    """A validated request (its model hashed) and a registry, before anything is claimed or uploaded."""
    from hokusai_action.mlflow.registry import MlflowRegistry
    from hokusai_action.registration.request import build_request

    token = make_token()
    model = make_model(files={f"shard-{i}.bin": os.urandom(4096) for i in range(6)})
    settings = registration_settings(token, model, environ=cli_env, cwd=tmp_path)
    return token, model, build_request(settings), MlflowRegistry(services.mlflow_url, experiment="hokusai", timeout=10)


def _assert_stopped_before_a_version(raised, snapshot, mlflow_client, token: str, named: str) -> None:
    assert raised.value.exit_code == 2
    line = raised.value.one_line()
    assert CHANGED in line and named in line, line
    assert_given_back(snapshot, token)
    assert all(status != "READY" for status in _logged_models(mlflow_client, token))


def _uploaded_bytes(mlflow_client, token: str, into: Path) -> dict[str, bytes]:
    """Every file any logged model of ``token`` holds in the artifact store, as "model id/path" -> bytes."""
    import mlflow

    experiment = mlflow_client.get_experiment_by_name("hokusai")
    found = mlflow_client.search_logged_models(
        [experiment.experiment_id], filter_string=f"tags.`hokusai.token_id` = '{token}'"
    )
    assert found, "no logged model was created"
    uploaded: dict[str, bytes] = {}
    for logged in found:
        if not mlflow_client.list_logged_model_artifacts(logged.model_id):
            continue
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=logged.artifact_location, dst_path=str(into / logged.model_id)
            )
        )
        for path in sorted(local.rglob("*")):
            if path.is_file():
                uploaded[f"{logged.model_id}/{path.relative_to(local).as_posix()}"] = path.read_bytes()
    return uploaded


def test_a_file_swapped_for_a_link_out_after_hashing_is_never_uploaded(
    services, database, make_token, make_model, snapshot, mlflow_client, cli_env, tmp_path
):
    """The attack: once the model is hashed, swap a file for a link to a secret; the upload must not send it."""
    from hokusai_action.errors import ModelChanged
    from hokusai_action.registration.register import register as register_request

    token, model, request, registry = _hashed_request(services, make_token, make_model, cli_env, tmp_path)
    secret = tmp_path / "secrets" / "environ"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    (model / "shard-3.bin").unlink()
    (model / "shard-3.bin").symlink_to(secret)

    with pytest.raises(ModelChanged) as raised:
        register_request(request, registry=registry, database=database, sinks={})

    _assert_stopped_before_a_version(raised, snapshot, mlflow_client, token, "shard-3.bin")
    uploaded = _uploaded_bytes(mlflow_client, token, tmp_path / "uploaded")
    assert not any(SECRET in content for content in uploaded.values()), sorted(uploaded)
    assert not any(name.endswith("/shard-3.bin") for name in uploaded), sorted(uploaded)


def test_a_file_deleted_after_hashing_is_a_changed_model_not_an_mlflow_failure(
    services, database, make_token, make_model, snapshot, mlflow_client, cli_env, tmp_path
):
    from hokusai_action.errors import ModelChanged
    from hokusai_action.registration.register import register as register_request

    token, model, request, registry = _hashed_request(services, make_token, make_model, cli_env, tmp_path)
    (model / "shard-2.bin").unlink()  # the training job cleans up its checkpoints

    with pytest.raises(ModelChanged) as raised:  # exit 2: it was exit 4, "MLflow failed while uploading"
        register_request(request, registry=registry, database=database, sinks={})

    _assert_stopped_before_a_version(raised, snapshot, mlflow_client, token, "shard-2.bin")


def test_a_file_deleted_between_its_check_and_its_send_is_a_changed_model(
    services, database, make_token, make_model, snapshot, mlflow_client, cli_env, tmp_path, monkeypatch
):
    """The window no check can close: the file goes after it was found unchanged, as MLflow opens it."""
    from hokusai_action.digest.files import ModelFiles
    from hokusai_action.errors import ModelChanged
    from hokusai_action.registration.register import register as register_request

    token, model, request, registry = _hashed_request(services, make_token, make_model, cli_env, tmp_path)
    real_check = ModelFiles.ensure_file_unchanged

    def check_then_delete(self: ModelFiles, index: int) -> None:
        real_check(self, index)
        if self.files[index] == "shard-4.bin":
            (model / "shard-4.bin").unlink()

    monkeypatch.setattr(ModelFiles, "ensure_file_unchanged", check_then_delete)
    with pytest.raises(ModelChanged) as raised:  # the OSError MLflow's client raises is not "MLflow failed"
        register_request(request, registry=registry, database=database, sinks={})

    _assert_stopped_before_a_version(raised, snapshot, mlflow_client, token, "shard-4.bin")


def _logged_models(mlflow_client, token: str) -> list[str]:
    return list(logged_models(mlflow_client, token).values())


@pytest.mark.slow
def test_a_file_rewritten_while_the_cli_uploads_stops_the_run(
    cli_env, make_token, make_model, snapshot, mlflow_client, tmp_path
):
    """As it happens in CI: the training job still writes its last checkpoint while the upload runs."""
    token = make_token()
    model = make_model(files={f"shard-{i}.bin": os.urandom(8 * 1024 * 1024) for i in range(6)})
    process = start_cli(*register_args(token, model, "--metric-value", "0.91"), env=cli_env, cwd=tmp_path)
    stop = threading.Event()

    def keep_writing() -> None:
        # from the moment the token is claimed (the upload starts next), rewrite a shard until the run ends
        while not stop.is_set() and snapshot(token).token["model_status"] == "draft":
            time.sleep(0.02)
        while not stop.is_set():
            with (model / "shard-5.bin").open("r+b") as handle:
                handle.write(os.urandom(4096))
            time.sleep(0.01)

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        out, err = process.communicate(timeout=300)
    finally:
        stop.set()
        writer.join(timeout=10)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)

    assert process.returncode == 2, err
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and CHANGED in error_lines[0] and "shard-5.bin" in error_lines[0], err
    assert "Traceback" not in err and out == ""
    assert_given_back(snapshot, token)
    assert all(status != "READY" for status in _logged_models(mlflow_client, token))
