"""One settings object, built in one place: flags / action inputs > environment > hokusai.yaml > defaults.

``load_settings`` is the only function that reads the environment or ``hokusai.yaml``. It validates
types once and registers every secret with ``redact`` so no later message can print it. The
``Settings`` repr never shows a secret.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from hokusai_action.errors import InputError
from hokusai_action.redact import (
    redact,
    register_basic_credentials,
    register_secret,
    register_url_password,
    url_password,
    url_user,
)
from hokusai_action.safe_yaml import YamlInvalid, YamlRefused, compose_bounded, construct, read_bounded_text
from hokusai_action.settings import environment as env

DEFAULT_CONFIG_NAME = "hokusai.yaml"
DEFAULT_EXPERIMENT = "hokusai"
DEFAULT_SINKS = ("database",)
KNOWN_SINKS = ("pubsub", "webhook", "database")
DEFAULT_EVENT_SOURCE = "hokusai-ml-platform"

CONFIG_MISSING = "Config file {path} does not exist. Fix --config, or leave it out to use ./hokusai.yaml when present."
CONFIG_UNREADABLE = "Cannot read config file {path}: {reason}."
CONFIG_NOT_MAPPING = "{path} must be a YAML mapping of settings (docs/reference/settings.md)."
CONFIG_UNKNOWN_KEY = "{path}:{line}: unknown key '{key}'. Allowed here: {allowed}."
CONFIG_BAD_VALUE = "{path}:{line}: '{key}' {problem}."
CONFIG_INLINE_SECRET = (
    "{path}:{line}: '{key}' writes a secret into hokusai.yaml. Secrets come only from the environment "
    "or action inputs: {instead}."
)
BAD_NUMBER = "{name} must be a positive number of seconds, not '{value}'."
RELAY_LEASE_TOO_SHORT = "{name} must be at least {low:g} second(s), not '{value}': a relay renews it every quarter."
# A relay's lease on a delivery: renewed every quarter of it while the relay lives (also while a send
# is in flight), so it bounds only how long a killed relay's deliveries wait for another relay.
DEFAULT_RELAY_LEASE = 120.0
MIN_RELAY_LEASE = 1.0
BAD_BOOL = "{name} must be true or false, not '{value}'."
BAD_MLFLOW_HTTP_VARIABLE = "{name} must be {accepted}, not '{value}'. MLflow's HTTP client reads it: fix or unset it."
BAD_MLFLOW_HTTP_DEFAULT = (
    "{name} must be {accepted}, not '{value}' (the tool's default), under the limit you set: set {name} within it."
)
UNKNOWN_SINK = "Unknown event sink '{sink}' in {where}. Choose any of: {known}."
SINK_NEEDS = "Event sink '{sink}' needs {what}."
ENV_NAME_UNSET = "{key} names the environment variable {name}, but it is not set."
ALIAS_INVALID = "{what} {alias!r} is not a valid MLflow alias: use 1-255 letters, digits, '_' or '-'."
ALIAS_RESERVED = (
    "{what} '{alias}' is reserved by MLflow ('latest' and v<number>, in any case, name versions): "
    "choose another name, e.g. champion."
)
ALIAS_VERSION_NAME = (
    "{what} '{alias}' is reserved by MLflow (v<number>, in any case, names a version), so no version can "
    "hold it as an alias: set an alias such as champion on the version to compare with and name it here, "
    "or use 'latest' for the newest version."
)
BAD_TRACKING_URI = (
    "MLflow tracking URI '{uri}' does not parse ({reason}). Fix --mlflow-tracking-uri / MLFLOW_TRACKING_URI, "
    "e.g. http://mlflow.example.com:5000."
)
PATH_HAS_NUL = "'{key}' contains a NUL character, which no file path can hold. Fix the path."
SECRET_CONTROL_CHARACTER = (
    "{subject} {where} a control character (a line break, a tab or the like), which no credential can "
    "hold; nothing was sent with it. Set {name} again without it: a value read from a file or printed by "
    "`echo` often ends with a newline."
)
SIGN_METHODS = ("none", "key", "certificate", "sigstore")
UNKNOWN_SIGN_METHOD = "Unknown signing method '{method}' in {where}. Choose one of: none, key, certificate, sigstore."

# MLflow's own rules (mlflow/utils/validation.py: _validate_model_alias_name and
# _validate_model_alias_name_reserved): word characters and '-', at most 255, and, for an alias being
# set, not 'latest' nor v<digits> in any case. MLflow checks them only when the alias is set, after
# the registration committed; here they are checked before anything changes. fullmatch: MLflow's
# re.match(...$) would also let a trailing newline through.
_ALIAS_NAME = re.compile(r"[\w-]{1,255}")
_VERSION_ALIAS = re.compile(r"[vV]\d+")
_RESERVED_ALIAS = "latest"
# settings that may name an alias: (key, flag, whether the alias is set, or only read)
_ALIAS_SETTINGS = (("set_alias", "--set-alias", True), ("compare_to", "--compare-to", False))
_PATH_SETTINGS = ("model_path", "metrics_file", "predictions")  # --config is checked before it is read

_SECRET_KEY_NAMES = frozenset({"secret", "password", "token", "api_key", "key"})
# where a flag's secret came from, for an error that must name it without showing it
_SECRET_FLAGS = {
    "database_url": "--database-url (action input database-url)",
    "mlflow_tracking_uri": "--mlflow-tracking-uri (action input mlflow-tracking-uri)",
    "webhook_secret": "the action input webhook-secret",
    "mlflow_tracking_token": "the action input mlflow-tracking-token",
    "signing_key_pem": "the action input signing-key",
}
# what may sit in a secret's value though Unicode calls it a control character: a PEM's line breaks
_PEM_LINE_BREAKS = "\r\n"


@dataclass(frozen=True)
class GitInfo:
    sha: str | None = None
    ref: str | None = None
    repository: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"sha": self.sha, "ref": self.ref, "repository": self.repository}


@dataclass(frozen=True)
class Settings:
    # the registration
    token_id: str | None = None
    model_path: str | None = None
    metric: str | None = None
    baseline: Any = None  # raw: validated against the metric by the core
    metric_value: Any = None
    metrics_file: str | None = None
    predictions: str | None = None
    label_column: str | None = None
    score_column: str | None = None
    positive_label: str | None = None
    mlflow_run_id: str | None = None
    min_improvement: str | None = None
    compare_to: str | None = None
    set_alias: str | None = None
    dry_run: bool = False
    # where things live
    home: Path = Path(".hokusai")
    config_path: Path | None = None
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = DEFAULT_EXPERIMENT
    mlflow_timeout: float = 30.0
    upload_stall_timeout: float = 60.0  # transfer_limits.DEFAULT_STALL_SECONDS
    upload_min_rate: float = 10.0  # MiB/s, transfer_limits.DEFAULT_MIN_RATE_MIB_S
    database_url: str = field(default="", repr=False)
    database_timeout: float = 10.0
    # events
    event_sinks: tuple[str, ...] = DEFAULT_SINKS
    event_source: str = DEFAULT_EVENT_SOURCE
    pubsub_topic: str | None = None
    pubsub_timeout: float = 30.0
    webhook_url: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_timeout: float = 10.0
    webhook_allow_http: bool = False
    webhook_secret_env: str | None = None  # the variable hokusai.yaml names, for error messages
    # concurrency
    claim_ttl: float = 300.0
    relay_lease: float = DEFAULT_RELAY_LEASE
    git: GitInfo = field(default_factory=GitInfo)
    # signing (README, "Verifiable registrations")
    sign: str = "none"
    signing_key_path: str | None = None
    signing_key_pem: str | None = field(default=None, repr=False)
    signing_certificate_chain: tuple[str, ...] = ()
    sigstore_identity_token: str | None = field(default=None, repr=False)
    oidc_request_url: str | None = None
    oidc_request_token: str | None = field(default=None, repr=False)
    oidc_issuer: str | None = None
    ci_run_url: str | None = None

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


# --------------------------------------------------------------------------------------------------
# hokusai.yaml


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    values: dict[str, Any]
    lines: dict[tuple[str, ...], int]

    def get(self, *keys: str) -> Any:
        node: Any = self.values
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def line(self, *keys: str) -> int:
        return self.lines.get(tuple(keys), 1)


def alias_problem(alias: Any, *, setting: bool) -> str | None:
    """The message template for an alias MLflow would refuse, or None. ``setting``: the alias is to be
    set (reserved names refused); otherwise only read: ``latest`` means the newest version there, but
    no version can hold a v<number> alias, so reading one would find nothing and say nothing."""
    if not isinstance(alias, str) or not _ALIAS_NAME.fullmatch(alias):
        return ALIAS_INVALID
    if setting and (alias.lower() == _RESERVED_ALIAS or _VERSION_ALIAS.fullmatch(alias)):
        return ALIAS_RESERVED
    if _VERSION_ALIAS.fullmatch(alias):
        return ALIAS_VERSION_NAME
    return None


def _check_alias(alias: Any, *, setting: bool, what: str) -> None:
    problem = alias_problem(alias, setting=setting)
    if problem is not None:
        raise InputError(problem.format(what=what, alias=alias))


def _schema() -> dict[str, Any]:
    schema_path = Path(__file__).with_name("schema") / "hokusai.schema.json"
    return json.loads(schema_path.read_text(encoding="utf-8"))


def _python_pattern(pattern: str) -> str:
    """JSON Schema patterns are ECMA-262 regexes, where a final ``$`` is the end of the text; in
    Python it also matches before a trailing newline ("XRAY\\n" would pass). Use ``\\Z`` instead."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    import jsonschema

    if validator.is_type(instance, "string") and not re.search(_python_pattern(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema

    strict = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})
    return strict(schema)


