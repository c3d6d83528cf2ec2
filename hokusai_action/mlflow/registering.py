"""A model's upload to MLflow and its registration as a version, resuming whatever an earlier attempt
of the same registration left (DESIGN.md, "Known pitfalls").

``register_model("runs:/<id>/model")`` fails for plain artifacts in MLflow 3, so a version is made
through a logged model: create_logged_model -> its artifacts (``upload.py``) ->
finalize_logged_model(READY) -> create_model_version with ``source=models:/<model_id>``. An MLflow
model directory stays loadable by pyfunc, and any other tree downloads byte-identical.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from hokusai_action.digest.files import MODEL_CHANGED_HINT, ModelFiles, Progress
from hokusai_action.domain.tags import TAG_DIGEST, TAG_TOKEN
from hokusai_action.domain.versions import RegisteredVersion
from hokusai_action.errors import ModelChanged
from hokusai_action.failpoints import failpoint
from hokusai_action.mlflow.connection import client_retries_off, looks_like_connection_failure
from hokusai_action.mlflow.lookups import MlflowLookups
from hokusai_action.mlflow.transfer_limits import upload_timeouts
from hokusai_action.mlflow.versions import MlflowVersionWrites

log = logging.getLogger(__name__)

LOGGED_MODEL_NAME = "model"
MODEL_CHANGED_UNSEEN = (
    "The model changed while it was being uploaded: its bytes are not the ones hashed before. No version was created."
)
# create_model_version is retried by us, not by MLflow's client (``_register``)
CREATE_VERSION_ATTEMPTS = 3


@dataclass(frozen=True)
class _Request:
    """What ``upload_and_register`` was asked to register, handed from step to step."""

    model: ModelFiles
    model_name: str
    token_id: str
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metric_name: str
    metric_value: float
    progress: Progress | None

    @property
    def first_tags(self) -> dict[str, str]:
        """The tags of the run and the logged model when they are created: the digest tag only once the
        bytes are known, so an upload tagged with it holds all of them."""
        return {key: value for key, value in self.tags.items() if key != TAG_DIGEST or self.model.hashed}

    def version_tags(self, digest: str) -> dict[str, str]:
        return {**self.tags, TAG_DIGEST: digest}


@dataclass(frozen=True)
class _Upload:
    """A logged model that holds (or is receiving) the model's bytes, and the run it belongs to."""

    model_id: str
    run_id: str


