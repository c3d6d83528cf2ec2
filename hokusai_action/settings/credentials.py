"""The settings that carry credentials: the database URL, the webhook's secret, the MLflow tracking
URI (its user-info) and the secret variables. They come from flags / action inputs or the environment
(or a variable ``hokusai.yaml`` names), never from the file itself; each is registered with
``redact`` before anything can print it, and refused when it holds a control character."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hokusai_action.errors import InputError
from hokusai_action.redact import (
    register_basic_credentials,
    register_secret,
    register_url_password,
    url_password,
    url_user,
)
from hokusai_action.settings import environment as env
from hokusai_action.settings.layers import Layers, first, first_named
from hokusai_action.settings.mlflow_http import check_mlflow_http_variables
from hokusai_action.settings.table import BY_KEY

ENV_NAME_UNSET = "{key} names the environment variable {name}, but it is not set."
SECRET_CONTROL_CHARACTER = (
    "{subject} {where} a control character (a line break, a tab or the like), which no credential can "
    "hold; nothing was sent with it. Set {name} again without it: a value read from a file or printed by "
    "`echo` often ends with a newline."
)
# where a flag's secret came from, for an error that must name it without showing it
SECRET_FLAGS = {
    "database_url": "--database-url (action input database-url)",
    "mlflow_tracking_uri": "--mlflow-tracking-uri (action input mlflow-tracking-uri)",
    "webhook_secret": "the action input webhook-secret",
    "mlflow_tracking_token": "the action input mlflow-tracking-token",
    "signing_key_pem": "the action input signing-key",
}
# what may sit in a secret's value though Unicode calls it a control character: a PEM's line breaks
_PEM_LINE_BREAKS = "\r\n"


def read_credentials(layers: Layers, home: Path) -> dict[str, Any]:
    """The settings that carry credentials, each registered with ``redact`` and checked."""
    database_url, database_source = _database_url(layers, home)
    secret_env = layers.yaml("events", "webhook", "secret_env")
    webhook_secret = first(
        layers.flags.get("webhook_secret"),
        layers.environ.get(secret_env) if secret_env else None,
        layers.env(env.HOKUSAI_WEBHOOK_SECRET),
    )
    _register_secrets(layers, webhook_secret, database_url)
    check_mlflow_http_variables(layers.environ)
    tracking_password = layers.environ.get(env.MLFLOW_TRACKING_PASSWORD.name)
    if tracking_password:  # MLflow sends the pair as basic auth
        register_basic_credentials(layers.environ.get(env.MLFLOW_TRACKING_USERNAME.name), tracking_password)
    tracking_source = first_named(
        (SECRET_FLAGS["mlflow_tracking_uri"], layers.flags.get("mlflow_tracking_uri")),
        (env.MLFLOW_TRACKING_URI.name, layers.env(env.MLFLOW_TRACKING_URI)),
        ("mlflow.tracking_uri in hokusai.yaml", layers.yaml("mlflow", "tracking_uri")),
    )
    tracking_uri = layers.raw(BY_KEY["mlflow_tracking_uri"]) or _embedded(home, "mlflow.db")
    register_url_password(tracking_uri)
    _check_secrets(
        layers,
        database_url=database_source,
        tracking_uri=tracking_source,
        webhook_secret_env=secret_env if isinstance(secret_env, str) else None,
    )
    return {
        "database_url": database_url,
        "webhook_secret": webhook_secret,
        "webhook_secret_env": secret_env,
        "mlflow_tracking_uri": tracking_uri,
    }


def _embedded(home: Path, store: str) -> str:
    """The embedded default: a SQLite file under ``home``."""
    return f"sqlite:///{(home / store).as_posix()}"


def _database_url(layers: Layers, home: Path) -> tuple[str, tuple[str, Any]]:
    """The database URL, and where it came from: flag > HOKUSAI_DATABASE_URL > the variable
    ``database.url_env`` names > ``database.url`` > the embedded SQLite file."""
    named = layers.yaml("database", "url_env")
    from_named = layers.environ.get(named) if named else None
    given = layers.flags.get("database_url")
    from_env = layers.env(env.HOKUSAI_DATABASE_URL)
    if named and not from_named and not given and not from_env:
        raise InputError(ENV_NAME_UNSET.format(key="database.url_env", name=named))
    in_yaml = layers.yaml("database", "url")
    source = first_named(
        (SECRET_FLAGS["database_url"], given),
        (env.HOKUSAI_DATABASE_URL.name, from_env),
        (str(named), from_named),
        ("database.url in hokusai.yaml", in_yaml),
    )
    return first(given, from_env, from_named, in_yaml) or _embedded(home, "hokusai.db"), source


def _register_secrets(layers: Layers, webhook_secret: str | None, database_url: str) -> None:
    """Every secret given, so no later message can print it: the webhook's, the MLflow token given as
    an input, every secret variable, and the database URL's password."""
    for secret in (webhook_secret, layers.flags.get("mlflow_tracking_token")):
        if secret:
            register_secret(secret)
    for var in env.ALL:
        if var.secret:
            register_secret(layers.environ.get(var.name))
    register_url_password(database_url)


