"""One settings object, built in one place: flags / action inputs > environment > hokusai.yaml > defaults.

``load_settings`` is the only function that reads the environment or ``hokusai.yaml``. It layers
each row of ``settings.table``, leaving to their modules what layering alone cannot say
(``credentials``, ``signing``, ``provenance``); it validates once and registers every secret with
``redact`` so no later message can print it. The ``Settings`` repr never shows a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hokusai_action.redact import redact
from hokusai_action.settings.checks import check_path, check_settings
from hokusai_action.settings.config_file import DEFAULT_CONFIG_NAME, ConfigFile, load_config_file
from hokusai_action.settings.credentials import read_credentials
from hokusai_action.settings.layers import Layers
from hokusai_action.settings.provenance import GitInfo, ci_run_url, git_info
from hokusai_action.settings.signing import signing_settings
from hokusai_action.settings.table import BY_KEY, SETTINGS


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
    # signing (README, "Verifiable registrations")
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


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    cwd: Path | None = None,
) -> Settings:
    """Build and validate the settings. ``flags`` uses the CLI option names in snake_case."""
    given = {k: v for k, v in (flags or {}).items() if v is not None and v != ""}
    cwd = cwd or Path.cwd()
    config = _config_file(given.get("config"), cwd)
    layers = Layers(flags=given, environ=os.environ if environ is None else environ, config=config, cwd=cwd)
    home = _home(layers)
    credentials = read_credentials(layers, home)
    layered = {setting.key: layers.value(setting) for setting in SETTINGS if setting.key and not setting.built_by}
    settings = Settings(
        home=home,
        config_path=config.path if config else None,
        **credentials,
        **layered,
        git=git_info(layers),
        ci_run_url=ci_run_url(layers),
        **signing_settings(layers),
    )
    check_settings(settings)
    return settings


def _config_file(flag: Any, cwd: Path) -> ConfigFile | None:
    """``hokusai.yaml``: the one ``--config`` names, else ``./hokusai.yaml`` when present, else none."""
    check_path("config", flag)
    path = Path(flag) if flag else cwd / DEFAULT_CONFIG_NAME
    if not path.is_absolute():
        path = cwd / path
    return load_config_file(path) if flag or path.is_file() else None


def _home(layers: Layers) -> Path:
    """Where the embedded defaults live: HOKUSAI_HOME, relative to the working directory."""
    home = Path(layers.value(BY_KEY["home"]))
    return home if home.is_absolute() else layers.cwd / home
