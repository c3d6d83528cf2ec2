"""Everything that talks to MLflow: reachability, lookup by digest, upload, registration.

MLflow 3 notes this module relies on (DESIGN.md, "Known pitfalls"):
- ``register_model("runs:/<id>/model")`` fails for plain artifacts, so we use the logged-model path:
  create_logged_model -> log_model_artifacts -> finalize_logged_model(READY) -> create_model_version
  with ``source=models:/<model_id>``. An MLflow model directory stays loadable by pyfunc and any
  other tree downloads byte-identical.
- The HTTP client retries POSTs on 5xx, so a version may exist although the call failed: we always
  look the version up by our digest tag before creating one, and again after a failure.
- With the server down the client's default retries last many minutes: we bound them ourselves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from hokusai_action.digest.files import MODEL_CHANGED_HINT, ModelFiles, Progress
from hokusai_action.domain.metrics import Champion, Metric, resolve_metric
from hokusai_action.domain.tags import OWN_TAG_PREFIXES, TAG_DIGEST, TAG_METRIC, TAG_METRIC_VALUE, TAG_TOKEN
from hokusai_action.domain.versions import RegisteredVersion
from hokusai_action.errors import InputError, ModelChanged, ServiceUnavailable, connection_reason
from hokusai_action.failpoints import failpoint
from hokusai_action.mlflow.store_migration import other_revision_error
from hokusai_action.mlflow.transfer_limits import TransferLimits, set_transfer_defaults, upload_timeouts
from hokusai_action.redact import redact

log = logging.getLogger(__name__)

LOGGED_MODEL_NAME = "model"

UNREACHABLE = "MLflow at {uri} did not answer within {timeout:g} s ({reason})."
UNREACHABLE_HINT = (
    "Check MLFLOW_TRACKING_URI and that the server is up; raise HOKUSAI_MLFLOW_TIMEOUT to wait longer. "
    "Nothing was uploaded."
)
REFUSED = "MLflow at {uri} refused the request (HTTP {status}): {reason}."
REFUSED_HINT = "Check MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD."
FAILED = "MLflow failed while {doing}: {reason}."
FAILED_HINT = "Re-run the same command: it resumes without a duplicate version."
RUN_MISSING = "MLflow run {run_id} does not exist at {uri}. Check --mlflow-run-id and MLFLOW_TRACKING_URI."
RUN_METRIC_MISSING = (
    "MLflow run {run_id} logged no {metric} (it has: {found}). Log it there, or choose the metric it has."
)
ALIAS_MISSING = (
    "No version of {model} holds the alias '{alias}'. Check --compare-to, or set the alias on the version "
    "to compare with."
)
CHAMPION_NO_VALUE = (
    "The version holding '{alias}' (version {version}) records no {metric} to compare with. "
    "Compare on the metric it was registered with."
)
MODEL_CHANGED_UNSEEN = (
    "The model changed while it was being uploaded: its bytes are not the ones hashed before. No version was created."
)
NOT_READY = "MLflow version {version} of {name} is {status} after {timeout:g} s: {message}."


def _configure_http_retries(timeout: float, limits: TransferLimits) -> None:
    """Bound MLflow's HTTP retries (read per request from the environment) unless the user set them.

    The per-request timeout of metadata calls is ``timeout``, at least 60 s; requests that carry model
    bytes get a budget that grows with their size while they run (``upload_timeouts``). Both timeout
    variables are set here, before other threads start, so an upload never adds or removes a key.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")
    set_transfer_defaults(limits, timeout)


