"""``Settings``: every setting's value, as ``load_settings`` builds it; its repr never shows a secret."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hokusai_action.redact import redact
from hokusai_action.settings.provenance import GitInfo


@dataclass(frozen=True)
class Settings:
    """Every setting (``settings.table`` says where each comes from and its default); a field with
    ``repr=False`` holds a secret."""

    # the registration
    token_id: str | None
    model_path: str | None
    metric: str | None
    baseline: Any  # raw: validated against the metric by the core
    metric_value: Any
    metrics_file: str | None
    predictions: str | None
    label_column: str | None
    score_column: str | None
    positive_label: str | None
    mlflow_run_id: str | None
    min_improvement: str | None
    compare_to: str | None
    set_alias: str | None
    dry_run: bool
    # where things live
    home: Path
    config_path: Path | None
    mlflow_tracking_uri: str
    mlflow_experiment: str
    mlflow_timeout: float
    upload_stall_timeout: float
    upload_min_rate: float  # MiB/s
    database_url: str = field(repr=False)
    database_timeout: float
    # events
    event_sinks: tuple[str, ...]
    event_source: str
    pubsub_topic: str | None
    pubsub_timeout: float
    webhook_url: str | None = field(repr=False)
    webhook_secret: str | None = field(repr=False)
    webhook_timeout: float
    webhook_allow_http: bool
    webhook_secret_env: str | None  # the variable hokusai.yaml names, for error messages
    # concurrency
    claim_ttl: float
    relay_lease: float
    git: GitInfo
    # signing (docs/deploy/verify.md)
    sign: str
    signing_key_path: str | None
    signing_key_pem: str | None = field(repr=False)
    signing_certificate_chain: tuple[str, ...]
    sigstore_identity_token: str | None = field(repr=False)
    oidc_request_url: str | None
    oidc_request_token: str | None = field(repr=False)
    oidc_issuer: str | None
    ci_run_url: str | None

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                value = "***" if value else value
            shown.append(f"{f.name}={redact(repr(value))}")
        return f"Settings({', '.join(shown)})"

    @property
    def database_url_display(self) -> str:
        return redact(self.database_url)

    @property
    def uses_embedded_mlflow(self) -> bool:
        return self.mlflow_tracking_uri.startswith("sqlite:")
