"""The transactional outbox for ``token_ready_for_deploy``.

``add_event`` writes the ``events`` row and one ``event_deliveries`` row per sink inside the caller's
transaction and never commits: the event exists if and only if the registration committed. On
PostgreSQL it also queues ``NOTIFY token_ready_for_deploy, '<event_id>'``, which the server sends
only at commit. ``deliver_pending`` later hands pending rows to the sinks and marks them delivered;
with ``FOR UPDATE SKIP LOCKED`` two relays never take the same row at once on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from hokusai_action.db.schema import event_deliveries, events
from hokusai_action.db.store import Database, UnitOfWork, as_utc, utcnow
from hokusai_action.errors import HokusaiError, SinkDeliveryError
from hokusai_action.events import EventSink
from hokusai_action.events.model import EVENT_TYPE, CloudEventRecord
from hokusai_action.failpoints import failpoint
from hokusai_action.redact import redact

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = EVENT_TYPE
DATABASE_SINK = "database"
SINK_NOT_CONFIGURED = "sink '{sink}' is not configured in this run"
MAX_ERROR_LENGTH = 1000


def add_event(uow: UnitOfWork, event: CloudEventRecord, *, token_id: str, sinks: Iterable[str]) -> None:
    """Stage the event and its per-sink delivery rows in ``uow``'s transaction (no commit)."""
    now = utcnow()
    uow.execute(
        events.insert().values(
            event_id=event.id,
            event_type=event.type,
            source=event.source,
            timestamp=now,
            payload=event.structured(),
            processed=False,
            token_id=token_id,
        )
    )
    rows = []
    for sink in dict.fromkeys(sinks):  # ordered, unique
        # the database sink's delivery is the row itself: it is delivered by this very commit
        delivered = sink == DATABASE_SINK
        rows.append(
            {
                "event_id": event.id,
                "sink": sink,
                "status": "delivered" if delivered else "pending",
                "attempts": 1 if delivered else 0,
                "delivered_at": now if delivered else None,
                "last_attempt_at": now if delivered else None,
            }
        )
    if rows:
        uow.execute(event_deliveries.insert(), rows)
    if uow.dialect == "postgresql":
        uow.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, event.id)))


def get_event(uow: UnitOfWork, event_id: str) -> CloudEventRecord | None:
    row = uow.execute(sa.select(events.c.payload).where(events.c.event_id == event_id)).first()
    return CloudEventRecord.from_structured(row.payload) if row else None


def delivery_status(uow: UnitOfWork, event_id: str) -> dict[str, bool]:
    """``{sink: delivered}`` for one event."""
    rows = uow.execute(
        sa.select(event_deliveries.c.sink, event_deliveries.c.status).where(event_deliveries.c.event_id == event_id)
    ).all()
    return {row.sink: row.status == "delivered" for row in rows}


def delivery_rows(uow: UnitOfWork, event_id: str) -> list[dict[str, Any]]:
    rows = uow.execute(
        sa.select(event_deliveries).where(event_deliveries.c.event_id == event_id).order_by(event_deliveries.c.sink)
    ).all()
    out = []
    for row in rows:
        item = dict(row._mapping)
        for key in ("last_attempt_at", "delivered_at"):
            item[key] = as_utc(item[key]).isoformat() if item[key] else None
        out.append(item)
    return out


@dataclass
class RelayReport:
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (event_id, sink)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (event_id, sink, error)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # sink not configured here

    @property
    def pending(self) -> int:
        return len(self.failed) + len(self.skipped)


def deliver_pending(
    database: Database,
    sinks: Mapping[str, EventSink],
    *,
    event_id: str | None = None,
    batch_size: int = 100,
) -> RelayReport:
    """Deliver pending rows (of one event, or all) to the configured sinks; mark what succeeded.

    Each pending row is taken under a row lock (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) held while
    its sink delivers, so a concurrent relay skips it instead of sending it twice.
    """
    report = RelayReport()
    seen: set[tuple[str, str]] = set()
    while True:
        with database.unit_of_work() as uow:
            query = (
                sa.select(event_deliveries.c.event_id, event_deliveries.c.sink, events.c.payload)
                .join(events, events.c.event_id == event_deliveries.c.event_id)
                .where(event_deliveries.c.status == "pending")
                .order_by(events.c.timestamp, event_deliveries.c.event_id, event_deliveries.c.sink)
                .limit(batch_size)
            )
            if event_id is not None:
                query = query.where(event_deliveries.c.event_id == event_id)
            if seen:
                query = query.where(sa.tuple_(event_deliveries.c.event_id, event_deliveries.c.sink).not_in(list(seen)))
            if uow.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=event_deliveries)
            rows = uow.execute(query).all()
            if not rows:
                return report
            per_sink: dict[str, list[tuple[tuple[str, str], CloudEventRecord]]] = {}
            for row in rows:
                key = (str(row.event_id), row.sink)
                seen.add(key)
                if row.sink not in sinks:
                    report.skipped.append(key)
                    continue
                per_sink.setdefault(row.sink, []).append((key, CloudEventRecord.from_structured(row.payload)))
            # sinks deliver side by side (a registration waits for the slowest, not the sum); each
            # sink keeps its rows in order, which Pub/Sub's ordering keys rely on
            with ThreadPoolExecutor(max_workers=max(1, len(per_sink))) as pool:
                outcomes = pool.map(lambda item: _deliver_all(sinks[item[0]], item[1]), per_sink.items())
                for results in list(outcomes):
                    for key, error in results:
                        _record_attempt(uow, key, error)
                        if error is None:
                            report.delivered.append(key)
                        else:
                            report.failed.append((*key, error))
            failpoint("before_mark_delivered")
            uow.commit()


def _deliver_all(
    sink: EventSink, items: list[tuple[tuple[str, str], CloudEventRecord]]
) -> list[tuple[tuple[str, str], str | None]]:
    return [(key, _deliver_one(sink, event)) for key, event in items]


def _deliver_one(sink: EventSink, event: CloudEventRecord) -> str | None:
    try:
        sink.deliver(event)
    except SinkDeliveryError as exc:
        return redact(exc.one_line())[:MAX_ERROR_LENGTH]
    except HokusaiError as exc:
        return redact(exc.one_line())[:MAX_ERROR_LENGTH]
    except Exception as exc:  # a sink's own bug must not undo the other sinks' deliveries
        return redact(f"{type(exc).__name__}: {exc}")[:MAX_ERROR_LENGTH]
    failpoint("after_publish", sink.name)
    log.info("event %s delivered to %s", event.id, sink.name)
    return None


def _record_attempt(uow: UnitOfWork, key: tuple[str, str], error: str | None) -> None:
    now = utcnow()
    values: dict[str, Any] = {
        "attempts": event_deliveries.c.attempts + 1,
        "last_attempt_at": now,
        "last_error": error,
    }
    if error is None:
        values.update(status="delivered", delivered_at=now)
    uow.execute(
        event_deliveries.update()
        .where(event_deliveries.c.event_id == key[0], event_deliveries.c.sink == key[1])
        .values(**values)
    )
