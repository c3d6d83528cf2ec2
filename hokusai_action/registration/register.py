"""The registration: one function handed its parts (registry, database, sinks, a signer); it builds no
client. It reads as its phases:

    look up the token, hashing the model first where the digest decides the path (``hashing``)
    -> a re-run of these bytes: deliver what is pending, report; or a dry run: report (``rerun``)
    -> claim the token: draft -> registering, one winner, kept alive by a heartbeat (``claim``)
    -> upload + register in MLflow (idempotent: a version of these bytes is reused)
    -> sign the model and the statement, with --sign (``statement``)
    -> one DB transaction: token -> registered + the event row (the outbox, ``event``)
    -> announce: deliver the event to each sink, mark it delivered -> report (``result``)

Nothing is claimed, uploaded or written before every input is valid and the gate has passed
(``request.build_request``); a failure before the commit gives the claim back.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hokusai_action import __version__
from hokusai_action.db import outbox
from hokusai_action.db.store import Database, Token, UnitOfWork, count_events, get_token, utcnow
from hokusai_action.digest.background import BackgroundHash
from hokusai_action.domain.event import CloudEventRecord
from hokusai_action.domain.metrics import enforce_gate, evaluate_gate
from hokusai_action.domain.sinks import EventSink
from hokusai_action.domain.statuses import DONE_STATUSES, DRAFT, REGISTERED, REGISTERING
from hokusai_action.domain.tags import (
    TAG_BASELINE,
    TAG_DIGEST,
    TAG_GIT_REF,
    TAG_GIT_REPOSITORY,
    TAG_GIT_SHA,
    TAG_GREATER_IS_BETTER,
    TAG_METRIC,
    TAG_METRIC_VALUE,
    TAG_TOKEN,
    TAG_TOOL_VERSION,
)
from hokusai_action.domain.versions import RegisteredVersion
from hokusai_action.errors import HokusaiError
from hokusai_action.failpoints import failpoint
from hokusai_action.progress import TaskStats
from hokusai_action.registration.claim import Claim, check_token_state
from hokusai_action.registration.event import build_event, deliver_event, event_time, next_registration
from hokusai_action.registration.hashing import EarlyHash
from hokusai_action.registration.parts import ProgressReporter, Registry, ShownTask
from hokusai_action.registration.request import MeasuredRequest, RegistrationRequest
from hokusai_action.registration.rerun import dry_run, finished_meanwhile, rerun
from hokusai_action.registration.result import RegistrationResult, move_alias
from hokusai_action.registration.statement import sign_registration

if TYPE_CHECKING:
    from hokusai_action.signing.signer import ModelSigner

log = logging.getLogger(__name__)


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
    """Register ``request`` exactly once, phase by phase (the module docstring).

    The model's bytes are read once: where the digest decides the path (the token is registered, was
    registered before a reset, or a killed run left it registering; or a dry run looks the version up)
    they are hashed first, and a version of these bytes is found before anything is sent; on a first
    registration they are hashed while they upload, and the digest comes back with the version.
    ``prefetched`` is the hash of ``request.model`` the command started before its imports.
    """
    request, token = _look_up(request, database=database, signer=signer, progress=progress, prefetched=prefetched)
    if token.model_status in DONE_STATUSES:  # these very bytes (the look-up checked): a re-run
        return rerun(request, token, registry=registry, database=database, sinks=sinks)
    measured = _gate(request, registry)
    if measured.dry_run:
        return dry_run(measured, token, registry=registry, database=database)
    with Claim(database, measured) as claim:
        if claim.finished_by_another:
            return finished_meanwhile(
                measured, claim.token, progress=progress, registry=registry, database=database, sinks=sinks
            )
        registration = _upload(measured, registry=registry, database=database, progress=progress)
        registration = _sign(registration, signer=signer, registry=registry)
        event = _commit(registration, claim)
    delivered = _announce(registration, event, database=database, sinks=sinks)
    return _report(registration, delivered=delivered, registry=registry)


@dataclass(frozen=True)
class _Registration:
    """What this run registers, phase by phase: the request with the digest of the bytes uploaded, the
    MLflow version, what the upload counted, when, the registration's number and event id, and (once
    signed) the event's ``data.signature``."""

    request: MeasuredRequest
    version: RegisteredVersion
    uploaded: TaskStats | None
    registered_at: dt.datetime
    number: int
    event_id: str
    signature: dict[str, str] | None = None


def _look_up(
    request: RegistrationRequest,
    *,
    database: Database,
    signer: ModelSigner | None,
    progress: ProgressReporter | None,
    prefetched: BackgroundHash | None,
) -> tuple[RegistrationRequest, Token]:
    """The token, checked for this request (exit 3 if it may not go on), and the request with its model
    hashed where the digest decides the path. The hash runs beside the database's first round trips,
    and is cancelled when the upload will hash instead."""
    with EarlyHash(request.model, progress=progress, prefetched=prefetched) as early:
        database.require_schema()
        if signer is not None:
            signer.check()  # the key, certificate or identity: exit 2 before anything changes
        with database.unit_of_work() as uow:
            token = get_token(uow, request.token_id)
            hash_first = token is not None and (request.dry_run or _may_exist(uow, token))
        if hash_first:
            request = replace(request, model=early.result())
    return request, check_token_state(request, token, database)


