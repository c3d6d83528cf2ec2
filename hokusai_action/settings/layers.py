"""Where a setting's value comes from, highest first: a flag or action input, the environment,
``hokusai.yaml``, the default; and how one row of ``settings.table`` is read through them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hokusai_action.settings.config_file import ConfigFile
from hokusai_action.settings.environment import EnvVar
from hokusai_action.settings.table import Setting


def first(*candidates: Any) -> Any:
    """The first candidate given: neither None nor empty text."""
    for candidate in candidates:
        if candidate is not None and candidate != "":
            return candidate
    return None


def first_named(*candidates: tuple[str, Any]) -> tuple[str, Any]:
    """``first`` that also says where the value came from: ``(name, value)``, or ``("", None)``."""
    for name, value in candidates:
        if value is not None and value != "":
            return name, value
    return "", None


@dataclass(frozen=True)
class Layers:
    flags: Mapping[str, Any]  # the CLI option names in snake_case; None and "" already dropped
    environ: Mapping[str, str]
    config: ConfigFile | None
    cwd: Path

    @property
    def base(self) -> Path:
        """Where a relative path in ``hokusai.yaml`` starts: the file's folder."""
        return self.config.path.parent if self.config else self.cwd

    def env(self, var: EnvVar | None) -> str | None:
        """The variable's value; an empty one counts as unset."""
        value = self.environ.get(var.name) if var is not None else None
        return value if value not in (None, "") else None

    def yaml(self, *keys: str) -> Any:
        return self.config.get(*keys) if self.config else None

    def yaml_path(self, *keys: str) -> Any:
        """A path in ``hokusai.yaml``, relative to the file's folder."""
        value = self.yaml(*keys)
        return str(self.base / value) if isinstance(value, str) and not Path(value).is_absolute() else value

    def raw(self, setting: Setting) -> Any:
        """The setting as the highest layer gives it, unparsed; None when none does."""
        read = self.yaml_path if setting.path else self.yaml
        in_yaml = [read(*dotted.split(".")) for dotted in setting.config]
        given = self.flags.get(setting.argument) if setting.argument else None
        return first(given, self.env(setting.env), *(self.env(var) for var in setting.ci), *in_yaml)

    def value(self, setting: Setting) -> Any:
        """The setting's value: the highest layer's, parsed, else its default."""
        raw = self.raw(setting)
        value = setting.parse(raw, setting.name) if raw is not None and setting.parse else raw
        return setting.default if value is None else value
