"""The registration: one function handed its parts (registry, database, sinks); it builds no client.

    inputs -> validate (no side effects) -> read metric -> gate vs baseline
           -> claim token (draft -> registering, one winner) -> upload + register in MLflow (idempotent)
           -> one DB transaction: token -> registered + event row (outbox)
           -> deliver event to each sink -> mark delivered -> report

Nothing is claimed, uploaded or written before every input is valid and the gate has passed.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hokusai_action import __version__
from hokusai_action.db import outbox
from hokusai_action.db.owner import claim_owner_id, owner_is_dead_here
from hokusai_action.db.store import (
    Database,
    Token,
    UnitOfWork,
    count_events,
    get_token,
    mark_registered,
    release_claim,
    renew_claim,
    token_claimed,
    token_missing,
    try_claim,
    utcnow,
)
from hokusai_action.digest.background import BackgroundHash
from hokusai_action.digest.files import ModelFiles, Progress
from hokusai_action.digest.hashing import hash_model
from hokusai_action.digest.walk import scan_model
from hokusai_action.domain.event import CloudEventRecord, event_id_for
from hokusai_action.domain.metrics import (
    Champion,
    GateFailed,
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
from hokusai_action.domain.sinks import EventSink
from hokusai_action.domain.statuses import DONE_STATUSES, REJECTED
from hokusai_action.domain.tags import (
    TAG_BASELINE,
    TAG_DIGEST,
    TAG_GIT_REF,
    TAG_GIT_REPOSITORY,
    TAG_GIT_SHA,
    TAG_GREATER_IS_BETTER,
    TAG_METRIC,
    TAG_METRIC_VALUE,
    TAG_SIGNATURE_PREFIX,
    TAG_TOKEN,
    TAG_TOOL_VERSION,
    model_name_for,
)
from hokusai_action.domain.tokens import normalise_token_id
from hokusai_action.domain.versions import RegisteredVersion
from hokusai_action.errors import (
    HokusaiError,
    InputError,
    TokenStateError,
)
from hokusai_action.failpoints import failpoint
from hokusai_action.progress import TaskStats
from hokusai_action.settings.loader import Settings
from hokusai_action.settings.provenance import GitInfo
from hokusai_action.settings.table import DEFAULT_RELAY_LEASE

if TYPE_CHECKING:
    from hokusai_action.signing.signer import ModelSigner

log = logging.getLogger(__name__)


MISSING_OPTION = "Missing {what}: pass {flag} or set '{key}' in hokusai.yaml."
TOO_MANY_SOURCES = "The measured value must come from one source, but {given} were given. Keep one."
TOKEN_NOT_DRAFT = "Token {token} is '{status}'; only a draft token can be registered."
TOKEN_NOT_DRAFT_HINT = "Create a new token for a new model, or ask the Hokusai team to reset this one."
TOKEN_OTHER_BYTES = (
    "Token {token} is already registered with other model bytes ({registered}, version {version}); "
    "this model is {digest}."
)
TOKEN_OTHER_BYTES_HINT = "A token holds one model: create a new token for this one."
TOKEN_CLAIMED_HINT = "Wait for that run to finish, then re-run: a finished registration of the same bytes exits 0."
CLAIM_LOST = "The claim on token {token} expired and was taken by another run while uploading."
CLAIM_LOST_HINT = "Re-run: the uploaded version is reused. Raise HOKUSAI_CLAIM_TTL for very large models."
REGISTERED_VALUE_DIFFERS = (
    "The {what} given now ({given}) differs from the registered one ({registered}); the registered one is "
    "reported. To register the new {what}, reset the token (`hokusai-ml-platform token reset {token}`) or "
    "create a new token."
)


class Registry(Protocol):
    def check_reachable(self) -> str | None: ...

    def find_version(self, model_name: str, digest: str) -> RegisteredVersion | None: ...

    def upload_and_register(
        self,
        model: ModelFiles,
        *,
        model_name: str,
        token_id: str,
        tags: Mapping[str, str],
        params: Mapping[str, str],
        metric_name: str,
        metric_value: float,
        progress: Progress | None = None,
    ) -> RegisteredVersion: ...

    def run_metric(self, run_id: str, metric: Metric) -> tuple[float, str]: ...

    def champion(self, model_name: str, alias: str, metric: Metric) -> Champion: ...

    def set_alias(self, model_name: str, alias: str, version: str) -> None: ...

    def upload_signature(self, run_id: str, folder: Path, artifact_path: str) -> str: ...

    def set_version_tags(self, model_name: str, version: str, tags: Mapping[str, str]) -> None: ...


class ProgressTask(Progress, Protocol):
    def close(self, *, completed: bool = True) -> TaskStats: ...


class ProgressReporter(Protocol):
    """Shows long hashing and uploads (``hokusai_action.progress``); built in ``wiring``."""

    def task(self, verb: str, *, total_bytes: int, total_files: int) -> ProgressTask: ...


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


# ---------------------------------------------------------------------------------- validate


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
    measured: MeasuredValue | None = None
    gate: GateResult | None = None
    unmeasured: Unmeasured | None = None
    try:
        measured = _measure(settings, metric, model, registry)
    except NoMeasuredValue as missing:  # only a re-run of a registered token may go on: register() decides
        unmeasured = Unmeasured(metric=metric, baseline=baseline, error=missing)
    else:
        gate = evaluate_gate(metric, measured.value, baseline, margin=margin)
        enforce_gate(gate, measured=measured)
    return RegistrationRequest(
        token_id=token_id,
        model=model,
        measured=measured,
        gate=gate,
        unmeasured=unmeasured,
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


# ---------------------------------------------------------------------------------- register


def _tags(request: RegistrationRequest) -> dict[str, str]:
    gate = request.gate
    tags = {
        TAG_TOKEN: request.token_id,
        TAG_DIGEST: request.model.digest,
        TAG_METRIC: gate.metric.name,
        TAG_METRIC_VALUE: repr(gate.value),
        TAG_BASELINE: repr(gate.baseline),
        TAG_GREATER_IS_BETTER: str(gate.metric.greater_is_better).lower(),
        TAG_TOOL_VERSION: __version__,
        "hokusai.metric_source": request.measured.source,
        "hokusai.gate.required": repr(gate.required),
        "hokusai.gate.delta": repr(gate.delta),
        "hokusai.gate.passed": str(gate.passed).lower(),
    }
    if request.measured.source_path:
        tags["hokusai.metric_source_path"] = request.measured.source_path[:4000]
    if request.measured.detail:
        tags["hokusai.metric_source_detail"] = request.measured.detail[:4000]
    if gate.margin:
        tags["hokusai.gate.margin"] = gate.margin.text
    if gate.champion is not None:
        tags["hokusai.gate.champion_alias"] = gate.champion.alias
        tags["hokusai.gate.champion_version"] = gate.champion.version or "none"
        if gate.champion.value is not None:
            tags["hokusai.gate.champion_value"] = repr(gate.champion.value)
    for key, value in (
        (TAG_GIT_SHA, request.git.sha),
        (TAG_GIT_REF, request.git.ref),
        (TAG_GIT_REPOSITORY, request.git.repository),
    ):
        if value:
            tags[key] = value
    return tags


def _params(request: RegistrationRequest) -> dict[str, str]:
    return {
        "token_id": request.token_id,
        "metric": request.gate.metric.name,
        "baseline": repr(request.gate.baseline),
        "model_files": str(len(request.model.files)),
        "model_bytes": str(request.model.total_bytes),
        "model_format": "mlflow"
        if request.model.is_mlflow_model
        else ("directory" if request.model.is_dir else "file"),
    }


def build_event(
    request: RegistrationRequest,
    version: RegisteredVersion,
    registered_at: str,
    *,
    event_id: str,
    signature: dict[str, str] | None = None,
) -> CloudEventRecord:
    gate = request.gate
    return CloudEventRecord(
        id=event_id,
        source=request.event_source,
        time=registered_at,
        subject=request.token_id,
        data={
            "token_id": request.token_id,
            "mlflow_run_id": version.run_id,
            "model_name": version.model_name,
            "model_version": version.version,
            "model_uri": version.model_uri,
            "metric_name": gate.metric.name,
            "metric_value": gate.value,
            "baseline_value": gate.baseline,
            "artifact_digest": request.model.digest,
            "git": request.git.as_dict(),
            "registered_at": registered_at,
            "metric_source": request.measured.source,
            "metric_source_detail": request.measured.detail,
            "gate": gate.as_dict(),
            "signature": signature,
        },
    )


def registered_event_id(token: Token) -> str | None:
    """The event of ``token``'s current registration (``Token.registered_event_id``)."""
    return token.registered_event_id