class MlflowRegistry:
    """The MLflow side of a registration. Built by the CLI/entrypoint, handed to the core."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment: str,
        timeout: float = 30.0,
        artifact_root: Path | None = None,
        transfer_limits: TransferLimits | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.timeout = timeout
        self.artifact_root = artifact_root
        self.transfer_limits = transfer_limits or TransferLimits()
        self._client: Any = None
        self._experiment_id: str | None = None
        self.unreachable_hint = UNREACHABLE_HINT  # what to do when MLflow does not answer (doctor has its own)
        # before any call: _client_retries_off() restores the variables it finds, so bounds set while
        # it is active (the first client use is inside one) would be undone when it exits
        _configure_http_retries(timeout, self.transfer_limits)

    @property
    def client(self) -> Any:
        """The MLflow client, built on first use: an idempotent re-run never imports MLflow."""
        if self._client is None:
            _configure_http_retries(self.timeout, self.transfer_limits)
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # it prints the URI's user-info
            import mlflow

            from hokusai_action.mlflow.compat import migrates_stores_on_open

            if migrates_stores_on_open():  # so it never refuses one: ask before it opens the store
                other = other_revision_error(self.tracking_uri)
                if other is not None:
                    raise other
            # some registry paths (resolving a models:/<model_id> source) use the global URI, not the client's
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def upload_timeouts(self, model: ModelFiles) -> contextlib.AbstractContextManager[dict[str, str]]:
        """MLflow's per-request timeouts sized for uploading ``model``'s largest file, while the block
        runs (``transfer_limits``): a big file may wait longer for the store's answer."""
        largest = max((state.size for state in model.states), default=model.total_bytes)
        return upload_timeouts(self.transfer_limits, largest, floor_seconds=self.timeout)

    # ---------------------------------------------------------------------------------- errors

    @property
    def display_uri(self) -> str:
        return redact(self.tracking_uri)

    def _service_error(self, exc: BaseException, doing: str) -> Exception:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            status = exc.get_http_status_code()
            if status in (401, 403):
                return ServiceUnavailable(
                    REFUSED.format(uri=self.display_uri, status=status, reason=redact(_first_line(exc.message))),
                    hint=REFUSED_HINT,
                )
        return ServiceUnavailable(FAILED.format(doing=doing, reason=redact(_first_line(str(exc)))), hint=FAILED_HINT)

    def _with_connection_retries(self, call, doing: str):
        """Run a read-only call, retrying connection failures until ``timeout`` seconds have passed."""
        from mlflow.exceptions import MlflowException

        deadline = time.monotonic() + self.timeout
        previous_timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT")
        delay = 0.25
        with _client_retries_off():  # each attempt is ours: one request, no hidden retries
            try:
                while True:
                    remaining = deadline - time.monotonic()
                    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(min(10, remaining + 1))))
                    try:
                        return call()
                    except MlflowException as exc:
                        if _may_be_a_store_refusal(exc):  # a setup step, not an outage
                            other = other_revision_error(self.tracking_uri)
                            if other is not None:
                                raise other from exc
                        status = exc.get_http_status_code()
                        retryable = status >= 500 or _looks_like_connection_failure(exc)
                        if status in (401, 403) or not retryable:
                            raise self._service_error(exc, doing) from exc
                        last: BaseException = exc
                    except OSError as exc:  # requests' ConnectionError is an OSError
                        last = exc
                    if time.monotonic() + delay > deadline:
                        reason = connection_reason(last) or _first_line(str(last))
                        raise ServiceUnavailable(
                            UNREACHABLE.format(uri=self.display_uri, timeout=self.timeout, reason=redact(reason)),
                            hint=self.unreachable_hint,
                        ) from last
                    time.sleep(delay)
                    delay = min(delay * 2, 4.0)
            finally:
                _restore_env("MLFLOW_HTTP_REQUEST_TIMEOUT", previous_timeout)

    # ------------------------------------------------------------------------------ read-only

    def check_reachable(self) -> str | None:
        """Contact MLflow read-only within ``timeout``; return the experiment id if it exists."""
        experiment = self._with_connection_retries(
            lambda: self.client.get_experiment_by_name(self.experiment_name), "reading the experiment"
        )
        if experiment is not None:
            self._experiment_id = experiment.experiment_id
        return self._experiment_id

    def find_version(self, model_name: str, digest: str) -> RegisteredVersion | None:
        """The version of ``model_name`` registered for ``digest``, if any (oldest wins)."""
        from mlflow.exceptions import MlflowException

        filter_string = f"name = '{_quote(model_name)}' and tags.`{TAG_DIGEST}` = '{_quote(digest)}'"
        try:
            versions = list(self.client.search_model_versions(filter_string=filter_string, max_results=100))
        except MlflowException as exc:
            if exc.get_http_status_code() == 404:
                return None
            raise self._service_error(exc, "searching model versions") from exc
        except OSError as exc:
            raise self._service_error(exc, "searching model versions") from exc
        live = [v for v in versions if v.status != "FAILED_REGISTRATION"]
        if not live:
            return None
        first = min(live, key=lambda v: int(v.version))
        return self._wait_ready(first)

    def find_logged_model(self, experiment_id: str, digest: str, token_id: str) -> Any | None:
        """A READY logged model uploaded earlier for this digest (a run killed before registering)."""
        from mlflow.entities import LoggedModelStatus
        from mlflow.exceptions import MlflowException

        # status is not filtered server-side: the SQL stores keep it as an integer and reject 'READY'
        filter_string = f"tags.`{TAG_DIGEST}` = '{_quote(digest)}' and tags.`{TAG_TOKEN}` = '{_quote(token_id)}'"
        try:
            found = self.client.search_logged_models([experiment_id], filter_string=filter_string, max_results=50)
        except (MlflowException, OSError) as exc:
            raise self._service_error(exc, "searching logged models") from exc
        ready = [model for model in found if model.status == LoggedModelStatus.READY]
        return ready[0] if ready else None

    def run_metric(self, run_id: str, metric: Metric) -> tuple[float, str]:
        """The latest logged value of ``metric`` (or an alias) in run ``run_id``, and where it came from."""
        from mlflow.exceptions import MlflowException

        def read() -> Any:
            try:
                return self.client.get_run(run_id)
            except MlflowException as exc:
                if exc.get_http_status_code() in (400, 404) or exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    raise InputError(RUN_MISSING.format(run_id=run_id, uri=self.display_uri)) from exc
                raise

        run = self._with_connection_retries(read, "reading the run")
        names = [name for name in run.data.metrics if _resolves_to(name, metric)]
        if not names:
            found = ", ".join(sorted(run.data.metrics)) or "no metrics"
            raise InputError(RUN_METRIC_MISSING.format(run_id=run_id, metric=metric.name, found=found))
        history = self._with_connection_retries(
            lambda: self.client.get_metric_history(run_id, names[0]), "reading the metric history"
        )
        latest = max(history, key=lambda m: (m.step, m.timestamp)) if history else None
        value = latest.value if latest else run.data.metrics[names[0]]
        when = ""
        if latest is not None:
            stamp = dt.datetime.fromtimestamp(latest.timestamp / 1000, tz=dt.UTC).isoformat(timespec="seconds")
            when = f"step {latest.step}, logged {stamp}"
        return float(value), f"run {run_id} metric '{names[0]}' ({when or 'latest'})"

    def champion(self, model_name: str, alias: str, metric: Metric) -> Champion:
        """The value recorded on the version of ``model_name`` holding ``alias`` (read-only)."""
        from mlflow.exceptions import MlflowException

        def versions() -> list[Any]:
            try:
                return list(self.client.search_model_versions(f"name = '{_quote(model_name)}'", max_results=1))
            except MlflowException as exc:
                if exc.get_http_status_code() == 404:
                    return []
                raise

        if not self._with_connection_retries(versions, "reading the registered model"):
            return Champion(alias=alias)  # nothing registered yet: the baseline alone decides

        def holder() -> Any:
            try:
                return self.client.get_model_version_by_alias(model_name, alias)
            except MlflowException as exc:
                if exc.get_http_status_code() in (400, 404) or exc.error_code in (
                    "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE",
                ):  # fmt: skip
                    raise InputError(ALIAS_MISSING.format(alias=alias, model=model_name)) from exc
                raise

        version = self._with_connection_retries(holder, "reading the alias")
        tags = version.tags or {}
        if tags.get(TAG_METRIC) == metric.name and tags.get(TAG_METRIC_VALUE):
            return Champion(alias=alias, version=str(version.version), value=float(tags[TAG_METRIC_VALUE]))
        if version.run_id:
            run = self._with_connection_retries(lambda: self.client.get_run(version.run_id), "reading the run")
            for name, value in run.data.metrics.items():
                if _resolves_to(name, metric):
                    return Champion(alias=alias, version=str(version.version), value=float(value))
        raise InputError(CHAMPION_NO_VALUE.format(alias=alias, version=version.version, metric=metric.name))

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.set_registered_model_alias(model_name, alias, version)
        except (MlflowException, OSError) as exc:
            raise self._service_error(exc, f"moving the alias '{alias}'") from exc

    # ---------------------------------------------------------------------------------- writes

    def _ensure_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        if self._experiment_id is not None:
            return self._experiment_id
        try:
            experiment = self.client.get_experiment_by_name(self.experiment_name)
            if experiment is not None:
                self._experiment_id = experiment.experiment_id
                return self._experiment_id
            location = self.artifact_root.as_uri() if self.artifact_root else None
            try:
                self._experiment_id = self.client.create_experiment(self.experiment_name, artifact_location=location)
            except MlflowException:
                # another run created it between our read and our write
                experiment = self.client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    raise
                self._experiment_id = experiment.experiment_id
        except (MlflowException, OSError) as exc:
            raise self._service_error(exc, "creating the experiment") from exc
        return self._experiment_id

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
        from mlflow.entities import LoggedModelStatus, Metric, Param, RunTag
        from mlflow.exceptions import MlflowException

        if model.hashed:
            existing = self.find_version(model_name, model.digest)
            if existing is not None:
                self.refresh_version_tags(existing, tags)
                return replace(existing, artifact_digest=model.digest)

        experiment_id = self._ensure_experiment()
        doing = "uploading the model"
        digest = model.digest
        # the digest tag is set once the bytes are known: an upload tagged with it is all of them
        first_tags = {key: value for key, value in tags.items() if key != TAG_DIGEST or model.hashed}
        try:
            logged = self.find_logged_model(experiment_id, model.digest, token_id) if model.hashed else None
            if logged is not None:
                run_id = logged.source_run_id
            else:
                doing = "creating the run"
                run = self.client.create_run(experiment_id, tags=first_tags, run_name=f"register-{token_id.lower()}")
                run_id = run.info.run_id
                now_ms = int(time.time() * 1000)
                self.client.log_batch(
                    run_id,
                    metrics=[Metric(metric_name, metric_value, now_ms, 0)],
                    params=[Param(k, v) for k, v in params.items()],
                    tags=[RunTag("mlflow.note.content", f"Hokusai registration of token {token_id}")],
                )
                doing = "creating the logged model"
                logged = self.client.create_logged_model(
                    experiment_id,
                    name=LOGGED_MODEL_NAME,
                    source_run_id=run_id,
                    tags=first_tags,
                    params=dict(params),
                )
                doing = "uploading the model"
                try:
                    with self.upload_timeouts(model):
                        uploaded = self._upload(logged.model_id, logged, model, progress)
                except ModelChanged:
                    self._abandon_upload(logged.model_id, run_id)
                    raise
                except OSError:
                    # a model file gone or changed mid-upload is the user's input (exit 2), not MLflow (exit 4)
                    self._ensure_uploaded_unchanged(logged.model_id, run_id, model)
                    raise
                self._ensure_uploaded_unchanged(logged.model_id, run_id, uploaded)
                if model.hashed and uploaded.digest != model.digest:  # rewritten between its hash and its send
                    self._abandon_upload(logged.model_id, run_id)
                    model.ensure_unchanged()
                    raise ModelChanged(MODEL_CHANGED_UNSEEN, hint=MODEL_CHANGED_HINT)
                digest = uploaded.digest
                if not model.hashed:
                    doing = "looking for an earlier upload of these bytes"
                    leftover = self._leftover(model_name, experiment_id, digest, token_id)
                    if leftover is not None:
                        self._abandon_upload(logged.model_id, run_id)
                        if isinstance(leftover, RegisteredVersion):
                            self.refresh_version_tags(leftover, tags)
                            return replace(leftover, artifact_digest=digest)
                        logged, run_id = leftover, leftover.source_run_id
                        doing = "registering the model version"
                        version = self._register(
                            logged.model_id, run_id, model_name, digest, {**tags, TAG_DIGEST: digest}
                        )
                        return replace(version, artifact_digest=digest)
                    doing = "tagging the upload with its digest"
                    self.client.set_logged_model_tags(logged.model_id, {TAG_DIGEST: digest})
                    self.client.set_tag(run_id, TAG_DIGEST, digest)
                doing = "finalizing the logged model"
                self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
                failpoint("after_finalize")
                self.client.set_terminated(run_id, "FINISHED")
            doing = "registering the model version"
            version = self._register(logged.model_id, run_id, model_name, digest, {**tags, TAG_DIGEST: digest})
            return replace(version, artifact_digest=digest)
        except MlflowException as exc:
            raise self._service_error(exc, doing) from exc
        except OSError as exc:
            raise self._service_error(exc, doing) from exc

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

    def _upload(self, model_id: str, logged_model: Any, model: ModelFiles, progress: Progress | None) -> ModelFiles:
        """Send every file to the logged model's artifact store (``upload.py``); ``model`` hashed by it."""
        from hokusai_action.mlflow.compat import artifact_repository
        from hokusai_action.mlflow.upload import upload_model

        repository = artifact_repository(logged_model.artifact_location, self.tracking_uri)
        return upload_model(repository, model, progress=progress)

    def _ensure_uploaded_unchanged(self, model_id: str, run_id: str, model: ModelFiles) -> None:
        """Stop before the version exists if a file changed since it was hashed (DESIGN.md, "Model files").

        The logged model is marked FAILED, so a re-run never reuses an upload whose bytes do not match
        its digest tag; the core then gives the claim back.
        """
        try:
            model.ensure_unchanged()
        except ModelChanged:
            self._abandon_upload(model_id, run_id)
            raise

    def _abandon_upload(self, model_id: str, run_id: str) -> None:
        """Mark an upload whose files changed FAILED, so no re-run reuses it (best effort)."""
        from mlflow.entities import LoggedModelStatus
        from mlflow.exceptions import MlflowException

        try:
            self.client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
            self.client.set_terminated(run_id, "FAILED")
        except (MlflowException, OSError) as exc:  # it stays PENDING, which is never reused either
            log.warning("could not mark the stale upload %s failed (%s)", model_id, type(exc).__name__)

    def _register(
        self, model_id: str, run_id: str, model_name: str, digest: str, tags: Mapping[str, str]
    ) -> RegisteredVersion:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

        try:
            self.client.create_registered_model(
                model_name,
                tags={TAG_TOKEN: tags[TAG_TOKEN]},
                description=f"Models of Hokusai token {tags[TAG_TOKEN]}",
            )
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        # Creating a version is not idempotent, and MLflow's client retries POSTs on 5xx: a 5xx that
        # arrives after the server committed would leave a second version. So the client must not
        # retry this call; we retry it ourselves, looking the version up by its digest tag first.
        attempts = 3
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                found = self.find_version(model_name, digest)
                if found is not None:
                    return found
                time.sleep(attempt)
            try:
                with _client_retries_off():
                    version = self.client.create_model_version(
                        name=model_name,
                        source=f"models:/{model_id}",
                        run_id=run_id,
                        tags=dict(tags),
                        model_id=model_id,
                        await_creation_for=0,
                    )
                failpoint("after_version_created")
                return self._wait_ready(version)
            except MlflowException as exc:
                if attempt == attempts or not (
                    exc.get_http_status_code() >= 500 or _looks_like_connection_failure(exc)
                ):
                    found = self.find_version(model_name, digest)
                    if found is None:
                        raise
                    return found
            except OSError:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_ready(self, version: Any) -> RegisteredVersion:
        deadline = time.monotonic() + max(self.timeout, 60)
        while version.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
            time.sleep(0.2)
            version = self.client.get_model_version(version.name, version.version)
        if version.status != "READY":
            raise ServiceUnavailable(
                NOT_READY.format(
                    version=version.version,
                    name=version.name,
                    status=version.status,
                    timeout=max(self.timeout, 60),
                    message=version.status_message or "no message",
                ),
                hint=FAILED_HINT,
            )
        return RegisteredVersion(
            run_id=version.run_id,
            model_name=version.name,
            version=str(version.version),
            model_id=getattr(version, "model_id", None),
            source=version.source,
        )

    # ------------------------------------------------------------------ signatures and verification

    def upload_signature(self, run_id: str, folder: Path, artifact_path: str) -> str:
        """Put the signature bundles in the run's artifacts under ``artifact_path`` (outside the logged
        model's tree, so the model's digest is unchanged); return their URI. A re-run overwrites them."""
        from mlflow.exceptions import MlflowException

        try:
            for path in sorted(folder.iterdir()):
                self.client.log_artifact(run_id, str(path), artifact_path)
        except (MlflowException, OSError) as exc:
            raise self._service_error(exc, "uploading the signature bundles") from exc
        return f"runs:/{run_id}/{artifact_path}"

    def set_version_tags(self, model_name: str, version: str, tags: Mapping[str, str]) -> None:
        from mlflow.exceptions import MlflowException

        try:
            for key, value in tags.items():
                self.client.set_model_version_tag(model_name, version, key, value)
        except (MlflowException, OSError) as exc:
            raise self._service_error(exc, "tagging the model version") from exc

    def get_version(self, model_name: str, version: str) -> Any | None:
        """The MLflow model version (tags, run, source), or None when it does not exist."""
        from mlflow.exceptions import MlflowException

        def read() -> Any:
            try:
                return self.client.get_model_version(model_name, version)
            except MlflowException as exc:
                if exc.get_http_status_code() in (400, 404) or exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise

        return self._with_connection_retries(read, "reading the model version")

    def download(self, artifact_uri: str, destination: Path, *, missing_ok: bool = False) -> Path:
        """Download ``artifact_uri`` (a model version or the signature folder) under ``destination``.

        With ``missing_ok``, artifacts the store no longer has (404, RESOURCE_DOES_NOT_EXIST) give an
        empty ``destination``, as a store that lists nothing does: ``model verify`` reports it.

        MLflow's artifact repositories stream each file to disk in chunks (``requests`` with
        ``stream=True`` for the HTTP proxy): memory stays bounded whatever the model's size.
        """
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        # MLflow's tqdm bar redraws itself with carriage returns: a CI log wants lines (verify prints its own)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        try:
            return Path(
                download_artifacts(artifact_uri=artifact_uri, dst_path=str(destination), tracking_uri=self.tracking_uri)
            )
        except MlflowException as exc:
            missing = exc.get_http_status_code() == 404 or exc.error_code == "RESOURCE_DOES_NOT_EXIST"
            if missing_ok and (missing or self._lists_nothing(artifact_uri)):
                destination.mkdir(parents=True, exist_ok=True)
                return destination
            raise self._service_error(exc, f"downloading {artifact_uri}") from exc
        except OSError as exc:
            raise self._service_error(exc, f"downloading {artifact_uri}") from exc

    def download_version(self, model_name: str, version: str, destination: Path) -> Path:
        """Download exactly the files registered as ``version`` of ``model_name`` under ``destination``.

        Not through ``models:/NAME/VERSION``: for a folder holding an ``MLmodel``, that download adds a
        ``registered_model_meta`` file, so the tree is no longer the one registered. The version's own
        download location (its logged model's artifacts) gives the files back byte for byte. Artifacts
        the store no longer has give an empty ``destination`` (``model verify`` reports it).
        """
        uri = self._with_connection_retries(
            lambda: self.client.get_model_version_download_uri(model_name, version),
            "reading the version's download location",
        )
        return self.download(uri, destination, missing_ok=True)

    def _lists_nothing(self, artifact_uri: str) -> bool:
        """Whether the store lists nothing at ``artifact_uri``. An MLflow client before 3.9 takes an
        empty folder for a missing file, and fails its download with a bare INTERNAL_ERROR."""
        from mlflow.artifacts import list_artifacts
        from mlflow.exceptions import MlflowException

        try:
            return not list_artifacts(artifact_uri=artifact_uri, tracking_uri=self.tracking_uri)
        except (MlflowException, OSError):
            return False

    def refresh_version_tags(self, version: RegisteredVersion, tags: Mapping[str, str]) -> None:
        """Give a reused version (the same bytes registered again, e.g. after a token reset) the tags of
        the registration that reuses it: the row and the event hold this registration's gate, so must the
        version. Each of ``tags`` is set; a tag of ours this registration does not set (a margin, a
        champion, an earlier signature: signing sets its own after this) is removed. The digest tag is
        the bytes', equal by construction, and is never touched."""
        from mlflow.exceptions import MlflowException

        wanted = {key: value for key, value in tags.items() if key != TAG_DIGEST}
        try:
            current = dict(self.client.get_model_version(version.model_name, version.version).tags or {})
            for key in sorted(current):
                if key.startswith(OWN_TAG_PREFIXES) and key != TAG_DIGEST and key not in wanted:
                    self.client.delete_model_version_tag(version.model_name, version.version, key)
            for key, value in wanted.items():
                if current.get(key) != value:
                    self.client.set_model_version_tag(version.model_name, version.version, key, value)
        except (MlflowException, OSError) as exc:
            raise self._service_error(exc, "refreshing the reused version's tags") from exc


def _resolves_to(name: str, metric: Metric) -> bool:
    try:
        return resolve_metric(name) is metric
    except InputError:
        return False


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:400] if text else "no detail"


def _quote(value: str) -> str:
    if "'" in value:
        raise InputError(f"Value {value!r} cannot be used in an MLflow filter.")
    return value


def _looks_like_connection_failure(exc: BaseException) -> bool:
    """MLflow wraps requests' connection errors in an MlflowException without an HTTP status."""
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, OSError):
            return True
        cause = cause.__cause__ or cause.__context__
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in (
        "TEMPORARILY_UNAVAILABLE",
        "INTERNAL_ERROR",
    )


def _may_be_a_store_refusal(exc: BaseException) -> bool:
    """MLflow refuses to open a database store at another schema revision with a bare INTERNAL_ERROR
    (``mlflow.store.db.utils._verify_schema``); a database outage comes as TEMPORARILY_UNAVAILABLE with
    the driver's error as its cause, an HTTP server's answer with its status."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "INTERNAL_ERROR" and exc.__cause__ is None


@contextlib.contextmanager
def _client_retries_off():
    """MLflow reads its retry count per request from the environment."""
    previous = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        yield
    finally:
        _restore_env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", previous)


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
