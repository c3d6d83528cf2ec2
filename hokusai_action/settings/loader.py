"""One settings object, built in one place: flags / action inputs > environment > hokusai.yaml > defaults.

``load_settings`` is the only function that reads the environment or ``hokusai.yaml``. It layers
each row of ``settings.table``, leaving to their modules what layering alone cannot say
(``credentials``, ``signing``, ``provenance``); it validates once and registers every secret with
``redact`` so no later message can print it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hokusai_action.settings.checks import check_path, check_settings
from hokusai_action.settings.config_file import DEFAULT_CONFIG_NAME, ConfigFile, load_config_file
from hokusai_action.settings.credentials import read_credentials
from hokusai_action.settings.layers import Layers
from hokusai_action.settings.provenance import ci_run_url, git_info
from hokusai_action.settings.signing import signing_settings
from hokusai_action.settings.table import BY_KEY, SETTINGS
from hokusai_action.settings.values import Settings


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
