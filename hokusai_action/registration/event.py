"""The registration's ``token_ready_for_deploy`` event: its id, numbered by the token's registrations,
the CloudEvent it commits with the token, and its delivery to the sinks through the outbox.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from hokusai_action.db import outbox
from hokusai_action.db.store import Database, UnitOfWork, get_token
from hokusai_action.domain.event import CloudEventRecord, event_id_for
from hokusai_action.domain.sinks import EventSink
from hokusai_action.domain.versions import RegisteredVersion
from hokusai_action.registration.request import MeasuredRequest
from hokusai_action.settings.table import DEFAULT_RELAY_LEASE


def event_time(moment: dt.datetime) -> str:
    """``moment`` (UTC) as the event and the signed statement write it: RFC 3339 with ``Z``."""
    return moment.isoformat().replace("+00:00", "Z")


def build_event(
    request: MeasuredRequest,
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


def deliver_event(
    database: Database, sinks: Mapping[str, EventSink], event_id: str, *, lease_seconds: float = DEFAULT_RELAY_LEASE
) -> dict[str, bool]:
    """Deliver what is pending of ``event_id`` to ``sinks``; each sink's delivery state afterwards."""
    outbox.deliver_pending(database, sinks, event_id=event_id, lease_seconds=lease_seconds)
    with database.unit_of_work() as uow:
        return outbox.delivery_status(uow, event_id)
