"""MLflow model versions: a registered version as the registration records it, and version numbers
as MLflow numbers them, so that "02" and "2" are one version wherever they are compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hokusai_action.errors import InputError

# ASCII digits only: str.isdigit() and int() also take other scripts' digits
VERSION_PATTERN = re.compile(r"[0-9]{1,18}")
BAD_VERSION = "--version {given!r} is not a model version number."
BAD_VERSION_HINT = "MLflow numbers a model's versions 1, 2, 3, ...: give one as digits, e.g. --version 3."


@dataclass(frozen=True)
class RegisteredVersion:
    run_id: str
    model_name: str
    version: str
    model_id: str | None
    source: str
    artifact_digest: str | None = None  # set by upload_and_register: the digest of the bytes registered

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


def normalise_version(raw: str) -> str:
    """``raw`` as MLflow numbers versions ("02" is version 2); anything else is exit 2."""
    if not VERSION_PATTERN.fullmatch(raw) or int(raw) == 0:
        raise InputError(BAD_VERSION.format(given=raw), hint=BAD_VERSION_HINT)
    return str(int(raw))