def next_registration(uow: UnitOfWork, token_id: str, digest: str) -> tuple[int, str]:
    """The number and event id of a new registration, numbered by the token's registration counter
    (its commit stores ``number + 1``), so a token reset to draft and registered again is heard again,
    and pruning ``events`` rows never brings an old number back. An id that exists all the same (a
    counter that started below the token's history: rows pruned before revision 0004) is skipped.
    Call it while holding the token's claim: no other run can commit a registration of this token
    before ours (one that took the claim over makes ``mark_registered`` fail)."""
    token = get_token(uow, token_id)
    number = token.registration_count if token is not None else 0
    while outbox.event_exists(uow, number_id := event_id_for(token_id, digest, number)):
        number += 1
    return number, number_id


def _registered_gate(request: RegistrationRequest, token: Token) -> tuple[GateResult, list[str]]:
    """A re-run reports what is registered, and warns where the values given now differ (a re-run that
    gave no value has none to differ)."""
    gate = request.gate
    if token.metric_value is None:  # registered elsewhere without a value: nothing better to report
        if gate is None:
            assert request.unmeasured is not None
            raise request.unmeasured.error
        return gate, []
    given_metric = gate.metric if gate is not None else _unmeasured(request).metric
    given_baseline = gate.baseline if gate is not None else _unmeasured(request).baseline
    metric = given_metric
    warnings = []
    if token.metric_name and token.metric_name != metric.name:
        try:
            metric = resolve_metric(token.metric_name)
        except InputError:
            metric = replace(given_metric, name=token.metric_name)
        warnings.append(
            REGISTERED_VALUE_DIFFERS.format(
                what="metric",
                given=f"{given_metric.name} = {gate.value:g}" if gate is not None else given_metric.name,
                registered=f"{token.metric_name} = {token.metric_value:g}",
                token=request.token_id,
            )
        )
    elif gate is not None and not _same_number(gate.value, token.metric_value):
        warnings.append(
            REGISTERED_VALUE_DIFFERS.format(
                what=f"{metric.name} value", given=f"{gate.value:g}", registered=f"{token.metric_value:g}",
                token=request.token_id,
            )
        )  # fmt: skip
    baseline = given_baseline if token.baseline_value is None else token.baseline_value
    if not _same_number(given_baseline, baseline):
        warnings.append(
            REGISTERED_VALUE_DIFFERS.format(
                what="baseline", given=f"{given_baseline:g}", registered=f"{baseline:g}", token=request.token_id
            )
        )
    return evaluate_gate(metric, token.metric_value, baseline), warnings


