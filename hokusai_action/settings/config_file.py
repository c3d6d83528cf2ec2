"""``hokusai.yaml``: read within bounds, validated against its JSON Schema, every problem named with
its line; unknown keys and secrets written into the file are errors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hokusai_action.errors import InputError
from hokusai_action.safe_yaml import YamlInvalid, YamlRefused, compose_bounded, construct, read_bounded_text
from hokusai_action.settings.aliases import ALIAS_SETTINGS, check_alias

DEFAULT_CONFIG_NAME = "hokusai.yaml"
SCHEMA_PATH = Path(__file__).with_name("schema") / "hokusai.schema.json"

CONFIG_MISSING = "Config file {path} does not exist. Fix --config, or leave it out to use ./hokusai.yaml when present."
CONFIG_UNREADABLE = "Cannot read config file {path}: {reason}."
CONFIG_NOT_MAPPING = "{path} must be a YAML mapping of settings (docs/reference/settings.md)."
CONFIG_UNKNOWN_KEY = "{path}:{line}: unknown key '{key}'. Allowed here: {allowed}."
CONFIG_BAD_VALUE = "{path}:{line}: '{key}' {problem}."
CONFIG_INLINE_SECRET = (
    "{path}:{line}: '{key}' writes a secret into hokusai.yaml. Secrets come only from the environment "
    "or action inputs: {instead}."
)

_SECRET_KEY_NAMES = frozenset({"secret", "password", "token", "api_key", "key"})
# keys that take the NAME of a variable, and keys that take a file, with what to do instead of a value
_NAMES_A_VARIABLE = (("database", "url_env"), ("events", "webhook", "secret_env"))
_NAMES_A_KEY_FILE = (("signing", "key_path"), ("signing", "certificate_chain"))
_URLS = (
    (("database", "url"), "use 'database: {url_env: HOKUSAI_DATABASE_URL}' and set that variable"),
    (("mlflow", "tracking_uri"), "set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"),
    (("events", "webhook", "url"), "put credentials in HOKUSAI_WEBHOOK_SECRET, not the URL"),
)


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

    def inline_secret(self, keys: tuple[str, ...], instead: str) -> InputError:
        """The error of a secret written at ``keys``, saying what to do ``instead``."""
        dotted = ".".join(keys)
        return InputError(
            CONFIG_INLINE_SECRET.format(path=self.path, line=self.line(*keys), key=dotted, instead=instead)
        )


def load_config_file(path: Path) -> ConfigFile:
    """Parse and validate ``hokusai.yaml``: unknown keys, wrong types and inline secrets are errors."""
    root, values = _parse(path)
    lines: dict[tuple[str, ...], int] = {}
    _line_map(root, (), lines)
    config = ConfigFile(path=path, values=values, lines=lines)
    schema = _schema()
    _check_keys(values, schema, config)
    _refuse_secret_values(config)
    for key, _flag, setting in ALIAS_SETTINGS:
        if isinstance(values.get(key), str):
            check_alias(values[key], setting=setting, what=f"{path}:{config.line(key)}: '{key}'")
    _check_schema(config, schema)
    for keys, instead in _URLS:
        value = config.get(*keys)
        if isinstance(value, str) and _url_has_password(value):
            raise config.inline_secret(keys, instead)
    return config


def _parse(path: Path) -> tuple[Any, dict[str, Any]]:
    """The file's YAML node tree and its values, bounded before anything walks the tree (aliases
    would expand per reference)."""
    try:
        text = read_bounded_text(path)
    except FileNotFoundError as exc:
        raise InputError(CONFIG_MISSING.format(path=path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(CONFIG_UNREADABLE.format(path=path, reason=getattr(exc, "strerror", None) or exc)) from exc
    except YamlRefused as exc:
        raise InputError(CONFIG_UNREADABLE.format(path=path, reason=exc)) from exc
    try:
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
    return root, values


def _line_map(node: Any, prefix: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            out[path] = key_node.start_mark.line + 1
            _line_map(value_node, path, out)


def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _check_keys(
    values: Mapping[str, Any], schema: Mapping[str, Any], config: ConfigFile, prefix: tuple[str, ...] = ()
) -> None:
    """Unknown keys and inline secrets, each named with its line (JSON Schema only says 'additional')."""
    allowed = schema.get("properties", {})
    for key, value in values.items():
        path = (*prefix, str(key))
        if key not in allowed:
            dotted = ".".join(path)
            if str(key).lower() in _SECRET_KEY_NAMES or str(key).lower().endswith(("_secret", "_password")):
                instead = f"name an environment variable with '{dotted}_env' or set the documented variable"
                raise config.inline_secret(path, instead)
            raise InputError(
                CONFIG_UNKNOWN_KEY.format(
                    path=config.path, line=config.line(*path), key=dotted, allowed=", ".join(sorted(allowed))
                )
            )
        if isinstance(value, dict) and allowed[key].get("type") == "object":
            _check_keys(value, allowed[key], config, path)


def _refuse_secret_values(config: ConfigFile) -> None:
    """A key that takes a variable's name or a key's file, given the secret itself."""
    for keys in _NAMES_A_VARIABLE:
        value = config.get(*keys)
        if isinstance(value, str) and (value.startswith("whsec_") or "://" in value):
            raise config.inline_secret(keys, f"'{keys[-1]}' takes the NAME of an environment variable, not its value")
    for keys in _NAMES_A_KEY_FILE:
        value = config.get(*keys)
        if isinstance(value, str) and "PRIVATE KEY" in value:
            raise config.inline_secret(keys, "name the key's file in 'key_path', or set HOKUSAI_SIGNING_KEY")


def _check_schema(config: ConfigFile, schema: dict[str, Any]) -> None:
    """The first schema error, in the order of the keys' paths, with the key's line."""
    for error in sorted(_validator(schema).iter_errors(config.values), key=lambda e: list(map(str, e.absolute_path))):
        keys = tuple(str(p) for p in error.absolute_path if not isinstance(p, int))
        problem = _describe_schema_error(error)
        raise InputError(
            CONFIG_BAD_VALUE.format(
                path=config.path, line=config.line(*keys), key=".".join(keys) or "(top)", problem=problem
            )
        )


def _python_pattern(pattern: str) -> str:
    """JSON Schema patterns are ECMA-262 regexes, where a final ``$`` is the end of the text; in
    Python it also matches before a trailing newline ("XRAY\\n" would pass). Use ``\\Z`` instead."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    import jsonschema

    if validator.is_type(instance, "string") and not re.search(_python_pattern(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema

    strict = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})
    return strict(schema)


def _url_has_password(url: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^/@\s]*:[^/@\s]+@", url))


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
