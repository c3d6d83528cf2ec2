"""What ``model verify`` reads back from MLflow: a registered version's files and its signature
bundles, downloaded to disk.

MLflow's artifact repositories stream each file to disk in chunks (``requests`` with
``stream=True`` for the HTTP proxy): memory stays bounded whatever the model's size.
"""

from __future__ import annotations

import os
from pathlib import Path

from hokusai_action.mlflow.connection import MlflowConnection


class MlflowDownloads(MlflowConnection):
    """Artifacts fetched to a local folder."""

    def download(self, artifact_uri: str, destination: Path, *, missing_ok: bool = False) -> Path:
        """Download ``artifact_uri`` (a model version or the signature folder) under ``destination``.

        With ``missing_ok``, artifacts the store no longer has (404, RESOURCE_DOES_NOT_EXIST) give an
        empty ``destination``, as a store that lists nothing does: ``model verify`` reports it.
        """
        # MLflow's tqdm bar redraws itself with carriage returns: a CI log wants lines (verify prints its own)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with self._errors(f"downloading {artifact_uri}"):
            downloaded = self._fetch(artifact_uri, destination, missing_ok=missing_ok)
        if downloaded is None:
            destination.mkdir(parents=True, exist_ok=True)
            return destination
        return downloaded

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

    def _fetch(self, artifact_uri: str, destination: Path, *, missing_ok: bool) -> Path | None:
        """The downloaded path; None when ``missing_ok`` and the store has nothing at ``artifact_uri``."""
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        try:
            return Path(
                download_artifacts(artifact_uri=artifact_uri, dst_path=str(destination), tracking_uri=self.tracking_uri)
            )
        except MlflowException as exc:
            missing = exc.get_http_status_code() == 404 or exc.error_code == "RESOURCE_DOES_NOT_EXIST"
            if missing_ok and (missing or self._lists_nothing(artifact_uri)):
                return None
            raise

    def _lists_nothing(self, artifact_uri: str) -> bool:
        """Whether the store lists nothing at ``artifact_uri``. An MLflow client before 3.9 takes an
        empty folder for a missing file, and fails its download with a bare INTERNAL_ERROR."""
        from mlflow.artifacts import list_artifacts
        from mlflow.exceptions import MlflowException

        try:
            return not list_artifacts(artifact_uri=artifact_uri, tracking_uri=self.tracking_uri)
        except (MlflowException, OSError):
            return False