def _may_exist(uow: UnitOfWork, token: Token) -> bool:
    """Whether a version of these bytes may exist already, so the digest decides before any upload: the
    token is registered, a killed run left it ``registering``, or it was reset to draft after a
    registration (its events stay, and the version they name too). Only a first registration streams."""
    if token.model_status in (*DONE_STATUSES, REGISTERING):
        return True
    if token.model_status != DRAFT:
        return False  # refused by its state: nothing to hash for
    return bool(token.artifact_digest) or token.registration_count > 0 or count_events(uow, token.token_id) > 0


def _gate(request: RegistrationRequest, registry: Registry) -> MeasuredRequest:
    """A first registration (or its dry run) needs its measured value and MLflow reachable (a bounded
    wait: nothing is claimed while MLflow is down); with --compare-to the model must also beat the
    version holding that alias (read-only)."""
    if not isinstance(request, MeasuredRequest):  # not a re-run: a registration needs its measured value
        raise request.missing.error
    registry.check_reachable()
    if not request.compare_to:
        return request
    gate = request.gate
    champion = registry.champion(request.model_name, request.compare_to, gate.metric)
    gate = evaluate_gate(gate.metric, gate.value, gate.baseline, margin=gate.margin, champion=champion)
    enforce_gate(gate, measured=request.measured)
    return replace(request, gate=gate)


def _upload(
    request: MeasuredRequest, *, registry: Registry, database: Database, progress: ProgressReporter | None
) -> _Registration:
    """Upload the model and register its version (MLflow reuses a version of these bytes), hashing the
    bytes as they go; then number the registration, which names the folder of its signature bundles."""
    with ShownTask(progress, "uploaded", model=request.model) as shown:
        version = registry.upload_and_register(
            request.model,
            model_name=request.model_name,
            token_id=request.token_id,
            tags=_tags(request),
            params=_params(request),
            metric_name=request.gate.metric.name,
            metric_value=request.gate.value,
            progress=shown.task,
        )
    if not request.model.hashed:  # hashed by the upload
        assert version.artifact_digest, "the registry returns the digest of what it uploaded"
        request = replace(request, model=replace(request.model, digest=version.artifact_digest))
    registered_at = utcnow()
    with database.unit_of_work() as uow:
        number, event_id = next_registration(uow, request.token_id, request.model.digest)
    return _Registration(request, version, shown.stats, registered_at, number, event_id)


def _sign(registration: _Registration, *, signer: ModelSigner | None, registry: Registry) -> _Registration:
    """Signed after the upload (the statement names the version), before the commit; keyless: exit 4."""
    signature = sign_registration(
        registration.request,
        registration.version,
        registration.registered_at,
        signer=signer,
        registry=registry,
        event_id=registration.event_id,
    )
    return replace(registration, signature=signature)


def _commit(registration: _Registration, claim: Claim) -> CloudEventRecord:
    """One transaction ends the claim: the token -> registered with what was registered, and the event
    row with a pending delivery per sink (the outbox)."""
    request, version, signature = registration.request, registration.version, registration.signature
    registered_at = registration.registered_at
    event = build_event(
        request, version, event_time(registered_at), event_id=registration.event_id, signature=signature
    )
    with claim.last_transaction() as uow:
        claim.mark_registered(
            uow,
            {
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
                "registration_count": registration.number + 1,
                **{f"signature_{key}": value for key, value in (signature or {}).items()},
            },
        )
        outbox.add_event(uow, event, token_id=request.token_id, sinks=request.sinks)
        failpoint("before_commit")
        uow.commit()
    return event


def _announce(
    registration: _Registration, event: CloudEventRecord, *, database: Database, sinks: Mapping[str, EventSink]
) -> dict[str, bool]:
    """Deliver the committed event to each sink; each sink's delivery state."""
    failpoint("after_commit")
    request = registration.request
    log.info("token %s registered as %s", request.token_id, registration.version.model_uri)
    try:
        return deliver_event(database, sinks, event.id, lease_seconds=request.relay_lease)
    except HokusaiError as exc:  # committed: a failed delivery leaves the event pending (exit 5), not exit 4
        log.warning("event %s not delivered: %s", event.id, exc.one_line())
        return {sink: sink == "database" for sink in request.sinks}


def _report(registration: _Registration, *, delivered: dict[str, bool], registry: Registry) -> RegistrationResult:
    """The registration's result, after pointing --set-alias at its version."""
    request, version = registration.request, registration.version
    result = RegistrationResult(
        token_id=request.token_id,
        status=REGISTERED,
        gate=request.gate,
        artifact_digest=request.model.digest,
        model_name=version.model_name,
        mlflow_run_id=version.run_id,
        model_version=version.version,
        model_uri=version.model_uri,
        event_id=registration.event_id,
        events_delivered=delivered,
        metric_source=request.measured.source,
        metric_source_detail=request.measured.detail,
        signature=registration.signature,
        upload=registration.uploaded,
    )
    return move_alias(request, registry, result)


def _tags(request: MeasuredRequest) -> dict[str, str]:
    """What the version (and its run and logged model) is tagged with: the registration's provenance."""
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


def _params(request: MeasuredRequest) -> dict[str, str]:
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
