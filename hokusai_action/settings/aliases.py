"""MLflow's rules for a registered model's aliases (``--set-alias``, ``--compare-to``), checked
before anything changes.

MLflow's own rules (mlflow/utils/validation.py: _validate_model_alias_name and
_validate_model_alias_name_reserved): word characters and '-', at most 255, and, for an alias being
set, not 'latest' nor v<digits> in any case. MLflow checks them only when the alias is set, after
the registration committed. fullmatch: MLflow's re.match(...$) would also let a trailing newline through.
"""

from __future__ import annotations

import re
from typing import Any

from hokusai_action.errors import InputError

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
# the settings that may name an alias: (key, flag, whether the alias is set, or only read)
ALIAS_SETTINGS = (("set_alias", "--set-alias", True), ("compare_to", "--compare-to", False))

_ALIAS_NAME = re.compile(r"[\w-]{1,255}")
_VERSION_ALIAS = re.compile(r"[vV]\d+")
_RESERVED_ALIAS = "latest"


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


def check_alias(alias: Any, *, setting: bool, what: str) -> None:
    """Raise ``InputError`` naming ``what`` for an alias MLflow would refuse."""
    problem = alias_problem(alias, setting=setting)
    if problem is not None:
        raise InputError(problem.format(what=what, alias=alias))
