"""What the built settings must hold together before anything runs: each configured sink has what it
needs, the tracking URI parses, an alias is one MLflow can store, no path holds a NUL."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from hokusai_action.errors import InputError
from hokusai_action.settings.aliases import ALIAS_SETTINGS, check_alias
from hokusai_action.settings.credentials import ENV_NAME_UNSET

if TYPE_CHECKING:
    from hokusai_action.settings.values import Settings

SINK_NEEDS = "Event sink '{sink}' needs {what}."
BAD_TRACKING_URI = (
    "MLflow tracking URI '{uri}' does not parse ({reason}). Fix --mlflow-tracking-uri / MLFLOW_TRACKING_URI, "
    "e.g. http://mlflow.example.com:5000."
)
PATH_HAS_NUL = "'{key}' contains a NUL character, which no file path can hold. Fix the path."
PATH_SETTINGS = ("model_path", "metrics_file", "predictions")  # --config is checked before it is read


def check_settings(settings: Settings) -> None:
    """Raise ``InputError`` for the first thing the settings cannot do together."""
    _check_sinks(settings)
    _check_tracking_uri(settings.mlflow_tracking_uri)
    for key, flag, setting in ALIAS_SETTINGS:
        if getattr(settings, key) is not None:
            check_alias(getattr(settings, key), setting=setting, what=flag)
    for key in PATH_SETTINGS:
        check_path(key, getattr(settings, key))


def check_path(key: str, path: object) -> None:
    """No file path can hold a NUL: refuse it with the setting's name, before a system call would."""
    if "\0" in str(path or ""):
        raise InputError(PATH_HAS_NUL.format(key=key))


def _check_tracking_uri(uri: str) -> None:
    """MLflow parses the URI only when it first connects: a bad one would surface as a raw ValueError."""
    try:
        parts = urlsplit(uri)
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise InputError(BAD_TRACKING_URI.format(uri=uri, reason=exc)) from exc


def _check_sinks(settings: Settings) -> None:
    if "pubsub" in settings.event_sinks and not settings.pubsub_topic:
        raise InputError(SINK_NEEDS.format(sink="pubsub", what="a topic: set HOKUSAI_PUBSUB_TOPIC=projects/P/topics/T"))
    if "webhook" in settings.event_sinks:
        if not settings.webhook_url:
            raise InputError(SINK_NEEDS.format(sink="webhook", what="a URL: set HOKUSAI_WEBHOOK_URL"))
        if not settings.webhook_secret and settings.webhook_secret_env:
            raise InputError(ENV_NAME_UNSET.format(key="events.webhook.secret_env", name=settings.webhook_secret_env))
        if not settings.webhook_secret:
            raise InputError(
                SINK_NEEDS.format(sink="webhook", what="a signing secret: set HOKUSAI_WEBHOOK_SECRET=whsec_...")
            )