class MlflowRegistering(MlflowLookups, MlflowVersionWrites):
    """``upload_and_register`` and its steps; it reads through the lookups and refreshes the tags of a
    version it reuses."""

    def upload_timeouts(self, model: ModelFiles) -> contextlib.AbstractContextManager[dict[str, str]]:
        """MLflow's per-request timeouts sized for uploading ``model``'s largest file, while the block
        runs (``transfer_limits``): a big file may wait longer for the store's answer."""
        largest = max((state.size for state in model.states), default=model.total_bytes)
        return upload_timeouts(self.transfer_limits, largest, floor_seconds=self.timeout)

    def upload_and_register(
        self,
        model: ModelFiles,
        *,
        model_name: str,
        token_id: str,
        tags: Mapping[str, str],
        params: Mapping[str, str],
        metric_name: str,
        metric_value: float,
        progress: Progress | None = None,
    ) -> RegisteredVersion:
        """Register ``model`` as a version of ``model_name``; resume any earlier partial attempt.

        A hashed ``model`` (a re-run) is looked up by its digest first. A model not hashed yet (a first
        registration) is hashed while it uploads; before its version is created, a version or a READY
        upload that a killed run left with that digest is reused instead (ours is marked FAILED).
        The returned version carries the digest (``artifact_digest``).
        """
        if model.hashed:
            existing = self.find_version(model_name, model.digest)
            if existing is not None:
                return self._reuse(existing, tags, model.digest)
        request = _Request(
            model=model,
            model_name=model_name,
            token_id=token_id,
            tags=tags,
            params=params,
            metric_name=metric_name,
            metric_value=metric_value,
            progress=progress,
        )
        experiment_id = self._ensure_experiment()
        earlier = self.find_logged_model(experiment_id, model.digest, token_id) if model.hashed else None
        if earlier is not None:  # a run killed before registering uploaded these bytes
            return self._register_upload(_Upload(earlier.model_id, earlier.source_run_id), request, model.digest)
        upload, digest = self._upload(request, experiment_id)
        if not model.hashed:
            leftover = self._register_leftover(request, experiment_id, upload, digest)
            if leftover is not None:
                return leftover
            self._tag_with_digest(upload, digest)
        self._finalize(upload)
        return self._register_upload(upload, request, digest)

    def _ensure_experiment(self) -> str:
        if self._experiment_id is None:
            with self._errors("creating the experiment"):
                self._experiment_id = self._find_or_create_experiment()
        return self._experiment_id

    def _find_or_create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        location = self.artifact_root.as_uri() if self.artifact_root else None
        try:
            return self.client.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException:
            # another run created it between our read and our write
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _reuse(self, version: RegisteredVersion, tags: Mapping[str, str], digest: str) -> RegisteredVersion:
        """``version``, registered earlier with these bytes, given this registration's tags."""
        self.refresh_version_tags(version, tags)
        return replace(version, artifact_digest=digest)

    def _upload(self, request: _Request, experiment_id: str) -> tuple[_Upload, str]:
        """A new run and logged model holding the model's bytes (not finalized yet), and their digest."""
        run_id = self._start_run(request, experiment_id)
        with self._errors("creating the logged model"):
            logged = self.client.create_logged_model(
                experiment_id,
                name=LOGGED_MODEL_NAME,
                source_run_id=run_id,
                tags=request.first_tags,
                params=dict(request.params),
            )
        upload = _Upload(logged.model_id, run_id)
        with self._errors("uploading the model"):
            uploaded = self._send_files(upload, logged.artifact_location, request)
        return upload, uploaded.digest

    def _start_run(self, request: _Request, experiment_id: str) -> str:
        """A run holding the registration's metric and parameters; its id."""
        from mlflow.entities import Metric, Param, RunTag

        with self._errors("creating the run"):
            run = self.client.create_run(
                experiment_id, tags=request.first_tags, run_name=f"register-{request.token_id.lower()}"
            )
            now_ms = int(time.time() * 1000)
            self.client.log_batch(
                run.info.run_id,
                metrics=[Metric(request.metric_name, request.metric_value, now_ms, 0)],
                params=[Param(k, v) for k, v in request.params.items()],
                tags=[RunTag("mlflow.note.content", f"Hokusai registration of token {request.token_id}")],
            )
        return run.info.run_id

    def _send_files(self, upload: _Upload, artifact_location: str, request: _Request) -> ModelFiles:
        """Send every file to the logged model's artifact store (``upload.py``); the model hashed by it.

        Stops before the version exists if a file changed since it was hashed (DESIGN.md, "Model
        files"): the upload is marked FAILED, so a re-run never reuses bytes that do not match its
        digest tag; the core then gives the claim back.
        """
        from hokusai_action.mlflow.compat import artifact_repository
        from hokusai_action.mlflow.upload import upload_model

        model = request.model
        try:
            with self.upload_timeouts(model):
                repository = artifact_repository(artifact_location, self.tracking_uri)
                uploaded = upload_model(repository, model, progress=request.progress)
        except ModelChanged:
            self._abandon_upload(upload)
            raise
        except OSError:
            # a model file gone or changed mid-upload is the user's input (exit 2), not MLflow (exit 4)
            self._ensure_uploaded_unchanged(upload, model)
            raise
        self._ensure_uploaded_unchanged(upload, uploaded)
        if model.hashed and uploaded.digest != model.digest:  # rewritten between its hash and its send
            self._abandon_upload(upload)
            model.ensure_unchanged()
            raise ModelChanged(MODEL_CHANGED_UNSEEN, hint=MODEL_CHANGED_HINT)
        return uploaded

    def _ensure_uploaded_unchanged(self, upload: _Upload, model: ModelFiles) -> None:
        """Raise ``ModelChanged`` (the upload marked FAILED) if a file of ``model`` changed since it was hashed."""
        try:
            model.ensure_unchanged()
        except ModelChanged:
            self._abandon_upload(upload)
            raise

    def _abandon_upload(self, upload: _Upload) -> None:
        """Mark an upload whose files changed FAILED, so no re-run reuses it (best effort)."""
        from mlflow.entities import LoggedModelStatus
        from mlflow.exceptions import MlflowException

        try:
            self.client.finalize_logged_model(upload.model_id, LoggedModelStatus.FAILED)
            self.client.set_terminated(upload.run_id, "FAILED")
        except (MlflowException, OSError) as exc:  # it stays PENDING, which is never reused either
            log.warning("could not mark the stale upload %s failed (%s)", upload.model_id, type(exc).__name__)

    def _register_leftover(
        self, request: _Request, experiment_id: str, upload: _Upload, digest: str
    ) -> RegisteredVersion | None:
        """What a killed run left with ``digest``, registered in place of ``upload`` (then marked FAILED):
        its version, else its READY upload. None when it left neither."""
        with self._errors("looking for an earlier upload of these bytes"):
            leftover = self._leftover(request.model_name, experiment_id, digest, request.token_id)
        if leftover is None:
            return None
        self._abandon_upload(upload)
        if isinstance(leftover, RegisteredVersion):
            return self._reuse(leftover, request.tags, digest)
        return self._register_upload(_Upload(leftover.model_id, leftover.source_run_id), request, digest)

    def _leftover(self, model_name: str, experiment_id: str, digest: str, token_id: str) -> Any | None:
        """What a killed run left with ``digest``: its version, else its READY upload; None if neither."""
        existing = self.find_version(model_name, digest)
        if existing is not None:
            log.info("these bytes are version %s already (a killed run registered them): reused", existing.version)
            return existing
        logged = self.find_logged_model(experiment_id, digest, token_id)
        if logged is not None:
            log.info("a killed run uploaded these bytes already (%s): reused", logged.model_id)
        return logged

    def _tag_with_digest(self, upload: _Upload, digest: str) -> None:
        with self._errors("tagging the upload with its digest"):
            self.client.set_logged_model_tags(upload.model_id, {TAG_DIGEST: digest})
            self.client.set_tag(upload.run_id, TAG_DIGEST, digest)

    def _finalize(self, upload: _Upload) -> None:
        """Mark the logged model READY (all its bytes are in the store) and its run finished."""
        from mlflow.entities import LoggedModelStatus

        with self._errors("finalizing the logged model"):
            self.client.finalize_logged_model(upload.model_id, LoggedModelStatus.READY)
            failpoint("after_finalize")
            self.client.set_terminated(upload.run_id, "FINISHED")

    def _register_upload(self, upload: _Upload, request: _Request, digest: str) -> RegisteredVersion:
        with self._errors("registering the model version"):
            version = self._register(upload, request.model_name, digest, request.version_tags(digest))
        return replace(version, artifact_digest=digest)

    def _register(self, upload: _Upload, model_name: str, digest: str, tags: Mapping[str, str]) -> RegisteredVersion:
        """The version of ``model_name`` for ``upload``, created once.

        Creating a version is not idempotent, and MLflow's client retries POSTs on 5xx: a 5xx that
        arrives after the server committed would leave a second version. So the client must not retry
        this call; we retry it ourselves, looking the version up by its digest tag first.
        """
        from mlflow.exceptions import MlflowException

        self._ensure_registered_model(model_name, tags[TAG_TOKEN])
        for attempt in range(1, CREATE_VERSION_ATTEMPTS + 1):
            last = attempt == CREATE_VERSION_ATTEMPTS
            if attempt > 1:
                found = self.find_version(model_name, digest)
                if found is not None:
                    return found
                time.sleep(attempt)
            try:
                return self._create_version(upload, model_name, tags)
            except MlflowException as exc:
                if last or not (exc.get_http_status_code() >= 500 or looks_like_connection_failure(exc)):
                    found = self.find_version(model_name, digest)
                    if found is None:
                        raise
                    return found
            except OSError:
                if last:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _ensure_registered_model(self, model_name: str, token_id: str) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

        try:
            self.client.create_registered_model(
                model_name, tags={TAG_TOKEN: token_id}, description=f"Models of Hokusai token {token_id}"
            )
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise

    def _create_version(self, upload: _Upload, model_name: str, tags: Mapping[str, str]) -> RegisteredVersion:
        with client_retries_off():
            version = self.client.create_model_version(
                name=model_name,
                source=f"models:/{upload.model_id}",
                run_id=upload.run_id,
                tags=dict(tags),
                model_id=upload.model_id,
                await_creation_for=0,
            )
        failpoint("after_version_created")
        return self._wait_ready(version)
