"""What a registration writes on the MLflow version (and its run and logged model) besides the files:
its tags, and the registered model's name for a token.
"""

from __future__ import annotations

TAG_TOKEN = "hokusai.token_id"
TAG_DIGEST = "hokusai.artifact_digest"
TAG_METRIC = "hokusai.metric"
TAG_METRIC_VALUE = "hokusai.metric_value"
TAG_BASELINE = "hokusai.baseline"
TAG_GREATER_IS_BETTER = "hokusai.greater_is_better"
TAG_TOOL_VERSION = "hokusai.tool_version"
TAG_GIT_SHA = "git.sha"
TAG_GIT_REF = "git.ref"
TAG_GIT_REPOSITORY = "git.repository"
TAG_SIGNATURE_PREFIX = "hokusai.signature."  # + method, identity, model_bundle_sha256, ... (signing/signer.py)
OWN_TAG_PREFIXES = ("hokusai.", "git.")  # the version tags a registration writes (MlflowRegistry.refresh_version_tags)


def model_name_for(token_id: str) -> str:
    """The registered model that holds a token's versions."""
    return f"hokusai-{token_id}"