def _line_map(node: Any, prefix: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            out[path] = key_node.start_mark.line + 1
            _line_map(value_node, path, out)


def _check_keys(values: Mapping[str, Any], schema: Mapping[str, Any], config: ConfigFile, prefix=()) -> None:
    """Unknown keys and inline secrets, each named with its line (JSON Schema only says 'additional')."""
    allowed = schema.get("properties", {})
    for key, value in values.items():
        path = (*prefix, str(key))
        dotted = ".".join(path)
        if key not in allowed:
            if str(key).lower() in _SECRET_KEY_NAMES or str(key).lower().endswith(("_secret", "_password")):
                raise InputError(
                    CONFIG_INLINE_SECRET.format(
                        path=config.path,
                        line=config.line(*path),
                        key=dotted,
                        instead=f"name an environment variable with '{dotted}_env' or set the documented variable",
                    )
                )
            raise InputError(
                CONFIG_UNKNOWN_KEY.format(
                    path=config.path, line=config.line(*path), key=dotted, allowed=", ".join(sorted(allowed))
                )
            )
        if isinstance(value, dict) and allowed[key].get("type") == "object":
            _check_keys(value, allowed[key], config, path)


def _url_has_password(url: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/@\s]*:[^/@\s]+@", url))


def load_config_file(path: Path) -> ConfigFile:
    """Parse and validate ``hokusai.yaml``: unknown keys, wrong types and inline secrets are errors."""
    try:
        text = read_bounded_text(path)
    except FileNotFoundError as exc:
        raise InputError(CONFIG_MISSING.format(path=path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(CONFIG_UNREADABLE.format(path=path, reason=getattr(exc, "strerror", None) or exc)) from exc
    except YamlRefused as exc:
        raise InputError(CONFIG_UNREADABLE.format(path=path, reason=exc)) from exc
    try:
        # bounded before anything walks the tree: aliases would expand per reference
        root = compose_bounded(text)
        values = construct(root)
    except YamlInvalid as exc:
        raise InputError(CONFIG_UNREADABLE.format(path=path, reason=f"invalid YAML: {exc}")) from exc
    except YamlRefused as exc:
        raise InputError(CONFIG_UNREADABLE.format(path=path, reason=exc)) from exc
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise InputError(CONFIG_NOT_MAPPING.format(path=path))
    lines: dict[tuple[str, ...], int] = {}
    _line_map(root, (), lines)
    config = ConfigFile(path=path, values=values, lines=lines)

    schema = _schema()
    _check_keys(values, schema, config)

    for keys in (("database", "url_env"), ("events", "webhook", "secret_env")):
        value = config.get(*keys)
        if isinstance(value, str) and (value.startswith("whsec_") or "://" in value):
            raise InputError(
                CONFIG_INLINE_SECRET.format(
                    path=path,
                    line=config.line(*keys),
                    key=".".join(keys),
                    instead=f"'{keys[-1]}' takes the NAME of an environment variable, not its value",
                )
            )
    for keys in (("signing", "key_path"), ("signing", "certificate_chain")):
        value = config.get(*keys)
        if isinstance(value, str) and "PRIVATE KEY" in value:
            raise InputError(
                CONFIG_INLINE_SECRET.format(
                    path=path,
                    line=config.line(*keys),
                    key=".".join(keys),
                    instead="name the key's file in 'key_path', or set HOKUSAI_SIGNING_KEY",
                )
            )
    for key, _flag, setting in _ALIAS_SETTINGS:
        if isinstance(values.get(key), str):
            _check_alias(values[key], setting=setting, what=f"{path}:{config.line(key)}: '{key}'")
    validator = _validator(schema)
    for error in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path))):
        keys = tuple(str(p) for p in error.absolute_path if not isinstance(p, int))
        problem = _describe_schema_error(error)
        raise InputError(
            CONFIG_BAD_VALUE.format(path=path, line=config.line(*keys), key=".".join(keys) or "(top)", problem=problem)
        )

    for keys, instead in (
        (("database", "url"), "use 'database: {url_env: HOKUSAI_DATABASE_URL}' and set that variable"),
        (
            ("mlflow", "tracking_uri"),
            "set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN",
        ),
        (("events", "webhook", "url"), "put credentials in HOKUSAI_WEBHOOK_SECRET, not the URL"),
    ):
        value = config.get(*keys)
        if isinstance(value, str) and _url_has_password(value):
            raise InputError(
                CONFIG_INLINE_SECRET.format(path=path, line=config.line(*keys), key=".".join(keys), instead=instead)
            )
    return config


