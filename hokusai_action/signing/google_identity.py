"""Which Google identity a Google client would use here: told for ``doctor``, without a secret and
without a network call.

Google's Python clients (google-cloud-storage for ``gs://`` artifacts written by this machine,
google-cloud-pubsub for the ``pubsub`` sink) find their credentials by Application Default
Credentials, ``google.auth.default()``
(https://cloud.google.com/docs/authentication/application-default-credentials), in this order:

1. an emulator variable (``STORAGE_EMULATOR_HOST``, ``PUBSUB_EMULATOR_HOST``): the client goes
   anonymous, no credentials at all;
2. the JSON file named by ``GOOGLE_APPLICATION_CREDENTIALS`` (google-github-actions/auth writes one into
   the workspace and sets the variable; a Docker action sees the workspace at ``/github/workspace``);
3. gcloud's ADC file, ``$CLOUDSDK_CONFIG/application_default_credentials.json`` (default
   ``~/.config/gcloud/``), written by ``gcloud auth application-default login``;
4. the metadata server of GCE, GKE (Workload Identity) or Cloud Run. Asking it is a network call, so
   doctor only says that the client would ask it.

A credentials file holds secrets (a service account's ``private_key``, an authorized user's
``refresh_token`` and ``client_secret``, the runner's bearer token in a WIF file's
``credential_source.headers``). This module reads only the fields named below and never puts any
other value of the file in what it returns. gcloud's own ``CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE``
is not read by the Python clients; it is mentioned when it is the only variable set.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hokusai_action.errors import InputError

GOOGLE_APPLICATION_CREDENTIALS = "GOOGLE_APPLICATION_CREDENTIALS"
GCLOUD_ONLY_OVERRIDE = "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE"
EMULATOR_VARIABLES = {"gcs": "STORAGE_EMULATOR_HOST", "pubsub": "PUBSUB_EMULATOR_HOST"}
ADC_FILE_NAME = "application_default_credentials.json"
MAX_FILE_BYTES = 1024 * 1024  # a credentials file is a few KB; anything larger is not one

# service_account_impersonation_url: https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/EMAIL:generateAccessToken
_IMPERSONATED = re.compile(r"/serviceAccounts/([^/:]+):generateAccessToken")

FILE_MISSING = "{variable} names {path}, which does not exist, so Google's clients will fail to authenticate."
FILE_MISSING_HINT = (
    "Point it at a credentials file this process can read. In a Docker action the file must be inside "
    "the workspace (google-github-actions/auth writes gha-creds-*.json there); run that step before this one."
)
FILE_UNREADABLE = "{where} is not a Google credentials file ({reason})."
FILE_UNREADABLE_HINT = (
    "Use a service account key, a Workload Identity Federation configuration (external_account) or "
    "`gcloud auth application-default login`."
)


@dataclass(frozen=True)
class Identity:
    """What a Google client would authenticate as, in words safe to print."""

    source: str  # where they come from: the emulator, a file (and which variable named it), the metadata server
    kind: str | None = None  # the file's ``type``
    principal: str | None = None  # who: a service account email, a WIF provider and its impersonation target, ...

    def describe(self) -> str:
        return ", ".join(part for part in (self.kind, self.principal, self.source) if part)


def identity_for(client: str, environ: Mapping[str, str] | None = None) -> Identity:
    """The identity Google's ``client`` (``"gcs"`` or ``"pubsub"``) would use with ``environ``.

    Raises ``InputError`` (exit 2) where the client would fail before any call: a credentials file
    that is named but missing, unreadable or not a credentials file.
    """
    environ = os.environ if environ is None else environ
    emulator_variable = EMULATOR_VARIABLES[client]
    emulator = environ.get(emulator_variable)
    if emulator:
        return Identity(source=f"emulator at {emulator} ({emulator_variable}), no credentials")
    named = environ.get(GOOGLE_APPLICATION_CREDENTIALS)
    if named:
        path = Path(named)
        if not path.is_file():
            raise InputError(
                FILE_MISSING.format(variable=GOOGLE_APPLICATION_CREDENTIALS, path=named), hint=FILE_MISSING_HINT
            )
        return _from_file(path, source=f"file {named} ({GOOGLE_APPLICATION_CREDENTIALS})")
    adc = gcloud_adc_path(environ)
    if adc.is_file():
        return _from_file(adc, source=f"gcloud ADC file {adc}")
    note = ""
    if environ.get(GCLOUD_ONLY_OVERRIDE):
        note = f"; {GCLOUD_ONLY_OVERRIDE} is set but only gcloud reads it: set {GOOGLE_APPLICATION_CREDENTIALS} too"
    return Identity(
        source=(
            "no credentials file: the metadata server's service account (GCE, GKE Workload Identity, Cloud Run), "
            f"not probed{note}"
        )
    )


def gcloud_adc_path(environ: Mapping[str, str]) -> Path:
    """Where ``gcloud auth application-default login`` writes its file (Linux and macOS layout)."""
    config = environ.get("CLOUDSDK_CONFIG")
    if config:
        return Path(config) / ADC_FILE_NAME
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".config" / "gcloud" / ADC_FILE_NAME


def _from_file(path: Path, *, source: str) -> Identity:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES // 1024} KiB")
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        # never the parser's message: it quotes the text around the fault, which may be a key
        reason = exc.args[0] if isinstance(exc, ValueError) and not isinstance(exc, json.JSONDecodeError) else None
        raise InputError(
            FILE_UNREADABLE.format(where=source, reason=reason or type(exc).__name__), hint=FILE_UNREADABLE_HINT
        ) from None
    if not isinstance(info, dict) or not isinstance(info.get("type"), str):
        raise InputError(FILE_UNREADABLE.format(where=source, reason="no 'type' field"), hint=FILE_UNREADABLE_HINT)
    kind = info["type"]
    describe = _DESCRIBERS.get(kind)
    if describe is None:
        raise InputError(
            FILE_UNREADABLE.format(where=source, reason=f"type {_safe(kind)!r} is not one Google's clients know"),
            hint=FILE_UNREADABLE_HINT,
        )
    return Identity(source=source, kind=kind, principal=describe(info, source))


def _service_account(info: Mapping[str, Any], source: str) -> str:
    email = _text(info, "client_email")
    if not email:
        raise InputError(
            FILE_UNREADABLE.format(where=source, reason="a service_account without client_email"),
            hint=FILE_UNREADABLE_HINT,
        )
    project = _text(info, "project_id")
    return f"{email} (key file{f', project {project}' if project else ''})"


def _external_account(info: Mapping[str, Any], source: str) -> str:
    """Workload Identity Federation: a subject token (GitHub's OIDC token, a file, AWS, a command)
    exchanged at Google's STS for the provider named by ``audience``, then, usually, impersonation."""
    audience = _text(info, "audience") or "no audience"
    target = _impersonation_target(info)
    parts = [
        "Workload Identity Federation",
        f"provider {audience}",
        f"impersonating {target}" if target else "direct federated access (no service account impersonated)",
    ]
    subject = _subject_token_source(info.get("credential_source"))
    if subject:
        parts.append(f"subject token {subject}")
    return ", ".join(parts)


def _authorized_user(info: Mapping[str, Any], source: str) -> str:
    account = _text(info, "account")
    quota = _text(info, "quota_project_id")
    who = f"account {account}" if account else "a person's gcloud login"
    return who + (f", quota project {quota}" if quota else "")


def _impersonated_service_account(info: Mapping[str, Any], source: str) -> str:
    target = _impersonation_target(info) or "an unnamed service account"
    inner = info.get("source_credentials")
    inner_kind = _text(inner, "type") if isinstance(inner, Mapping) else None
    return f"impersonating {target}" + (f" with {inner_kind} credentials" if inner_kind else "")


def _external_account_authorized_user(info: Mapping[str, Any], source: str) -> str:
    audience = _text(info, "audience")
    return "Workforce Identity Federation" + (f", pool {audience}" if audience else "")


def _impersonation_target(info: Mapping[str, Any]) -> str | None:
    url = _text(info, "service_account_impersonation_url")
    match = _IMPERSONATED.search(url or "")
    return _safe(match.group(1)) if match else None


def _subject_token_source(source: Any) -> str | None:
    """Where a WIF subject token comes from, never the header values (a bearer token) or the full URL."""
    if not isinstance(source, Mapping):
        return None
    if _text(source, "environment_id"):
        return f"from the cloud environment ({_text(source, 'environment_id')})"
    url = _text(source, "url")
    if url:
        host = urlsplit(url).hostname or "an unparsable URL"
        github = host.endswith(".actions.githubusercontent.com")
        return f"fetched from {_safe(host)}" + (" (GitHub Actions OIDC)" if github else "")
    file = _text(source, "file")
    if file:
        return f"read from file {_safe(file)}"
    if isinstance(source.get("executable"), Mapping):
        return "from a command (needs GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1)"
    return None


def _text(info: Any, key: str) -> str | None:
    value = info.get(key) if isinstance(info, Mapping) else None
    return _safe(value) if isinstance(value, str) and value.strip() else None


def _safe(value: str) -> str:
    """One short printable line: a field meant to be an email or a URL cannot smuggle a key out."""
    flat = " ".join(value.split())
    return flat if len(flat) <= 200 else flat[:200] + "..."


_DESCRIBERS = {
    "service_account": _service_account,
    "external_account": _external_account,
    "authorized_user": _authorized_user,
    "impersonated_service_account": _impersonated_service_account,
    "external_account_authorized_user": _external_account_authorized_user,
}
