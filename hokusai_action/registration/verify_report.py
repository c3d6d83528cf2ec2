"""The report of `model verify`: one check per thing compared, and the first failed check its error;
and the comparison each recorded field goes through (the records against what the bytes or the
signed statement say, or against each other).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class VerifyReport:
    token_id: str
    model_name: str
    model_version: str
    model_uri: str
    event_id: str | None = None  # the event of the registration the token holds
    artifact_digest: str | None = None  # recomputed from the bytes
    checks: list[Check] = field(default_factory=list)
    signature: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def error(self) -> str | None:
        failed = next((check for check in self.checks if not check.ok), None)
        return None if failed is None else f"{failed.name}: {failed.detail}"

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    def compare(self, what: str, sources: Mapping[str, Any], reference: tuple[str, Any] | None) -> None:
        """One check per field: every source must agree with ``reference`` (the bytes, the signed
        statement), or with the others; the odd one out is named as edited."""
        if len(sources) == 0:
            return
        if reference is None:
            values = list(sources.values())
            majority = next((v for v in values if sum(_same(v, w) for w in values) * 2 > len(values)), None)
            if majority is None and len(values) > 1:
                listed = "; ".join(f"{name} = {shown(value)}" for name, value in sources.items())
                self.add(what, False, f"the records disagree and none can be trusted over the others: {listed}")
                return
            reference = ("the other records say", majority if len(values) > 1 else values[0])
        label, expected = reference
        for name, value in sources.items():
            if not _same(value, expected):
                self.add(what, False, f"{name} was edited: it says {shown(value)}, {label} {shown(expected)}")
                return
        self.add(what, True, f"{', '.join(sources)} agree: {shown(expected)}")

    def as_dict(self) -> dict[str, Any]:
        """The ``--output json`` contract (the deploy consumer parses these keys)."""
        return {
            "token_id": self.token_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_uri": self.model_uri,
            "event_id": self.event_id,
            "artifact_digest": self.artifact_digest,
            "verified": self.verified,
            "checks": [check.as_dict() for check in self.checks],
            "signature": self.signature,
            "error": self.error,
        }


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
    return x == y or math.isclose(x, y, rel_tol=1e-12, abs_tol=0.0)


def shown(value: Any) -> str:
    """A recorded value as a check's detail names it."""
    return "(none)" if value is None else repr(value) if not isinstance(value, str) else value