def _shown(value: Any, limit: int = 80) -> str:
    """A value quoted in an error line: its repr, cut short (a fuzzed list can be long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_schema_error(error: Any) -> str:
    validator = error.validator
    if validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else str(expected)
        article = "an" if expected[:1] in "aeiou" else "a"
        return f"must be {article} {expected}, not {type(error.instance).__name__} ({_shown(error.instance)})"
    if validator == "enum":
        return f"must be one of {', '.join(map(str, error.validator_value))}, not {_shown(error.instance)}"
    if validator == "pattern":
        if any(str(part).endswith("_env") for part in error.absolute_path):
            return f"must be an environment variable name (matching {error.validator_value})"
        return f"{_shown(error.instance)} does not match the expected form {error.validator_value}"
    return f"is invalid: {_shown(error.message, 200)}"


# --------------------------------------------------------------------------------------------------
# layering


def _env_value(environ: Mapping[str, str], var: env.EnvVar) -> str | None:
    value = environ.get(var.name)
    return value if value not in (None, "") else None


def _positive(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer past float's range
        raise InputError(BAD_NUMBER.format(name=name, value=value)) from None
    if not number > 0 or number == float("inf"):
        raise InputError(BAD_NUMBER.format(name=name, value=value))
    return number


def _relay_lease(raw: Any) -> float:
    if raw is None:
        return DEFAULT_RELAY_LEASE
    name = env.HOKUSAI_RELAY_LEASE.name
    seconds = _positive(raw, name)
    if seconds < MIN_RELAY_LEASE:
        raise InputError(RELAY_LEASE_TOO_SHORT.format(name=name, low=MIN_RELAY_LEASE, value=raw))
    return seconds


def _check_mlflow_http_variables(environ: Mapping[str, str]) -> None:
    """Raise ``InputError`` for an MLflow HTTP variable MLflow (or the upload) could not use.

    Parsed as MLflow parses them (``mlflow/environment_variables.py``: ``int``, ``float``, booleans as
    true/false/1/0), within MLflow's limits (``mlflow/utils/request_utils.py``, which its private
    variables can raise) and within what a socket timeout or a sleep can take.
    """
    limits = {}
    for name in ("_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT", "_MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT"):
        raw = environ.get(name)
        number = _parsed(int, raw) if raw is not None else None
        if raw is not None and (number is None or number < 0):
            raise InputError(
                BAD_MLFLOW_HTTP_VARIABLE.format(name=name, accepted="a whole number, 0 or more", value=raw)
            )
        limits[name] = number
    retries_limit = limits["_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT"]
    retries_limit = 10 if retries_limit is None else retries_limit
    backoff_limit = limits["_MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT"]
    backoff_limit = 120 if backoff_limit is None else backoff_limit
    whole_seconds = "a whole number of seconds from {low} to {high}"
    checks: tuple[tuple[env.EnvVar, float, float, str, str | None], ...] = (
        # variable, lowest, highest, what is accepted, the value the tool sets when it is unset
        (env.MLFLOW_HTTP_REQUEST_MAX_RETRIES, 0, retries_limit, f"a whole number from 0 to {retries_limit}", "3"),
        (
            env.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
            0,
            backoff_limit,
            whole_seconds.format(low=0, high=backoff_limit),
            "1",
        ),
        (env.MLFLOW_HTTP_REQUEST_BACKOFF_JITTER, 0, 3600, "a number of seconds from 0 to 3600", None),
        (env.MLFLOW_HTTP_REQUEST_TIMEOUT, 1, 1_000_000, whole_seconds.format(low=1, high=1_000_000), None),
        (env.MLFLOW_HTTP_TCP_KEEPALIVE_IDLE, 1, 86_400, whole_seconds.format(low=1, high=86_400), None),
        (env.MLFLOW_HTTP_TCP_KEEPALIVE_INTERVAL, 1, 86_400, whole_seconds.format(low=1, high=86_400), None),
        (env.MLFLOW_HTTP_TCP_KEEPALIVE_COUNT, 1, 100, "a whole number from 1 to 100", None),
    )
    for var, low, high, accepted, default in checks:
        raw = environ.get(var.name)
        message = BAD_MLFLOW_HTTP_VARIABLE
        if raw is None:
            if default is None:
                continue
            raw, message = default, BAD_MLFLOW_HTTP_DEFAULT
        number = _parsed(var.kind, raw)
        if number is None or not low <= number <= high:
            raise InputError(message.format(name=var.name, accepted=accepted, value=raw))
    for var in (
        env.MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER,
        env.MLFLOW_TRACKING_INSECURE_TLS,
        env.MLFLOW_HTTP_TCP_KEEPALIVE,
    ):
        raw = environ.get(var.name)
        if raw is not None and raw.lower() not in ("true", "false", "1", "0"):
            accepted = "true or false (or 1 or 0)"
            raise InputError(BAD_MLFLOW_HTTP_VARIABLE.format(name=var.name, accepted=accepted, value=raw))


def _parsed(kind: type, raw: str) -> float | None:
    """``raw`` as MLflow converts it (``int("2.5")`` fails there too); None unless a finite number."""
    try:
        number = kind(raw)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in env.TRUE_WORDS:
        return True
    if text in env.FALSE_WORDS:
        return False
    raise InputError(BAD_BOOL.format(name=name, value=value))


def _first(*candidates: Any) -> Any:
    for candidate in candidates:
        if candidate is not None and candidate != "":
            return candidate
    return None


def _first_named(*candidates: tuple[str, Any]) -> tuple[str, Any]:
    """``_first`` that also says where the value came from: ``(name, value)``, or ``("", None)``."""
    for name, value in candidates:
        if value is not None and value != "":
            return name, value
    return "", None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _git_info(environ: Mapping[str, str], cwd: Path) -> GitInfo:
    sha = _first(
        environ.get(env.HOKUSAI_GIT_SHA.name),
        environ.get("GITHUB_SHA"),
        environ.get("CI_COMMIT_SHA"),
        environ.get("GIT_COMMIT"),
        environ.get("BUILDKITE_COMMIT"),
    )
    ref = _first(
        environ.get(env.HOKUSAI_GIT_REF.name),
        environ.get("GITHUB_REF"),
        environ.get("CI_COMMIT_REF_NAME"),
        environ.get("GIT_BRANCH"),
        environ.get("BUILDKITE_BRANCH"),
    )
    repository = _first(
        environ.get(env.HOKUSAI_GIT_REPOSITORY.name),
        environ.get("GITHUB_REPOSITORY"),
        environ.get("CI_PROJECT_PATH"),
        environ.get("BUILDKITE_REPO"),
    )
    if sha is None:
        try:
            done = subprocess.run(
                ["git", "rev-parse", "HEAD", "--abbrev-ref", "HEAD"],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            done = None
        if done is not None and done.returncode == 0:
            parts = done.stdout.split()
            if len(parts) == 2:
                sha = parts[0]
                ref = ref or (None if parts[1] == "HEAD" else f"refs/heads/{parts[1]}")
    return GitInfo(sha=sha, ref=ref, repository=repository)


def _parse_sinks(raw: Any, where: str) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    sinks: list[str] = []
    for item in items:
        sink = str(item).strip().lower()
        if not sink:
            continue
        if sink not in KNOWN_SINKS:
            raise InputError(UNKNOWN_SINK.format(sink=sink, where=where, known=", ".join(KNOWN_SINKS)))
        if sink not in sinks:
            sinks.append(sink)
    return tuple(sinks) or DEFAULT_SINKS


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


def _check_secrets(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    database_url: tuple[str, Any],
    tracking_uri: tuple[str, Any],
    webhook_secret_env: str | None,
) -> None:
    """Refuse, before any request, a secret that holds a control character, wherever it came from.

    A trailing newline is the usual one (a token read from a file): requests refused it only when it
    sent the header, and quoted it in its error; MLflow then counted that as an outage.
    """
    for key, name in _SECRET_FLAGS.items():
        if key in ("database_url", "mlflow_tracking_uri"):
            continue  # checked below as URLs, under the name of the layer that won
        allowed = _PEM_LINE_BREAKS if key == "signing_key_pem" else ""
        _check_secret_characters(name, flags.get(key), allowed=allowed)
    for var in (*(var for var in env.ALL if var.secret), env.MLFLOW_TRACKING_USERNAME):
        allowed = _PEM_LINE_BREAKS if var is env.HOKUSAI_SIGNING_KEY else ""
        _check_secret_characters(var.name, environ.get(var.name), allowed=allowed)
    if webhook_secret_env:
        _check_secret_characters(webhook_secret_env, environ.get(webhook_secret_env))
    for name, url in (database_url, tracking_uri):
        _check_url_credentials(name, url)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    cwd: Path | None = None,
) -> Settings:
    """Build and validate the settings. ``flags`` uses the CLI option names in snake_case."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None and v != ""}
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()

    config_flag = flags.get("config")
    if isinstance(config_flag, str) and "\0" in config_flag:
        raise InputError(PATH_HAS_NUL.format(key="config"))
    config_path = Path(config_flag) if config_flag else cwd / DEFAULT_CONFIG_NAME
    if not config_path.is_absolute():
        config_path = cwd / config_path
    config: ConfigFile | None = None
    if config_flag or config_path.is_file():
        config = load_config_file(config_path)
    cfg = config.get if config else (lambda *keys: None)
    base = config.path.parent if config else cwd

    def from_config_path(*keys: str) -> str | None:
        value = cfg(*keys)
        return str(base / value) if isinstance(value, str) and not Path(value).is_absolute() else value

    def ev(var: env.EnvVar) -> str | None:
        return _env_value(environ, var)

    home = Path(ev(env.HOKUSAI_HOME) or cwd / ".hokusai")
    if not home.is_absolute():
        home = cwd / home

    # secrets: flags/inputs or the environment (or a variable named in hokusai.yaml), never the file itself
    database_url_env = cfg("database", "url_env")
    database_from_named_env = environ.get(database_url_env) if database_url_env else None
    if (
        database_url_env
        and not database_from_named_env
        and not flags.get("database_url")
        and not ev(env.HOKUSAI_DATABASE_URL)
    ):
        raise InputError(ENV_NAME_UNSET.format(key="database.url_env", name=database_url_env))
    database_url = (
        _first(
            flags.get("database_url"),
            ev(env.HOKUSAI_DATABASE_URL),
            database_from_named_env,
            cfg("database", "url"),
        )
        or f"sqlite:///{(home / 'hokusai.db').as_posix()}"
    )
    database_url_source = _first_named(
        (_SECRET_FLAGS["database_url"], flags.get("database_url")),
        (env.HOKUSAI_DATABASE_URL.name, ev(env.HOKUSAI_DATABASE_URL)),
        (str(database_url_env), database_from_named_env),
        ("database.url in hokusai.yaml", cfg("database", "url")),
    )

    secret_env = cfg("events", "webhook", "secret_env")
    webhook_secret = _first(
        flags.get("webhook_secret"),
        environ.get(secret_env) if secret_env else None,
        ev(env.HOKUSAI_WEBHOOK_SECRET),
    )
    for secret in (webhook_secret, flags.get("mlflow_tracking_token")):
        if secret:
            register_secret(secret)
    for var in env.ALL:
        if var.secret:
            register_secret(environ.get(var.name))
    register_url_password(database_url)
    _check_mlflow_http_variables(environ)
    tracking_password = environ.get(env.MLFLOW_TRACKING_PASSWORD.name)
    if tracking_password:  # MLflow sends the pair as basic auth
        register_basic_credentials(environ.get(env.MLFLOW_TRACKING_USERNAME.name), tracking_password)

    tracking_uri = (
        _first(flags.get("mlflow_tracking_uri"), ev(env.MLFLOW_TRACKING_URI), cfg("mlflow", "tracking_uri"))
        or f"sqlite:///{(home / 'mlflow.db').as_posix()}"
    )
    register_url_password(tracking_uri)
    _check_secrets(
        flags,
        environ,
        database_url=database_url_source,
        tracking_uri=_first_named(
            (_SECRET_FLAGS["mlflow_tracking_uri"], flags.get("mlflow_tracking_uri")),
            (env.MLFLOW_TRACKING_URI.name, ev(env.MLFLOW_TRACKING_URI)),
            ("mlflow.tracking_uri in hokusai.yaml", cfg("mlflow", "tracking_uri")),
        ),
        webhook_secret_env=secret_env if isinstance(secret_env, str) else None,
    )

    sinks_raw = _first(flags.get("event_sinks"), ev(env.HOKUSAI_EVENT_SINKS), cfg("events", "sinks"))
    event_sinks = _parse_sinks(sinks_raw, "event sinks") if sinks_raw is not None else DEFAULT_SINKS

    settings = Settings(
        token_id=_first(flags.get("token_id"), cfg("token_id")),
        model_path=_first(flags.get("model_path"), from_config_path("model_path")),
        metric=_first(flags.get("metric"), cfg("metric")),
        baseline=_first(flags.get("baseline"), cfg("baseline")),
        metric_value=_first(flags.get("metric_value"), cfg("metric_value")),
        metrics_file=_first(flags.get("metrics_file"), from_config_path("metrics_file")),
        predictions=_first(flags.get("predictions"), from_config_path("predictions")),
        label_column=_first(flags.get("label_column"), cfg("label_column")),
        score_column=_first(flags.get("score_column"), cfg("score_column")),
        positive_label=_text(_first(flags.get("positive_label"), cfg("positive_label"))),
        mlflow_run_id=_first(flags.get("mlflow_run_id"), cfg("mlflow_run_id")),
        min_improvement=_text(_first(flags.get("min_improvement"), cfg("min_improvement"))),
        compare_to=_first(flags.get("compare_to"), cfg("compare_to")),
        set_alias=_first(flags.get("set_alias"), cfg("set_alias")),
        dry_run=_boolean(_first(flags.get("dry_run"), cfg("dry_run"), False), "dry-run"),
        home=home,
        config_path=config.path if config else None,
        mlflow_tracking_uri=tracking_uri,
        mlflow_experiment=_first(
            flags.get("mlflow_experiment"), ev(env.HOKUSAI_MLFLOW_EXPERIMENT), cfg("mlflow", "experiment")
        )
        or DEFAULT_EXPERIMENT,
        mlflow_timeout=_positive(
            _first(flags.get("mlflow_timeout"), ev(env.HOKUSAI_MLFLOW_TIMEOUT), cfg("mlflow", "timeout"), 30),
            env.HOKUSAI_MLFLOW_TIMEOUT.name,
        ),
        upload_stall_timeout=_positive(
            _first(ev(env.HOKUSAI_UPLOAD_STALL_TIMEOUT), cfg("mlflow", "upload_stall_timeout"), 60),
            env.HOKUSAI_UPLOAD_STALL_TIMEOUT.name,
        ),
        upload_min_rate=_positive(
            _first(ev(env.HOKUSAI_UPLOAD_MIN_RATE), cfg("mlflow", "upload_min_rate"), 10),
            env.HOKUSAI_UPLOAD_MIN_RATE.name,
        ),
        database_url=database_url,
        database_timeout=_positive(
            _first(ev(env.HOKUSAI_DATABASE_TIMEOUT), cfg("database", "timeout"), 10),
            env.HOKUSAI_DATABASE_TIMEOUT.name,
        ),
        event_sinks=event_sinks,
        event_source=_first(ev(env.HOKUSAI_EVENT_SOURCE), cfg("events", "source")) or DEFAULT_EVENT_SOURCE,
        pubsub_topic=_first(flags.get("pubsub_topic"), ev(env.HOKUSAI_PUBSUB_TOPIC), cfg("events", "pubsub", "topic")),
        pubsub_timeout=_positive(
            _first(ev(env.HOKUSAI_PUBSUB_TIMEOUT), cfg("events", "pubsub", "timeout"), 30),
            env.HOKUSAI_PUBSUB_TIMEOUT.name,
        ),
        webhook_url=_first(flags.get("webhook_url"), ev(env.HOKUSAI_WEBHOOK_URL), cfg("events", "webhook", "url")),
        webhook_secret=webhook_secret,
        webhook_timeout=_positive(
            _first(ev(env.HOKUSAI_WEBHOOK_TIMEOUT), cfg("events", "webhook", "timeout"), 10),
            env.HOKUSAI_WEBHOOK_TIMEOUT.name,
        ),
        webhook_allow_http=_boolean(
            _first(ev(env.HOKUSAI_WEBHOOK_ALLOW_HTTP), cfg("events", "webhook", "allow_http"), False),
            env.HOKUSAI_WEBHOOK_ALLOW_HTTP.name,
        ),
        webhook_secret_env=secret_env,
        claim_ttl=_positive(_first(ev(env.HOKUSAI_CLAIM_TTL), 300), env.HOKUSAI_CLAIM_TTL.name),
        relay_lease=_relay_lease(ev(env.HOKUSAI_RELAY_LEASE)),
        git=_git_info(environ, cwd),
        **_signing_settings(flags, environ, cfg, from_config_path, base),
    )
    _check_sinks(settings)
    _check_tracking_uri(settings.mlflow_tracking_uri)
    for key, flag, setting in _ALIAS_SETTINGS:
        if getattr(settings, key) is not None:
            _check_alias(getattr(settings, key), setting=setting, what=flag)
    for key in _PATH_SETTINGS:
        if "\0" in str(getattr(settings, key) or ""):
            raise InputError(PATH_HAS_NUL.format(key=key))
    return settings


