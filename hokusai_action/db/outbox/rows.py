"""The outbox's rows: an event and its per-sink deliveries staged with the registration, read back
for ``token show`` and ``events``, re-queued, and cancelled when their token no longer holds the
registration.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from hokusai_action.db.outbox.statements import CANCEL_ANY, CANCEL_UNLESS_SENDING, REQUEUE
from hokusai_action.db.owner import owner_is_dead_here
from hokusai_action.db.schema import event_deliveries, events, tokens
from hokusai_action.db.store import Database, Token, UnitOfWork, as_utc, get_token, utcnow
from hokusai_action.domain.event import EVENT_TYPE, CloudEventRecord
from hokusai_action.domain.statuses import DEAD_LETTER, DELIVERED, PENDING
from hokusai_action.errors import TokenStateError

NOTIFY_CHANNEL = EVENT_TYPE
DATABASE_SINK = "database"  # its delivery is the events row itself
DELIVERY_TIMES = ("last_attempt_at", "delivered_at", "lease_until", "next_attempt_at", "cancelled_at", "sending_since")

# why a delivery was cancelled (``cancel_reason``): the token no longer holds its registration
CANCELLED_BY_RESET = "token {token} was reset to draft by `token reset`: its registration was withdrawn"
CANCELLED_WITHDRAWN = "token {token} no longer holds this registration ({state}): it was withdrawn"
DELIVERY_IN_FLIGHT = (
    "Token {token}'s event {event_id} is being sent to {sink} by a relay right now ({owner}, lease until {until})."
)
DELIVERY_IN_FLIGHT_HINT = (
    "It was not reset: a sent event cannot be called back. Run the reset again once that delivery has ended."
)

Letter = tuple[str, str, str]  # (event_id, sink, last error or reason)


def add_event(uow: UnitOfWork, event: CloudEventRecord, *, token_id: str, sinks: Iterable[str]) -> None:
    """Stage the event and its per-sink delivery rows in ``uow``'s transaction (no commit). On
    PostgreSQL also queue ``NOTIFY token_ready_for_deploy, '<event_id>'``, which the server sends
    only at commit."""
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
    rows = [_delivery_row(event.id, sink, now=now) for sink in dict.fromkeys(sinks)]  # ordered, unique
    if rows:
        uow.execute(event_deliveries.insert(), rows)
    if uow.dialect == "postgresql":
        uow.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, event.id)))


def _delivery_row(event_id: str, sink: str, *, now: dt.datetime) -> dict[str, Any]:
    # the database sink's delivery is the row itself: it is delivered by this very commit
    delivered = sink == DATABASE_SINK
    return {
        "event_id": event_id,
        "sink": sink,
        "status": DELIVERED if delivered else PENDING,
        "attempts": 1 if delivered else 0,
        "delivered_at": now if delivered else None,
        "last_attempt_at": now if delivered else None,
    }


def get_event(uow: UnitOfWork, event_id: str) -> CloudEventRecord | None:
    row = uow.execute(sa.select(events.c.payload).where(events.c.event_id == event_id)).first()
    return CloudEventRecord.from_structured(row.payload) if row else None


def event_exists(uow: UnitOfWork, event_id: str) -> bool:
    return uow.execute(sa.select(events.c.event_id).where(events.c.event_id == event_id)).first() is not None


def delivery_status(uow: UnitOfWork, event_id: str) -> dict[str, bool]:
    """``{sink: delivered}`` for one event."""
    rows = uow.execute(
        sa.select(event_deliveries.c.sink, event_deliveries.c.status).where(event_deliveries.c.event_id == event_id)
    ).all()
    return {row.sink: row.status == DELIVERED for row in rows}


def dead_letters(uow: UnitOfWork, event_id: str | None = None) -> list[Letter]:
    """``(event_id, sink, last_error)`` of every failed delivery (of one event, or all)."""
    query = (
        sa.select(event_deliveries.c.event_id, event_deliveries.c.sink, event_deliveries.c.last_error)
        .where(event_deliveries.c.status == DEAD_LETTER)
        .order_by(event_deliveries.c.event_id, event_deliveries.c.sink)
    )
    if event_id is not None:
        query = query.where(event_deliveries.c.event_id == event_id)
    return [(str(row.event_id), row.sink, row.last_error or "") for row in uow.execute(query)]


def delivery_rows(uow: UnitOfWork, event_id: str) -> list[dict[str, Any]]:
    """Every column of one event's delivery rows (status, attempts, last_error, lease, backoff)."""
    rows = uow.execute(
        sa.select(event_deliveries).where(event_deliveries.c.event_id == event_id).order_by(event_deliveries.c.sink)
    ).all()
    out = []
    for row in rows:
        item = dict(row._mapping)
        item["event_id"] = str(item["event_id"])
        for key in DELIVERY_TIMES:
            when = as_utc(item[key])
            item[key] = when.isoformat() if when else None
        out.append(item)
    return out


