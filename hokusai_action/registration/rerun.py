"""Re-runs and dry runs. A token already registered with these bytes is a finished registration: a
re-run delivers what is still pending, moves the alias and reports what is registered. A dry run
contacts every service read-only and reports what a real run would do.
"""

from __future__ import annotations

from collections.abc import Mapping

from hokusai_action.db import outbox
from hokusai_action.db.store import Database, Token, utcnow
from hokusai_action.domain.sinks import EventSink
from hokusai_action.domain.statuses import REGISTERING
from hokusai_action.domain.versions import RegisteredVersion
from hokusai_action.registration.claim import check_token_state
from hokusai_action.registration.event import build_event, deliver_event, event_time, next_registration
from hokusai_action.registration.hashing import hashed
from hokusai_action.registration.parts import ProgressReporter, Registry
from hokusai_action.registration.request import MeasuredRequest, RegistrationRequest
from hokusai_action.registration.result import RegistrationResult, move_alias, registered_result, token_result


def rerun(
    request: RegistrationRequest,
    token: Token,
    *,
    registry: Registry,
    database: Database,
    sinks: Mapping[str, EventSink],
) -> RegistrationResult:
    """The token holds these bytes: deliver what is pending and move the alias (a dry run only reports)."""
    if request.dry_run:  # report only: no delivery, no alias move
        event_id = token.registered_event_id
        with database.unit_of_work() as uow:
            delivered = outbox.delivery_status(uow, event_id) if event_id else {}
        return registered_result(
            request,
            token,
            database,
            event_id=event_id,
            events_delivered=delivered,
            dry_run=True,
            already_registered=True,
        )
    result = _finish_registered(request, token, database, sinks)
    return move_alias(request, registry, result)


def finished_meanwhile(
    request: RegistrationRequest,
    token: Token,
    *,
    progress: ProgressReporter | None,
    registry: Registry,
    database: Database,
    sinks: Mapping[str, EventSink],
) -> RegistrationResult:
    """Another run registered the token between our look-up and our claim: if with these bytes, this
    is a re-run after all (hashed now: the digest decides); with others, exit 3."""
    request = hashed(request, progress)
    check_token_state(request, token, database)
    return move_alias(request, registry, _finish_registered(request, token, database, sinks))


def _finish_registered(
    request: RegistrationRequest, token: Token, database: Database, sinks: Mapping[str, EventSink]
) -> RegistrationResult:
    """The token is registered with these bytes: deliver whatever is still pending and report."""
    event_id = token.registered_event_id
    assert event_id is not None  # registered with these bytes: a digest is set
    delivered = deliver_event(database, sinks, event_id, lease_seconds=request.relay_lease)
    return registered_result(
        request, token, database, event_id=event_id, events_delivered=delivered, already_registered=True
    )


def dry_run(request: MeasuredRequest, token: Token, *, registry: Registry, database: Database) -> RegistrationResult:
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
    event = build_event(request, preview, event_time(utcnow()), event_id=event_id)
    result = token_result(
        request,
        token,
        gate=request.gate,
        metric_source=request.measured.source,
        metric_source_detail=request.measured.detail,
        event_id=event.id,
        events_delivered={sink: False for sink in request.sinks},
        dry_run=True,
        event=event,
    )
    if existing is not None:
        result.notes.append(f"MLflow already holds these bytes as version {existing.version}: it would be reused.")
    if token.model_status == REGISTERING:
        result.notes.append(f"Token is claimed by {token.claim_owner}; a real run would wait or fail with exit 3.")
    return result