def _unmeasured(request: RegistrationRequest) -> Unmeasured:
    assert request.unmeasured is not None, "a request has a gate or says what it was not given"
    return request.unmeasured


def _registered_source(database: Database, token: Token) -> tuple[str | None, str | None]:
    """Where the registered value came from, as the registration's event recorded it (None: not
    recorded, e.g. the site deleted the event or another tool registered the token)."""
    event_id = registered_event_id(token)
    if event_id is None:
        return None, None
    with database.unit_of_work() as uow:
        event = outbox.get_event(uow, event_id)
    data = event.data if event is not None and isinstance(event.data, Mapping) else {}
    return data.get("metric_source"), data.get("metric_source_detail")


def _same_number(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


def _result_from_token(
    request: RegistrationRequest, token: Token, database: Database, **extra: Any
) -> RegistrationResult:
    """The result as ``token``'s row tells it; a registered token reports its registered value and source."""
    if token.model_status in DONE_STATUSES:
        gate, warnings = _registered_gate(request, token)
        source, detail = _registered_source(database, token)
    else:
        assert request.gate is not None and request.measured is not None, "measured before any dry run"
        gate, warnings = request.gate, []
        source, detail = request.measured.source, request.measured.detail
    return RegistrationResult(
        token_id=request.token_id,
        status=token.model_status,
        gate=gate,
        warnings=warnings,
        artifact_digest=request.model.digest,
        model_name=token.model_name or request.model_name,
        mlflow_run_id=token.mlflow_run_id,
        model_version=token.model_version,
        model_uri=token.model_uri,
        metric_source=source,
        metric_source_detail=detail,
        signature=token.signature,
        **extra,
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


def _check_state(request: RegistrationRequest, token: Token | None, database: Database) -> None:
    if token is None:
        raise token_missing(request.token_id, database.display_url)
    if token.model_status in DONE_STATUSES and token.artifact_digest == request.model.digest:
        return  # an idempotent re-run of this very registration
    if token.model_status in DONE_STATUSES and token.artifact_digest:
        raise TokenStateError(
            TOKEN_OTHER_BYTES.format(
                token=request.token_id,
                registered=token.artifact_digest,
                version=token.model_version,
                digest=request.model.digest,
            ),
            hint=TOKEN_OTHER_BYTES_HINT,
        )
    if token.model_status not in ("draft", "registering"):
        raise TokenStateError(
            TOKEN_NOT_DRAFT.format(token=request.token_id, status=token.model_status),
            hint=TOKEN_NOT_DRAFT_HINT,
        )


def deliver_event(
    database: Database, sinks: Mapping[str, EventSink], event_id: str, *, lease_seconds: float = DEFAULT_RELAY_LEASE
) -> dict[str, bool]:
    outbox.deliver_pending(database, sinks, event_id=event_id, lease_seconds=lease_seconds)
    with database.unit_of_work() as uow:
        return outbox.delivery_status(uow, event_id)


def _finish_registered(
    request: RegistrationRequest, token: Token, database: Database, sinks: Mapping[str, EventSink]
) -> RegistrationResult:
    """The token is registered with these bytes: deliver whatever is still pending and report."""
    event_id = registered_event_id(token)
    assert event_id is not None  # registered with these bytes: a digest is set
    delivered = deliver_event(database, sinks, event_id, lease_seconds=request.relay_lease)
    return _result_from_token(request, token, database, event_id=event_id, events_delivered=delivered)


def register(
    request: RegistrationRequest,
    *,
    registry: Registry,
    database: Database,
    sinks: Mapping[str, EventSink],
    signer: ModelSigner | None = None,
    progress: ProgressReporter | None = None,
    prefetched: BackgroundHash | None = None,
) -> RegistrationResult:
    """Register ``request`` exactly once. See the module docstring for the order of steps.

    The model's bytes are read once: where the digest decides the path (the token is registered, was
    registered before a reset, or a killed run left it registering; or a dry run looks the version up)
    they are hashed first, and a version of these bytes is found before anything is sent; on a first
    registration they are hashed while they upload, and the digest comes back with the version.
    ``prefetched`` is the hash of ``request.model`` the command started before its imports.
    """
    # beside the database's first round trips (a re-run needs it); cancelled if the upload will hash
    early = _start_hash(request, progress, prefetched)
    try:
        database.require_schema()
        if signer is not None:
            signer.check()  # the key, certificate or identity: exit 2 before anything changes
        with database.unit_of_work() as uow:
            token = get_token(uow, request.token_id)
            hash_first = token is not None and (request.dry_run or _may_exist(uow, token))
        if hash_first:
            request = _hashed(request, progress, early)
            early = None
    finally:
        if early is not None:
            early[0].cancel()
            if early[1] is not None:
                early[1].close(completed=False)
    _check_state(request, token, database)
    assert token is not None

    if token.model_status in DONE_STATUSES:  # same bytes (checked above): an idempotent re-run
        if request.dry_run:  # report only: no delivery, no alias move
            event_id = registered_event_id(token)
            with database.unit_of_work() as uow:
                delivered = outbox.delivery_status(uow, event_id) if event_id else {}
            return _result_from_token(
                request,
                token,
                database,
                event_id=event_id,
                events_delivered=delivered,
                dry_run=True,
                already_registered=True,
            )
        result = _finish_registered(request, token, database, sinks)
        result.already_registered = True
        return _move_alias(request, registry, result)
    if request.unmeasured is not None:  # not a re-run: a registration needs its measured value
        raise request.unmeasured.error

    registry.check_reachable()  # bounded wait; nothing is claimed while MLflow is down
    request = _gate_against_champion(request, registry)
    if request.dry_run:
        return _dry_run(request, token, registry, database)

    owner = claim_owner_id()
    heartbeat: ClaimHeartbeat | None = None
    try:
        token = _claim(request, database, owner)
        failpoint("after_claim")
        if token.model_status in DONE_STATUSES:  # another run finished it while we checked
            request = _hashed(request, progress)
            _check_state(request, token, database)
            result = _finish_registered(request, token, database, sinks)
            result.already_registered = True
            return _move_alias(request, registry, result)
        heartbeat = ClaimHeartbeat(database, request.token_id, owner, request.claim_ttl)
        heartbeat.start()
        task = _task(progress, "uploaded", request.model)
        try:
            version = registry.upload_and_register(
                request.model,
                model_name=request.model_name,
                token_id=request.token_id,
                tags=_tags(request),
                params=_params(request),
                metric_name=request.gate.metric.name,
                metric_value=request.gate.value,
                progress=task,
            )
        except BaseException:
            if task is not None:
                task.close(completed=False)
            raise
        uploaded = task.close() if task is not None else None
        if not request.model.hashed:  # hashed by the upload
            assert version.artifact_digest, "the registry returns the digest of what it uploaded"
            request = replace(request, model=replace(request.model, digest=version.artifact_digest))
        registered_at = utcnow()
        with database.unit_of_work() as uow:  # before signing: the bundles go in a folder named by it
            number, event_id = next_registration(uow, request.token_id, request.model.digest)
        # signed after the upload (the statement names the version), before the commit; keyless: exit 4
        signature = sign_registration(
            request, version, registered_at, signer=signer, registry=registry, event_id=event_id
        )
        heartbeat.stop()
        with database.unit_of_work() as uow:
            event = build_event(
                request,
                version,
                registered_at.isoformat().replace("+00:00", "Z"),
                event_id=event_id,
                signature=signature,
            )
            if not mark_registered(
                uow,
                request.token_id,
                owner=owner,
                values={
                    "mlflow_run_id": version.run_id,
                    "metric_name": request.gate.metric.name,
                    "metric_value": request.gate.value,
                    "baseline_value": request.gate.baseline,
                    "model_name": version.model_name,
                    "model_version": version.version,
                    "model_uri": version.model_uri,
                    "artifact_digest": request.model.digest,
                    "registered_at": registered_at,
                    "event_id": event.id,
                    "registration_count": number + 1,
                    **{f"signature_{key}": value for key, value in (signature or {}).items()},
                },
            ):
                raise TokenStateError(CLAIM_LOST.format(token=request.token_id), hint=CLAIM_LOST_HINT)
            outbox.add_event(uow, event, token_id=request.token_id, sinks=request.sinks)
            failpoint("before_commit")
            uow.commit()
    except BaseException:
        if heartbeat is not None:
            heartbeat.stop()
        _release_quietly(database, request.token_id, owner)
        raise

    failpoint("after_commit")
    log.info("token %s registered as %s", request.token_id, version.model_uri)
    try:
        delivered = deliver_event(database, sinks, event.id, lease_seconds=request.relay_lease)
    except HokusaiError as exc:  # committed: a failed delivery leaves the event pending (exit 5), not exit 4
        log.warning("event %s not delivered: %s", event.id, exc.one_line())
        delivered = {sink: sink == "database" for sink in request.sinks}
    result = RegistrationResult(
        token_id=request.token_id,
        status="registered",
        gate=request.gate,
        artifact_digest=request.model.digest,
        model_name=version.model_name,
        mlflow_run_id=version.run_id,
        model_version=version.version,
        model_uri=version.model_uri,
        event_id=event.id,
        events_delivered=delivered,
        metric_source=request.measured.source,
        metric_source_detail=request.measured.detail,
        signature=signature,
        upload=uploaded,
    )
    return _move_alias(request, registry, result)


def registration_statement(
    request: RegistrationRequest, version: RegisteredVersion, registered_at: str, digest: str
) -> dict[str, Any]:
    """The signed claim: this token's model, these bytes, beat this baseline (README, "Verifiable registrations")."""
    from hokusai_action.signing.signer import STATEMENT_TYPE

    measured = request.measured
    predictions = re.search(r"sha256:([0-9a-f]{64})", measured.detail or "")
    if measured.source != "predictions":
        predictions = None
    return {
        "_type": STATEMENT_TYPE,
        "token_id": request.token_id,
        "model_name": version.model_name,
        "model_version": version.version,
        "model_uri": version.model_uri,
        "mlflow_run_id": version.run_id,
        "artifact_digest": digest,
        "gate": request.gate.as_dict(),
        "metric_provenance": {
            "source": measured.source,
            "path": measured.source_path,
            "detail": measured.detail,
            "predictions_sha256": predictions.group(1) if predictions else None,
        },
        "git": request.git.as_dict(),
        "ci_run_url": request.ci_run_url,
        "registered_at": registered_at,
        "tool_version": __version__,
    }


def sign_registration(
    request: RegistrationRequest,
    version: RegisteredVersion,
    registered_at: Any,
    *,
    signer: ModelSigner | None,
    registry: Registry,
    event_id: str,
) -> dict[str, str] | None:
    """Sign the model files and the statement, put the bundles beside the model (the run's artifacts,
    in a folder of this registration's own: a reused version's run keeps every registration's bundles)
    and their hashes on the version; return the event's ``data.signature`` (None when unsigned)."""
    if signer is None:
        return None
    from hokusai_action.signing.signer import SIGNATURE_FOLDER

    digest = request.model.digest  # the uploaded bytes' digest, known once the upload is done
    statement = registration_statement(request, version, registered_at.isoformat().replace("+00:00", "Z"), digest)
    signed = signer.sign(request.model, statement)
    try:
        request.model.ensure_unchanged()  # what was signed is what was hashed and uploaded
        bundle_uri = registry.upload_signature(version.run_id, signed.folder, f"{SIGNATURE_FOLDER}/{event_id}")
        record = signed.record(bundle_uri)
        registry.set_version_tags(
            version.model_name, version.version, {f"{TAG_SIGNATURE_PREFIX}{k}": v for k, v in record.items()}
        )
    finally:
        signed.cleanup()
    return record


def _task(progress: ProgressReporter | None, verb: str, model: ModelFiles) -> ProgressTask | None:
    if progress is None:
        return None
    return progress.task(verb, total_bytes=model.total_bytes, total_files=len(model.files))


def _may_exist(uow: UnitOfWork, token: Token) -> bool:
    """Whether a version of these bytes may exist already, so the digest decides before any upload: the
    token is registered, a killed run left it ``registering``, or it was reset to draft after a
    registration (its events stay, and the version they name too). Only a first registration streams."""
    if token.model_status in (*DONE_STATUSES, "registering"):
        return True
    if token.model_status != "draft":
        return False  # refused by its state: nothing to hash for
    return bool(token.artifact_digest) or token.registration_count > 0 or count_events(uow, token.token_id) > 0


def _start_hash(
    request: RegistrationRequest, progress: ProgressReporter | None, prefetched: BackgroundHash | None = None
) -> tuple[BackgroundHash, ProgressTask | None] | None:
    if request.model.hashed:
        if prefetched is not None:
            prefetched.cancel()
        return None
    task = _task(progress, "hashed", request.model)
    if prefetched is not None and prefetched.model is request.model:
        if task is not None:
            prefetched.attach(task)
        return prefetched, task
    if prefetched is not None:  # another walk of the model: not what this request will register
        prefetched.cancel()
    return BackgroundHash(request.model, task), task


def _hashed(
    request: RegistrationRequest,
    progress: ProgressReporter | None,
    early: tuple[BackgroundHash, ProgressTask | None] | None = None,
) -> RegistrationRequest:
    """``request`` with its model hashed: the digest decides the path here (a re-run, a dry run)."""
    if request.model.hashed:
        return request
    background, task = early if early is not None else (None, _task(progress, "hashed", request.model))
    try:
        model = background.result() if background is not None else hash_model(request.model, task)
    except BaseException:
        if task is not None:
            task.close(completed=False)
        raise
    if task is not None:
        task.close()
    return replace(request, model=model)


def _gate_against_champion(request: RegistrationRequest, registry: Registry) -> RegistrationRequest:
    """With --compare-to, the model must also beat the version holding that alias (read-only)."""
    if not request.compare_to:
        return request
    gate = request.gate
    champion = registry.champion(request.model_name, request.compare_to, gate.metric)
    gate = evaluate_gate(gate.metric, gate.value, gate.baseline, margin=gate.margin, champion=champion)
    enforce_gate(gate, measured=request.measured)
    return replace(request, gate=gate)


def _move_alias(request: RegistrationRequest, registry: Registry, result: RegistrationResult) -> RegistrationResult:
    """--set-alias: point the alias at the registered version (again on a re-run: it converges)."""
    if request.set_alias and result.model_version:
        registry.set_alias(result.model_name, request.set_alias, result.model_version)
        result.alias = request.set_alias
    return result


def _claim(request: RegistrationRequest, database: Database, owner: str) -> Token:
    with database.unit_of_work() as uow:
        won = try_claim(uow, request.token_id, owner=owner, ttl_seconds=request.claim_ttl)
        uow.commit()
    with database.unit_of_work() as uow:
        token = get_token(uow, request.token_id)
    assert token is not None
    if won:
        return token
    if token.model_status == "registering" and owner_is_dead_here(token.claim_owner):
        # a run on this host was killed mid-registration: take over its claim (still one winner)
        with database.unit_of_work() as uow:
            won = try_claim(
                uow,
                request.token_id,
                owner=owner,
                ttl_seconds=request.claim_ttl,
                stale_owner=token.claim_owner,
            )
            uow.commit()
        if won:
            log.warning("took over the claim of %s from a dead run (%s)", request.token_id, token.claim_owner)
            with database.unit_of_work() as uow:
                token = get_token(uow, request.token_id)
            assert token is not None
            return token
    if token.model_status == "registering":
        raise token_claimed(token, hint=TOKEN_CLAIMED_HINT)
    if token.model_status == "registered":
        return token
    _check_state(request, token, database)
    raise token_claimed(token, hint=TOKEN_CLAIMED_HINT)


def _release_quietly(database: Database, token_id: str, owner: str) -> None:
    """Give the claim back (token -> draft) after a failure; never hide the original error."""
    try:
        with database.unit_of_work() as uow:
            release_claim(uow, token_id, owner=owner)
            uow.commit()
    except Exception as exc:  # the original error matters more; the claim expires on its own
        log.warning("could not release the claim on %s (%s); it expires on its own", token_id, type(exc).__name__)


class ClaimHeartbeat:
    """Keeps a claim alive while a long upload runs, so its TTL can be short.

    A run killed on another host (a CI job cancelled) then frees the token within one TTL, and a live
    upload is never mistaken for a dead one. If the claim is lost anyway, ``mark_registered`` notices.
    """

    def __init__(self, database: Database, token_id: str, owner: str, ttl: float) -> None:
        self._database, self._token_id, self._owner, self._ttl = database, token_id, owner, ttl
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.wait(self._ttl / 4):
            try:
                with self._database.unit_of_work() as uow:
                    renewed = renew_claim(uow, self._token_id, owner=self._owner, ttl_seconds=self._ttl)
                    uow.commit()
            except Exception as exc:  # a blip: the next beat tries again, within the TTL
                log.warning("could not renew the claim on %s (%s)", self._token_id, type(exc).__name__)
                continue
            if not renewed:
                log.warning("the claim on %s was lost; the registration will stop before committing", self._token_id)
                return


def _dry_run(request: RegistrationRequest, token: Token, registry: Registry, database: Database) -> RegistrationResult:
    """Contact every service read-only; report what a real run would do."""
    existing = registry.find_version(request.model_name, request.model.digest)
    preview = RegisteredVersion(
        run_id=existing.run_id if existing else "(new run)",
        model_name=request.model_name,
        version=existing.version if existing else "(next)",
        model_id=existing.model_id if existing else None,
        source=existing.source if existing else "",
    )
    with database.unit_of_work() as uow:  # read-only: the id a real run would commit now
        _, event_id = next_registration(uow, request.token_id, request.model.digest)
    event = build_event(request, preview, utcnow().isoformat().replace("+00:00", "Z"), event_id=event_id)
    result = _result_from_token(request, token, database, event_id=event.id, dry_run=True, event=event)
    result.events_delivered = {sink: False for sink in request.sinks}
    if existing is not None:
        result.notes.append(f"MLflow already holds these bytes as version {existing.version}: it would be reused.")
    if token.model_status == "registering":
        result.notes.append(f"Token is claimed by {token.claim_owner}; a real run would wait or fail with exit 3.")
    return result