def _chain_list(raw: Any, base: Path | None = None) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).replace("\n", ",").split(",")
    paths = [str(item).strip() for item in items if str(item).strip()]
    if base is not None:
        paths = [p if Path(p).is_absolute() else str(base / p) for p in paths]
    return tuple(paths)


def _ci_run_url(environ: Mapping[str, str]) -> str | None:
    """The CI run that registered: GitHub's run page, else GitLab's job, Jenkins' build, Buildkite's build."""
    explicit = _env_value(environ, env.HOKUSAI_CI_RUN_URL)
    if explicit:
        return explicit
    server, repository, run = (environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if server and repository and run:
        attempt = environ.get("GITHUB_RUN_ATTEMPT")
        return f"{server}/{repository}/actions/runs/{run}" + (f"/attempts/{attempt}" if attempt else "")
    return _first(environ.get("CI_JOB_URL"), environ.get("BUILD_URL"), environ.get("BUILDKITE_BUILD_URL"))


def _signing_settings(
    flags: Mapping[str, Any], environ: Mapping[str, str], cfg: Any, from_config_path: Any, base: Path
) -> dict[str, Any]:
    """--sign and its key material: flags > environment > hokusai.yaml; the key's PEM only from the environment."""
    method = str(_first(flags.get("sign"), _env_value(environ, env.HOKUSAI_SIGN), cfg("signing", "method")) or "none")
    method = method.strip().lower()
    if method not in SIGN_METHODS:
        raise InputError(UNKNOWN_SIGN_METHOD.format(method=method, where="--sign / HOKUSAI_SIGN / signing.method"))
    key_pem = _first(flags.get("signing_key_pem"), _env_value(environ, env.HOKUSAI_SIGNING_KEY))
    if key_pem:
        register_secret(key_pem)
        for line in str(key_pem).splitlines():  # a line of the PEM printed alone is masked too
            if len(line.strip()) >= 16 and not line.startswith("-----"):
                register_secret(line.strip())
    if flags.get("signing_key"):  # --signing-key PATH beats the PEM from the environment (flag > environment)
        key_pem = flags.get("signing_key_pem")
    flag_chain = flags.get("signing_certificate_chain")
    if flag_chain:
        chain = _chain_list(flag_chain)
    elif _env_value(environ, env.HOKUSAI_SIGNING_CERTIFICATE_CHAIN):
        chain = _chain_list(_env_value(environ, env.HOKUSAI_SIGNING_CERTIFICATE_CHAIN))
    elif cfg("signing", "certificate_chain"):
        chain = _chain_list(cfg("signing", "certificate_chain"), base=base)
    else:
        chain = ()
    return {
        "sign": method,
        "signing_key_path": _first(
            flags.get("signing_key"),
            _env_value(environ, env.HOKUSAI_SIGNING_KEY_PATH),
            from_config_path("signing", "key_path"),
        ),
        "signing_key_pem": key_pem,
        "signing_certificate_chain": chain,
        "sigstore_identity_token": _env_value(environ, env.SIGSTORE_ID_TOKEN),
        "oidc_request_url": _env_value(environ, env.ACTIONS_ID_TOKEN_REQUEST_URL),
        "oidc_request_token": _env_value(environ, env.ACTIONS_ID_TOKEN_REQUEST_TOKEN),
        "oidc_issuer": cfg("signing", "oidc_issuer"),
        "ci_run_url": _ci_run_url(environ),
    }


def _check_tracking_uri(uri: str) -> None:
    """MLflow parses the URI only when it first connects: a bad one would surface as a raw ValueError."""
    from urllib.parse import urlsplit

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