def _check_secrets(
    layers: Layers,
    *,
    database_url: tuple[str, Any],
    tracking_uri: tuple[str, Any],
    webhook_secret_env: str | None,
) -> None:
    """Refuse, before any request, a secret that holds a control character, wherever it came from.

    A trailing newline is the usual one (a token read from a file): requests refused it only when it
    sent the header, and quoted it in its error; MLflow then counted that as an outage.
    """
    environ = layers.environ
    for key, name in SECRET_FLAGS.items():
        if key in ("database_url", "mlflow_tracking_uri"):
            continue  # checked below as URLs, under the name of the layer that won
        allowed = _PEM_LINE_BREAKS if key == "signing_key_pem" else ""
        _check_secret_characters(name, layers.flags.get(key), allowed=allowed)
    for var in (*(var for var in env.ALL if var.secret), env.MLFLOW_TRACKING_USERNAME):
        allowed = _PEM_LINE_BREAKS if var is env.HOKUSAI_SIGNING_KEY else ""
        _check_secret_characters(var.name, environ.get(var.name), allowed=allowed)
    if webhook_secret_env:
        _check_secret_characters(webhook_secret_env, environ.get(webhook_secret_env))
    for name, url in (database_url, tracking_uri):
        _check_url_credentials(name, url)


def _control_characters(value: str, allowed: str = "") -> list[int]:
    """Where ``value`` holds a control character (C0, DEL, C1, or a Unicode line or paragraph
    separator) other than ``allowed``: what HTTP clients refuse in a header and ``repr`` escapes."""
    return [
        index
        for index, char in enumerate(value)
        if char not in allowed and unicodedata.category(char) in ("Cc", "Zl", "Zp")
    ]


def _check_secret_characters(name: str, value: Any, *, subject: str | None = None, allowed: str = "") -> None:
    """Raise ``InputError`` naming ``name`` (never the value) if the secret holds a control character."""
    if not isinstance(value, str) or not value:
        return
    found = _control_characters(value, allowed)
    if not found:
        return
    found_at = set(found)

    def blank(index: int) -> bool:
        return index in found_at or value[index].isspace()

    if all(blank(index) for index in range(found[0], len(value))):
        where = "ends with"
    elif all(blank(index) for index in range(found[-1] + 1)):
        where = "starts with"
    else:
        where = "contains"
    subject = subject or name
    raise InputError(SECRET_CONTROL_CHARACTER.format(subject=subject[:1].upper() + subject[1:], where=where, name=name))


def _check_url_credentials(name: str, url: Any) -> None:
    """A URL whose text, or whose percent-decoded user or password, holds a control character."""
    if not isinstance(url, str) or not url:
        return
    _check_secret_characters(name, url)
    for part, value in (("password", url_password(url)), ("user", url_user(url))):
        if value:
            _check_secret_characters(name, unquote(value), subject=f"the {part} in {name}")
