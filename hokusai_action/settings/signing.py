"""The signing settings that layering alone cannot say: the method, checked against the list of
``settings.table``; the private key's PEM, a secret that only a variable or an action input gives and
that ``--signing-key PATH`` overrides; the certificate chain, a list in any of its ways in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hokusai_action.errors import InputError
from hokusai_action.redact import register_secret
from hokusai_action.settings.layers import Layers, first
from hokusai_action.settings.table import BY_KEY, SIGN_METHODS

UNKNOWN_SIGN_METHOD = "Unknown signing method '{method}' in {where}. Choose one of: {methods}."
_MIN_MASKED_PEM_LINE = 16  # a PEM line this long, printed alone, is masked too


def signing_settings(layers: Layers) -> dict[str, Any]:
    """``sign``, ``signing_key_pem`` and ``signing_certificate_chain``."""
    return {
        "sign": _method(layers),
        "signing_key_pem": _key_pem(layers),
        "signing_certificate_chain": _certificate_chain(layers),
    }


def _method(layers: Layers) -> str:
    setting = BY_KEY["sign"]
    method = str(layers.raw(setting) or setting.default).strip().lower()
    if method not in SIGN_METHODS:
        where = f"{setting.flag} / {setting.name} / {setting.config[0]}"
        raise InputError(UNKNOWN_SIGN_METHOD.format(method=method, where=where, methods=", ".join(SIGN_METHODS)))
    return method


def _key_pem(layers: Layers) -> str | None:
    """The PEM of the private key, registered with ``redact`` (each of its lines too) before anything
    else: flag > environment, and ``--signing-key PATH`` beats a PEM from the environment."""
    setting = BY_KEY["signing_key_pem"]
    given = layers.flags.get(setting.argument or "")
    key_pem = first(given, layers.env(setting.env))
    if key_pem:
        register_secret(key_pem)
        for line in str(key_pem).splitlines():
            if len(line.strip()) >= _MIN_MASKED_PEM_LINE and not line.startswith("-----"):
                register_secret(line.strip())
    if layers.flags.get(BY_KEY["signing_key_path"].argument or ""):
        return given
    return key_pem


def _certificate_chain(layers: Layers) -> tuple[str, ...]:
    """The chain's files, from the flag (repeated), the variable or hokusai.yaml (a list, relative to
    the file's folder), or a comma list."""
    setting = BY_KEY["signing_certificate_chain"]
    from_flag = layers.flags.get(setting.argument or "")
    if from_flag:
        return _chain_list(from_flag)
    from_env = layers.env(setting.env)
    if from_env:
        return _chain_list(from_env)
    in_yaml = layers.yaml(*setting.config[0].split("."))
    return _chain_list(in_yaml, base=layers.base) if in_yaml else setting.default


def _chain_list(raw: Any, base: Path | None = None) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).replace("\n", ",").split(",")
    paths = [str(item).strip() for item in items if str(item).strip()]
    if base is not None:
        paths = [p if Path(p).is_absolute() else str(base / p) for p in paths]
    return tuple(paths)
