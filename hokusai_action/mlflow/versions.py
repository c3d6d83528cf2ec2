"""What the registry writes on a registered version after creating it: its tags, an alias, and the
signature bundles in its run's artifacts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hokusai_action.domain.tags import OWN_TAG_PREFIXES, TAG_DIGEST
from hokusai_action.domain.versions import RegisteredVersion
from hokusai_action.mlflow.connection import MlflowConnection


class MlflowVersionWrites(MlflowConnection):
    """Tags, aliases and signatures of versions that exist already."""

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        with self._errors(f"moving the alias '{alias}'"):
            self.client.set_registered_model_alias(model_name, alias, version)

    def set_version_tags(self, model_name: str, version: str, tags: Mapping[str, str]) -> None:
        with self._errors("tagging the model version"):
            for key, value in tags.items():
                self.client.set_model_version_tag(model_name, version, key, value)

    def refresh_version_tags(self, version: RegisteredVersion, tags: Mapping[str, str]) -> None:
        """Give a reused version (the same bytes registered again, e.g. after a token reset) the tags of
        the registration that reuses it: the row and the event hold this registration's gate, so must the
        version. Each of ``tags`` is set; a tag of ours this registration does not set (a margin, a
        champion, an earlier signature: signing sets its own after this) is removed. The digest tag is
        the bytes', equal by construction, and is never touched."""
        wanted = {key: value for key, value in tags.items() if key != TAG_DIGEST}
        with self._errors("refreshing the reused version's tags"):
            current = dict(self.client.get_model_version(version.model_name, version.version).tags or {})
            for key in sorted(current):
                if key.startswith(OWN_TAG_PREFIXES) and key != TAG_DIGEST and key not in wanted:
                    self.client.delete_model_version_tag(version.model_name, version.version, key)
            for key, value in wanted.items():
                if current.get(key) != value:
                    self.client.set_model_version_tag(version.model_name, version.version, key, value)

    def upload_signature(self, run_id: str, folder: Path, artifact_path: str) -> str:
        """Put the signature bundles in the run's artifacts under ``artifact_path`` (outside the logged
        model's tree, so the model's digest is unchanged); return their URI. A re-run overwrites them."""
        with self._errors("uploading the signature bundles"):
            for path in sorted(folder.iterdir()):
                self.client.log_artifact(run_id, str(path), artifact_path)
        return f"runs:/{run_id}/{artifact_path}"
