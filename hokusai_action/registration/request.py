"""The registration's request: every input validated, the measured value read from its one source and
the baseline gate run, before anything is claimed, uploaded or written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from hokusai_action.digest.files import ModelFiles
from hokusai_action.digest.walk import scan_model
from hokusai_action.domain.metrics import (
    GateResult,
    MeasuredValue,
    Metric,
    NoMeasuredValue,
    check_in_range,
    enforce_gate,
    evaluate_gate,
    parse_margin,
    parse_number,
    read_metric_value,
    resolve_metric,
)
from hokusai_action.domain.tags import model_name_for
from hokusai_action.domain.tokens import normalise_token_id
from hokusai_action.errors import InputError
from hokusai_action.registration.parts import Registry
from hokusai_action.settings.loader import Settings
from hokusai_action.settings.provenance import GitInfo
from hokusai_action.settings.table import DEFAULT_RELAY_LEASE

MISSING_OPTION = "Missing {what}: pass {flag} or set '{key}' in hokusai.yaml."
TOO_MANY_SOURCES = "The measured value must come from one source, but {given} were given. Keep one."


@dataclass(frozen=True)
class Unmeasured:
    """A registration given no measured value at all: the metric and baseline it named. A re-run of a
    token registered with these bytes reports what is registered; any other registration stops with
    ``error`` (exit 2) before anything changes."""

    metric: Metric
    baseline: float
    error: NoMeasuredValue


@dataclass(frozen=True)
class RegistrationRequest:
    token_id: str
    model: ModelFiles
    measured: MeasuredValue | None  # None only with ``unmeasured``
    gate: GateResult | None  # None only with ``unmeasured``
    sinks: tuple[str, ...]
    event_source: str
    git: GitInfo
    dry_run: bool
    claim_ttl: float
    relay_lease: float = DEFAULT_RELAY_LEASE  # the lease on its event's deliveries (outbox)
    compare_to: str | None = None
    set_alias: str | None = None
    ci_run_url: str | None = None
    unmeasured: Unmeasured | None = None

    @property
    def model_name(self) -> str:
        return model_name_for(self.token_id)

    @property
    def missing(self) -> Unmeasured:
        """What a request without a measured value named, and why it has none."""
        assert self.unmeasured is not None, "a request has a gate or says what it was not given"
        return self.unmeasured


@dataclass(frozen=True)
class MeasuredRequest(RegistrationRequest):
    """A request with its measured value and the gate it passed: what a first registration (or its dry
    run) needs, and what its tags, event and signed statement record."""

    measured: MeasuredValue
    gate: GateResult

    @classmethod
    def of(cls, request: RegistrationRequest, *, measured: MeasuredValue, gate: GateResult) -> MeasuredRequest:
        given = {field.name: getattr(request, field.name) for field in fields(request)}
        return cls(**{**given, "measured": measured, "gate": gate})


def build_request(
    settings: Settings, registry: Registry | None = None, *, walk: Callable[[], ModelFiles] | None = None
) -> RegistrationRequest:
    """Validate every input, read the measured value and run the baseline gate. Changes nothing.

    ``registry`` is only contacted (read-only) when the value comes from an MLflow run. ``walk`` gives
    ``settings.model_path`` as walked in the background (``prefetch_digest``); otherwise it is walked here.
    """
    token_id = normalise_token_id(settings.token_id)
    if not settings.model_path:
        raise InputError(MISSING_OPTION.format(what="model path", flag="--model-path", key="model_path"))
    if not settings.metric:
        raise InputError(MISSING_OPTION.format(what="metric", flag="--metric", key="metric"))
    if settings.baseline is None:
        raise InputError(MISSING_OPTION.format(what="baseline", flag="--baseline", key="baseline"))
    metric = resolve_metric(settings.metric)
    baseline = check_in_range(metric, parse_number(settings.baseline, what="Baseline"), what="Baseline")
    margin = parse_margin(settings.min_improvement)
    # links checked, nothing read: hashed when the path needs it
    model = walk() if walk is not None else scan_model(settings.model_path)
    request = RegistrationRequest(
        token_id=token_id,
        model=model,
        measured=None,
        gate=None,
        sinks=settings.event_sinks,
        event_source=settings.event_source,
        git=settings.git,
        dry_run=settings.dry_run,
        claim_ttl=settings.claim_ttl,
        relay_lease=settings.relay_lease,
        compare_to=settings.compare_to,
        set_alias=settings.set_alias,
        ci_run_url=settings.ci_run_url,
    )
    try:
        measured = _measure(settings, metric, model, registry)
    except NoMeasuredValue as missing:  # only a re-run of a registered token may go on: register() decides
        return replace(request, unmeasured=Unmeasured(metric=metric, baseline=baseline, error=missing))
    gate = evaluate_gate(metric, measured.value, baseline, margin=margin)
    enforce_gate(gate, measured=measured)
    return MeasuredRequest.of(request, measured=measured, gate=gate)


def _measure(settings: Settings, metric: Metric, model: ModelFiles, registry: Registry | None) -> MeasuredValue:
    """The measured value from exactly one source: flag, metrics file, predictions or an MLflow run."""
    given = [
        flag
        for flag, value in (
            ("--metric-value", settings.metric_value),
            ("--metrics-file", settings.metrics_file),
            ("--predictions", settings.predictions),
            ("--mlflow-run-id", settings.mlflow_run_id),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise InputError(TOO_MANY_SOURCES.format(given=", ".join(given)))
    if settings.predictions:
        from hokusai_action.predictions.compute import compute_metric_from_predictions

        computed = compute_metric_from_predictions(
            settings.predictions,
            metric.name,
            label_column=settings.label_column or "label",
            score_column=settings.score_column,
            positive_label=settings.positive_label,
        )
        value = check_in_range(metric, computed.value, what=f"{metric.name} computed from {settings.predictions}")
        detail = f"sha256:{computed.sha256}, {computed.rows} rows, {computed.label_column}/{computed.score_column}"
        return MeasuredValue(value, "predictions", str(settings.predictions), detail)
    if settings.mlflow_run_id:
        if registry is None:  # pragma: no cover - the CLI and the action always pass one
            raise InputError("Reading a metric from an MLflow run needs the MLflow registry.")
        value, detail = registry.run_metric(settings.mlflow_run_id, metric)
        value = check_in_range(metric, value, what=f"{metric.name} of MLflow run {settings.mlflow_run_id}")
        return MeasuredValue(value, "mlflow-run", settings.mlflow_run_id, detail)
    return read_metric_value(
        metric,
        metric_value=settings.metric_value,
        metrics_file=Path(settings.metrics_file) if settings.metrics_file else None,
        model_path=model.root,
    )