def requeue_failed(database: Database, *, event_id: str | None = None) -> tuple[list[Letter], list[Letter]]:
    """Put dead letters (of one event, or all) back to pending, due at once. A dead letter of a
    registration its token no longer holds is cancelled instead (it must never be sent). Returns
    ``(re-queued, cancelled)``: ``(event_id, sink, last_error)`` and ``(event_id, sink, reason)``."""
    requeued: list[Letter] = []
    with database.unit_of_work() as uow:
        found = dead_letters(uow, event_id)
        withdrawn = withdrawn_letters(uow, event_id) if found else {}
        for letter_id, sink, error in found:
            if letter_id in withdrawn:
                continue
            if uow.execute(REQUEUE, {"b_event_id": letter_id, "b_sink": sink}).rowcount == 1:
                requeued.append((letter_id, sink, error))
        cancelled = cancel_rows(uow, [(letter_id, sink) for letter_id, sink, _ in found], withdrawn)
        uow.commit()
    return requeued, cancelled


def holder_of(uow: UnitOfWork, event_id: str) -> tuple[str | None, Token | None]:
    """``(token_id, token)`` of an event's token (token None when it is gone; both None for no event)."""
    token_id = uow.execute(sa.select(events.c.token_id).where(events.c.event_id == event_id)).scalar()
    return token_id, (get_token(uow, token_id) if token_id else None)


def withdrawal_reason(token_id: str, token: Token | None, event_id: str) -> str | None:
    """Why the token no longer holds ``event_id``'s registration; None while it does."""
    holds = token.holds if token is not None else None
    if holds == event_id:
        return None
    if token is None:
        state = "the token is gone"
    elif holds is None:
        state = f"it is {token.model_status}"
    else:
        state = f"it now holds the registration of event {holds}"
    return CANCELLED_WITHDRAWN.format(token=token_id, state=state)


def withdrawn_letters(uow: UnitOfWork, event_id: str | None) -> dict[str, str]:
    """``{event_id: reason}`` of the dead letters (of one event, or all) whose registration their token
    no longer holds, read with their tokens in one query."""
    query = (
        sa.select(event_deliveries.c.event_id.label("letter"), events.c.token_id.label("of_token"), *tokens.c)
        .join(events, events.c.event_id == event_deliveries.c.event_id)
        .outerjoin(tokens, tokens.c.token_id == events.c.token_id)
        .where(event_deliveries.c.status == DEAD_LETTER)
    )
    if event_id is not None:
        query = query.where(event_deliveries.c.event_id == event_id)
    withdrawn = {}
    for row in uow.execute(query):
        token = Token.from_row(row) if row.token_id is not None else None
        reason = withdrawal_reason(row.of_token, token, str(row.letter))
        if reason is not None:
            withdrawn[str(row.letter)] = reason
    return withdrawn


def cancel_rows(uow: UnitOfWork, keys: Iterable[tuple[str, str]], reasons: Mapping[str, str]) -> list[Letter]:
    """Cancel the pending or failed rows of ``keys`` whose event has a reason, unless a relay is sending them."""
    now = utcnow()
    done = []
    for event_id, sink in keys:
        if event_id not in reasons:
            continue
        params = {"b_event_id": event_id, "b_sink": sink, "b_now": now, "b_reason": reasons[event_id]}
        if uow.execute(CANCEL_UNLESS_SENDING, params).rowcount == 1:
            done.append((event_id, sink, reasons[event_id]))
    return done


def cancel_undelivered(uow: UnitOfWork, token_id: str, *, reason: str) -> list[dict[str, Any]]:
    """Cancel every pending or failed delivery of ``token_id``'s events, in ``uow``'s transaction (no
    commit): the token no longer holds those registrations. Raises ``TokenStateError`` (and changes
    nothing, once the caller rolls back) while a relay is sending one of them: it cannot be called back.

    Call it after taking the token's row for the write (``store.reset_token``): a relay clears a row
    for sending only under a share lock of that row (PostgreSQL) or as SQLite's one writer, so no row
    becomes in flight between this read and the caller's commit."""
    now = utcnow()
    of_token = sa.select(events.c.event_id).where(events.c.token_id == token_id)
    rows = uow.execute(
        sa.select(event_deliveries)
        .where(event_deliveries.c.event_id.in_(of_token), event_deliveries.c.status.in_((PENDING, DEAD_LETTER)))
        .order_by(event_deliveries.c.event_id, event_deliveries.c.sink)
    ).all()
    for row in rows:
        _refuse_while_sending(row, token_id=token_id, now=now)
    cancelled = []
    for row in rows:
        params = {"b_event_id": row.event_id, "b_sink": row.sink, "b_now": now, "b_reason": reason}
        # a relay of a killed process may still hold the row: its lease is ours to end
        if uow.execute(CANCEL_ANY, params).rowcount == 1:
            cancelled.append(
                {
                    "event_id": str(row.event_id),
                    "sink": row.sink,
                    "previous_status": row.status,
                    "attempts": row.attempts,
                    "last_error": row.last_error,
                }
            )
    return cancelled


def _refuse_while_sending(row: Any, *, token_id: str, now: dt.datetime) -> None:
    """``TokenStateError`` when a live relay is sending ``row`` now (a dead one's lease is ours to end)."""
    lease_until = as_utc(row.lease_until)
    if row.sending_since is None or lease_until is None or lease_until < now:
        return
    if owner_is_dead_here(row.lease_owner):
        return
    raise TokenStateError(
        DELIVERY_IN_FLIGHT.format(
            token=token_id,
            event_id=row.event_id,
            sink=row.sink,
            owner=row.lease_owner,
            until=lease_until.isoformat(timespec="seconds"),
        ),
        hint=DELIVERY_IN_FLIGHT_HINT,
    )
