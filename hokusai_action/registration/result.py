"""What a registration reports: the result of a registration, of a re-run (what the token's row
records, with a warning where the values given now differ), of a dry run, and of a refused gate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hokusai_action.db import outbox
from hokusai_action.db.store import Database, Token
from hokusai_action.domain.event import CloudEventRecord
from hokusai_action.domain.metrics import GateFailed, GateResult, evaluate_gate, resolve_metric
from hokusai_action.domain.statuses import REJECTED
from hokusai_action.domain.tags import model_name_for
from hokusai_action.errors import InputError
from hokusai_action.progress import TaskStats
from hokusai_action.registration.parts import Registry
from hokusai_action.registration.request import RegistrationRequest

REGISTERED_VALUE_DIFFERS = (
    "The {what} given now ({given}) differs from the registered one ({registered}); the registered one is "
    "reported. To register the new {what}, reset the token (`hokusai-ml-platform token reset {token}`) or "
    "create a new token."
)


@dataclass
class RegistrationResult:
    token_id: str
    status: str
    gate: GateResult
    artifact_digest: str | None  # None when the gate refused the model before it was hashed
    model_name: str
    mlflow_run_id: str | None = None
    model_version: str | None = None
    model_uri: str | None = None
    event_id: str | None = None
    events_delivered: dict[str, bool] = field(default_factory=dict)
    events_dead_lettered: dict[str, str] = field(default_factory=dict)  # sink -> last error (events retry)
    dry_run: bool = False
    already_registered: bool = False
    metric_source: str | None = "flag"  # None: not recorded (a registration made elsewhere)
    metric_source_detail: str | None = None
    alias: str | None = None
    signature: dict[str, str] | None = None  # the event's data.signature; None when unsigned
    event: CloudEventRecord | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    upload: TaskStats | None = None  # what this run uploaded (None: nothing, e.g. a re-run)
    refusal: GateFailed | None = None  # why the gate refused the model (status "rejected")

    @property
    def events_pending(self) -> list[str]:
        return [sink for sink, done in self.events_delivered.items() if not done]

    def as_dict(self) -> dict[str, Any]:
        out = {
            "token_id": self.token_id,
            "status": self.status,
            "mlflow_run_id": self.mlflow_run_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_uri": self.model_uri,
            "metric": {**self.gate.as_dict(), "source": self.metric_source, "source_detail": self.metric_source_detail},
            "artifact_digest": self.artifact_digest,
            "event_id": self.event_id,
            "events_delivered": self.events_delivered,
            "dry_run": self.dry_run,
            "already_registered": self.already_registered,
            "alias": self.alias,
            "signature": self.signature,
            "warnings": list(self.warnings),
        }
        if self.upload is not None:
            out["upload"] = self.upload.as_dict()
        if self.dry_run and self.event is not None:
            out["event"] = self.event.structured()
        return out


def token_result(request: RegistrationRequest, token: Token, *, gate: GateResult, **extra: Any) -> RegistrationResult:
    """The result as ``token``'s row tells it, with ``gate`` and ``extra``."""
    return RegistrationResult(
        token_id=request.token_id,
        status=token.model_status,
        gate=gate,
        artifact_digest=request.model.digest,
        model_name=token.model_name or request.model_name,
        mlflow_run_id=token.mlflow_run_id,
        model_version=token.model_version,
        model_uri=token.model_uri,
        signature=token.signature,
        **extra,
    )


def registered_result(
    request: RegistrationRequest, token: Token, database: Database, **extra: Any
) -> RegistrationResult:
    """A registered token's result: its registered value, and where that came from."""
    gate, warnings = _registered_gate(request, token)
    source, detail = _registered_source(database, token)
    return token_result(
        request, token, gate=gate, warnings=warnings, metric_source=source, metric_source_detail=detail, **extra
    )


def rejected_result(token_id: str, refusal: GateFailed, *, dry_run: bool = False) -> RegistrationResult:
    """The report of a registration the gate refused: the gate and where the value came from; nothing
    was uploaded, claimed or written, so nothing registered is named."""
    assert refusal.gate is not None, "enforce_gate attaches its report"
    measured = refusal.measured
    return RegistrationResult(
        token_id=token_id,
        status=REJECTED,
        gate=refusal.gate,
        artifact_digest=None,
        model_name=model_name_for(token_id),
        dry_run=dry_run,
        metric_source=measured.source if measured else None,
        metric_source_detail=measured.detail if measured else None,
        refusal=refusal,
    )


def move_alias(request: RegistrationRequest, registry: Registry, result: RegistrationResult) -> RegistrationResult:
    """--set-alias: point the alias at the registered version (again on a re-run: it converges)."""
    if request.set_alias and result.model_version:
        registry.set_alias(result.model_name, request.set_alias, result.model_version)
        result.alias = request.set_alias
    return result


def _registered_gate(request: RegistrationRequest, token: Token) -> tuple[GateResult, list[str]]:
    """A re-run reports what is registered, and warns where the values given now differ (a re-run that
    gave no value has none to differ)."""
    gate = request.gate
    if token.metric_value is None:  # registered elsewhere without a value: nothing better to report
        if gate is None:
            raise request.missing.error
        return gate, []
    given_metric = gate.metric if gate is not None else request.missing.metric
    given_baseline = gate.baseline if gate is not None else request.missing.baseline
    metric = given_metric
    warnings = []
    if token.metric_name and token.metric_name != metric.name:
        try:
            metric = resolve_metric(token.metric_name)
        except InputError:
            metric = replace(given_metric, name=token.metric_name)
        given = f"{given_metric.name} = {gate.value:g}" if gate is not None else given_metric.name
        warnings.append(_differs("metric", given, f"{token.metric_name} = {token.metric_value:g}", request))
    elif gate is not None and not _same_number(gate.value, token.metric_value):
        warnings.append(_differs(f"{metric.name} value", f"{gate.value:g}", f"{token.metric_value:g}", request))
    baseline = given_baseline if token.baseline_value is None else token.baseline_value
    if not _same_number(given_baseline, baseline):
        warnings.append(_differs("baseline", f"{given_baseline:g}", f"{baseline:g}", request))
    return evaluate_gate(metric, token.metric_value, baseline), warnings


def _differs(what: str, given: str, registered: str, request: RegistrationRequest) -> str:
    return REGISTERED_VALUE_DIFFERS.format(what=what, given=given, registered=registered, token=request.token_id)


def _registered_source(database: Database, token: Token) -> tuple[str | None, str | None]:
    """Where the registered value came from, as the registration's event recorded it (None: not
    recorded, e.g. the site deleted the event or another tool registered the token)."""
    event_id = token.registered_event_id
    if event_id is None:
        return None, None
    with database.unit_of_work() as uow:
        event = outbox.get_event(uow, event_id)
    data = event.data if event is not None and isinstance(event.data, Mapping) else {}
    return data.get("metric_source"), data.get("metric_source_detail")


def _same_number(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
