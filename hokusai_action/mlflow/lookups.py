"""What the registry reads from MLflow and never writes: whether it answers, a version by our digest
tag, an upload a killed run left, a run's metric, the version an alias names, a version and where an
experiment keeps its artifacts.

A version is looked up by the digest tag, never by remembering what we created: MLflow's HTTP client
retries a POST on 5xx, so a version may exist although the call that created it failed.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from hokusai_action.domain.metrics import Champion, Metric, resolve_metric
from hokusai_action.domain.tags import TAG_DIGEST, TAG_METRIC, TAG_METRIC_VALUE, TAG_TOKEN
from hokusai_action.domain.versions import RegisteredVersion
from hokusai_action.errors import InputError, ServiceUnavailable
from hokusai_action.mlflow.connection import FAILED_HINT, MlflowConnection, quote

if TYPE_CHECKING:
    from mlflow.exceptions import MlflowException

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
NOT_READY = "MLflow version {version} of {name} is {status} after {timeout:g} s: {message}."


class MlflowLookups(MlflowConnection):
    """Read-only calls: each either retries connection failures within ``timeout`` or says what it was
    doing when MLflow failed."""

    def check_reachable(self) -> str | None:
        """Contact MLflow read-only within ``timeout``; return the experiment id if it exists."""
        experiment = self._with_connection_retries(
            lambda: self.client.get_experiment_by_name(self.experiment_name), "reading the experiment"
        )
        if experiment is not None:
            self._experiment_id = experiment.experiment_id
        return self._experiment_id

    def artifact_location(self, experiment_id: str) -> str | None:
        """Where experiment ``experiment_id`` keeps its artifacts (``gs://...`` when this machine writes
        them to GCS itself, ``mlflow-artifacts:/...`` when the server proxies them)."""
        with self._errors("reading the experiment"):
            experiment = self.client.get_experiment(experiment_id)
        return experiment.artifact_location

    def find_version(self, model_name: str, digest: str) -> RegisteredVersion | None:
        """The version of ``model_name`` registered for ``digest``, if any (oldest wins)."""
        from mlflow.exceptions import MlflowException

        filter_string = f"name = '{quote(model_name)}' and tags.`{TAG_DIGEST}` = '{quote(digest)}'"
        with self._errors("searching model versions"):
            try:
                versions = list(self.client.search_model_versions(filter_string=filter_string, max_results=100))
            except MlflowException as exc:
                if exc.get_http_status_code() != 404:  # 404: no such registered model
                    raise
                versions = []
        live = [v for v in versions if v.status != "FAILED_REGISTRATION"]
        if not live:
            return None
        first = min(live, key=lambda v: int(v.version))
        return self._wait_ready(first)

    def find_logged_model(self, experiment_id: str, digest: str, token_id: str) -> Any | None:
        """A READY logged model uploaded earlier for this digest (a run killed before registering)."""
        from mlflow.entities import LoggedModelStatus

        # status is not filtered server-side: the SQL stores keep it as an integer and reject 'READY'
        filter_string = f"tags.`{TAG_DIGEST}` = '{quote(digest)}' and tags.`{TAG_TOKEN}` = '{quote(token_id)}'"
        with self._errors("searching logged models"):
            found = self.client.search_logged_models([experiment_id], filter_string=filter_string, max_results=50)
        ready = [model for model in found if model.status == LoggedModelStatus.READY]
        return ready[0] if ready else None

    def run_metric(self, run_id: str, metric: Metric) -> tuple[float, str]:
        """The latest logged value of ``metric`` (or an alias) in run ``run_id``, and where it came from."""
        run = self._with_connection_retries(lambda: self._get_run(run_id), "reading the run")
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

    def _get_run(self, run_id: str) -> Any:
        """Run ``run_id``; one that does not exist is the user's input (exit 2), not an outage."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as exc:
            if _does_not_exist(exc):
                raise InputError(RUN_MISSING.format(run_id=run_id, uri=self.display_uri)) from exc
            raise

    def champion(self, model_name: str, alias: str, metric: Metric) -> Champion:
        """The value recorded on the version of ``model_name`` holding ``alias`` (read-only)."""
        if not self._with_connection_retries(lambda: self._any_version(model_name), "reading the registered model"):
            return Champion(alias=alias)  # nothing registered yet: the baseline alone decides
        version = self._with_connection_retries(lambda: self._alias_holder(model_name, alias), "reading the alias")
        tags = version.tags or {}
        if tags.get(TAG_METRIC) == metric.name and tags.get(TAG_METRIC_VALUE):
            return Champion(alias=alias, version=str(version.version), value=float(tags[TAG_METRIC_VALUE]))
        if version.run_id:
            run = self._with_connection_retries(lambda: self.client.get_run(version.run_id), "reading the run")
            for name, value in run.data.metrics.items():
                if _resolves_to(name, metric):
                    return Champion(alias=alias, version=str(version.version), value=float(value))
        raise InputError(CHAMPION_NO_VALUE.format(alias=alias, version=version.version, metric=metric.name))

    def _any_version(self, model_name: str) -> list[Any]:
        """One version of ``model_name``, or none when nothing is registered under that name yet."""
        from mlflow.exceptions import MlflowException

        try:
            return list(self.client.search_model_versions(f"name = '{quote(model_name)}'", max_results=1))
        except MlflowException as exc:
            if exc.get_http_status_code() == 404:
                return []
            raise

    def _alias_holder(self, model_name: str, alias: str) -> Any:
        """The version of ``model_name`` holding ``alias``; an alias no version holds is the user's input."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(model_name, alias)
        except MlflowException as exc:
            if exc.get_http_status_code() in (400, 404) or exc.error_code in (
                "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE",
            ):  # fmt: skip
                raise InputError(ALIAS_MISSING.format(alias=alias, model=model_name)) from exc
            raise

    def get_version(self, model_name: str, version: str) -> Any | None:
        """The MLflow model version (tags, run, source), or None when it does not exist."""
        from mlflow.exceptions import MlflowException

        def read() -> Any:
            try:
                return self.client.get_model_version(model_name, version)
            except MlflowException as exc:
                if _does_not_exist(exc):
                    return None
                raise

        return self._with_connection_retries(read, "reading the model version")

    def _wait_ready(self, version: Any) -> RegisteredVersion:
        """``version`` once MLflow has finished creating it (``READY``), as a ``RegisteredVersion``."""
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


def _does_not_exist(exc: MlflowException) -> bool:
    return exc.get_http_status_code() in (400, 404) or exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def _resolves_to(name: str, metric: Metric) -> bool:
    try:
        return resolve_metric(name) is metric
    except InputError:
        return False
