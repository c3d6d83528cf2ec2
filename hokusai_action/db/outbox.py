"""The transactional outbox for ``token_ready_for_deploy``.

``add_event`` writes the ``events`` row and one ``event_deliveries`` row per sink inside the caller's
transaction and never commits: the event exists if and only if the registration committed. On
PostgreSQL it also queues ``NOTIFY token_ready_for_deploy, '<event_id>'``, which the server sends
only at commit.

``deliver_pending`` hands pending rows to the sinks, one lease at a time:

- **Lease.** A relay takes a row with ONE conditional ``UPDATE`` (still pending, lease free or
  expired, backoff over) and checks the row count. PostgreSQL re-checks the ``WHERE`` after a
  concurrent writer commits and SQLite serialises writers, so on both exactly one relay holds a row.
  The lease is committed before the sink is called: no database transaction stays open while a slow
  webhook answers. A relay killed mid-delivery leaves a lease that expires; another relay takes it.
- **Clearance.** Right before a row is sent, one transaction checks that the token still holds the
  event's registration (registered or deployed, with this event), renews the lease and marks the row
  in flight (``sending_since``); a row of a registration the token no longer holds (it was reset) is
  ``cancelled`` with the reason instead, and never sent. The token's row is share-locked meanwhile
  (PostgreSQL; SQLite has one writer), so a reset either commits before it (and the row is cancelled) or
  finds the row in flight (and refuses: a sent event cannot be called back). While the sink works,
  a heartbeat renews the lease every quarter of it, so a receiver slower than the lease never lets it
  expire, and another relay never sends the row a second time.
- **Outcome.** Only the lease holder may record the outcome (``WHERE lease_owner = me``): delivered;
  ``failed`` (a dead letter) after a permanent failure (``SinkDeliveryError.retryable`` is False),
  kept with its redacted error until ``requeue_failed`` (``events retry``); or still pending after a
  transient failure, with ``next_attempt_at`` pushed back (exponential, capped, jittered).
- **Paging.** Rows are read in key order ``(events.timestamp, event_id, sink)`` and each page starts
  after the last key of the previous one (keyset), so a row is read at most once per run however
  many are skipped. Rows of sinks not configured in this run are never read one by one: they are
  counted once, per sink, for the report.
- **Order.** Each sink delivers its rows in key order, and while one event of a token is not through
  for a sink (it failed in this run, backs off, or another relay holds it), that token's later events
  for that sink wait: one token's events reach a sink in order (Pub/Sub's ordering keys rely on it).
  A dead letter does not hold its successors back. Delivering one named event (a re-run) sends it
  whatever waits before it.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import select
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from hokusai_action.db.owner import claim_owner_id, owner_is_dead_here
from hokusai_action.db.schema import event_deliveries, events, tokens
from hokusai_action.db.store import Database, Token, UnitOfWork, as_utc, get_token, utcnow
from hokusai_action.domain.event import EVENT_TYPE, CloudEventRecord
from hokusai_action.domain.sinks import EventSink
from hokusai_action.errors import EXIT_BAD_INPUT, HokusaiError, SinkDeliveryError, TokenStateError
from hokusai_action.failpoints import failpoint
from hokusai_action.redact import redact
from hokusai_action.settings.loader import DEFAULT_RELAY_LEASE

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = EVENT_TYPE
DATABASE_SINK = "database"
MAX_ERROR_LENGTH = 1000

PENDING, DELIVERED, FAILED, CANCELLED = "pending", "delivered", "failed", "cancelled"
# A live relay renews its lease every quarter of it, also while a send is in flight (the sinks'
# timeouts need no bound of their own), so a relay killed (SIGKILL) mid-delivery delays that row by
# at most this long (HOKUSAI_RELAY_LEASE). SIGTERM and Ctrl-C hand the leases back at once.
LEASE_SECONDS = DEFAULT_RELAY_LEASE
HEARTBEATS_PER_LEASE = 4
# Backoff between transient failures, across relay runs: base * 2**(attempts-1), capped, with
# "equal jitter" (half fixed, half random) so many relays do not retry in step.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 600.0
BATCH_SIZE = 200

LOG_LEASE_LOST = "event %s: the lease on sink %s expired during delivery and another relay took it over"
BLOCKED_BY_EARLIER = "an earlier event of token {token} failed for this sink in this run; delivered after it"
SINK_DOWN_THIS_PASS = "sink {sink} failed several times in a row in this pass (or the lease was lost); tried next pass"
RELAY_STOPPING = "the relay was stopping; handed back for the next relay"
SINK_DOWN_AFTER = 3  # transient failures in a row that make a sink count as down for the rest of a pass
LOG_LEASE_NOT_RENEWED = "event %s: could not renew the lease on sink %s while sending (%s); trying again"
LOG_LEASE_LOST_SENDING = "event %s: the lease on sink %s was lost while sending; another relay may send it too"

# why a delivery was cancelled (``cancel_reason``): the token no longer holds its registration
CANCELLED_BY_RESET = "token {token} was reset to draft by `token reset`: its registration was withdrawn"
CANCELLED_WITHDRAWN = "token {token} no longer holds this registration ({state}): it was withdrawn"
DELIVERY_IN_FLIGHT = (
    "Token {token}'s event {event_id} is being sent to {sink} by a relay right now ({owner}, lease until {until})."
)
DELIVERY_IN_FLIGHT_HINT = (
    "It was not reset: a sent event cannot be called back. Run the reset again once that delivery has ended."
)


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
                "status": DELIVERED if delivered else PENDING,
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


def event_exists(uow: UnitOfWork, event_id: str) -> bool:
    return uow.execute(sa.select(events.c.event_id).where(events.c.event_id == event_id)).first() is not None


def delivery_status(uow: UnitOfWork, event_id: str) -> dict[str, bool]:
    """``{sink: delivered}`` for one event."""
    rows = uow.execute(
        sa.select(event_deliveries.c.sink, event_deliveries.c.status).where(event_deliveries.c.event_id == event_id)
    ).all()
    return {row.sink: row.status == DELIVERED for row in rows}


def dead_letters(uow: UnitOfWork, event_id: str | None = None) -> list[tuple[str, str, str]]:
    """``(event_id, sink, last_error)`` of every failed delivery (of one event, or all)."""
    query = (
        sa.select(event_deliveries.c.event_id, event_deliveries.c.sink, event_deliveries.c.last_error)
        .where(event_deliveries.c.status == FAILED)
        .order_by(event_deliveries.c.event_id, event_deliveries.c.sink)
    )
    if event_id is not None:
        query = query.where(event_deliveries.c.event_id == event_id)
    return [(str(row.event_id), row.sink, row.last_error or "") for row in uow.execute(query)]


DELIVERY_TIMES = ("last_attempt_at", "delivered_at", "lease_until", "next_attempt_at", "cancelled_at", "sending_since")


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
            item[key] = as_utc(item[key]).isoformat() if item[key] else None
        out.append(item)
    return out


def requeue_failed(
    database: Database, *, event_id: str | None = None
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Put dead letters (of one event, or all) back to pending, due at once. A dead letter of a
    registration its token no longer holds is cancelled instead (it must never be sent). Returns
    ``(re-queued, cancelled)``: ``(event_id, sink, last_error)`` and ``(event_id, sink, reason)``."""
    requeued: list[tuple[str, str, str]] = []
    with database.unit_of_work() as uow:
        found = dead_letters(uow, event_id)
        withdrawn = _withdrawn_letters(uow, event_id) if found else {}
        for letter_id, sink, error in found:
            if letter_id in withdrawn:
                continue
            if uow.execute(REQUEUE, {"b_event_id": letter_id, "b_sink": sink}).rowcount == 1:
                requeued.append((letter_id, sink, error))
        cancelled = _cancel_rows(uow, [(letter_id, sink) for letter_id, sink, _ in found], withdrawn)
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


def _withdrawn_letters(uow: UnitOfWork, event_id: str | None) -> dict[str, str]:
    """``{event_id: reason}`` of the dead letters (of one event, or all) whose registration their token
    no longer holds, read with their tokens in one query."""
    query = (
        sa.select(event_deliveries.c.event_id.label("letter"), events.c.token_id.label("of_token"), *tokens.c)
        .join(events, events.c.event_id == event_deliveries.c.event_id)
        .outerjoin(tokens, tokens.c.token_id == events.c.token_id)
        .where(event_deliveries.c.status == FAILED)
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


def _cancel_rows(
    uow: UnitOfWork, keys: Iterable[tuple[str, str]], reasons: Mapping[str, str]
) -> list[tuple[str, str, str]]:
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
        .where(event_deliveries.c.event_id.in_(of_token), event_deliveries.c.status.in_((PENDING, FAILED)))
        .order_by(event_deliveries.c.event_id, event_deliveries.c.sink)
    ).all()
    for row in rows:
        lease_until = as_utc(row.lease_until)
        sending = row.sending_since is not None and lease_until is not None and lease_until >= now
        if sending and not owner_is_dead_here(row.lease_owner):
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


# ------------------------------------------------------------------------------------ the relay


@dataclass
class RelayReport:
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (event_id, sink)
    retrying: list[tuple[str, str, str]] = field(default_factory=list)  # transient failure: (id, sink, error)
    dead_letters: list[tuple[str, str, str]] = field(default_factory=list)  # every failed row in scope
    cancelled: list[tuple[str, str, str]] = field(default_factory=list)  # withdrawn, never sent: (id, sink, why)
    waiting: int = 0  # pending rows of configured sinks left for later: leased elsewhere, or backing off
    skipped: dict[str, int] = field(default_factory=dict)  # sink not configured here -> pending rows
    next_due: tuple[str, str, float] | None = None  # the backoff that ends first: (id, sink, seconds from now)

    def then(self, later: RelayReport) -> RelayReport:
        """This pass followed by ``later``: what both moved; what is left as ``later`` found it."""
        return replace(later, delivered=self.delivered + later.delivered, cancelled=self.cancelled + later.cancelled)

    @property
    def pending(self) -> int:
        """Deliveries in scope that are not delivered after this run (dead letters included)."""
        return len(self.retrying) + len(self.dead_letters) + self.waiting + sum(self.skipped.values())


@dataclass(frozen=True)
class _Row:
    event_id: str
    sink: str
    token_id: str
    attempts: int
    event: CloudEventRecord


@dataclass(frozen=True)
class _Outcome:
    row: _Row
    error: str | None = None
    retryable: bool = True
    blocked: bool = False  # not attempted: an earlier event of the token failed for this sink


def relay_owner_id() -> str:
    """Who holds a lease, in the claim owner's form (host, pid, start time, PID namespace, boot): a
    relay killed outright is provably dead to a re-run on the same machine and namespace, which then
    takes its leases at once; anyone else waits for the lease to expire."""
    return claim_owner_id()


def deliver_pending(
    database: Database,
    sinks: Mapping[str, EventSink],
    *,
    event_id: str | None = None,
    batch_size: int = BATCH_SIZE,
    lease_seconds: float = LEASE_SECONDS,
    owner: str | None = None,
    stop: Callable[[], bool] | None = None,
) -> RelayReport:
    """Deliver pending rows (of one event, or all) to the configured sinks; record each outcome.

    With ``event_id`` (a registration delivering its own event, or a re-run) the row is tried at once
    even while it backs off; the relay over all events honours ``next_attempt_at``. Leases are honoured
    either way. Once ``stop()`` is true (a stopping ``--follow`` relay), each sink finishes the
    delivery in hand and hands the rest of its leases back; no further page is read.
    """
    owner = owner or relay_owner_id()
    halt = threading.Event()  # set when the pass is interrupted: the sinks' threads stop too

    def stopping() -> bool:
        return halt.is_set() or (stop is not None and stop())

    report = RelayReport()
    configured = sorted(sink for sink in sinks if sink != DATABASE_SINK)
    blocked: set[tuple[str, str]] = set()  # (sink, token) whose earlier event is not delivered yet
    dead_owners = _DeadOwners()

    def renew(row: _Row) -> bool:
        until = utcnow() + dt.timedelta(seconds=lease_seconds)
        params = {"b_event_id": row.event_id, "b_sink": row.sink, "b_owner": owner, "b_until": until}
        with database.unit_of_work() as uow:
            kept = uow.execute(RENEW, params).rowcount == 1
            uow.commit()
        return kept

    def clear(row: _Row) -> str | None:
        """None when ``row`` may be sent now (lease renewed, marked in flight); else why it may not."""
        now = utcnow()
        params = {"b_event_id": row.event_id, "b_sink": row.sink, "b_owner": owner, "b_now": now}
        with database.unit_of_work() as uow:
            reason = withdrawal_reason(row.token_id, get_token(uow, row.token_id, share_lock=True), row.event_id)
            if reason is None:
                params["b_until"] = now + dt.timedelta(seconds=lease_seconds)
                cleared = uow.execute(CLEAR_TO_SEND, params).rowcount == 1
                uow.commit()
                return None if cleared else LEASE_LOST
            params["b_reason"] = reason
            cancelled = uow.execute(CANCEL_MINE, params).rowcount == 1
            uow.commit()
        if cancelled:
            log.warning("event %s to %s cancelled: %s", row.event_id, row.sink, reason)
            report.cancelled.append((row.event_id, row.sink, reason))
        return reason

    lane = _Lane(clear=clear, renew=renew, heartbeat_seconds=lease_seconds / HEARTBEATS_PER_LEASE)

    def finish(outcome: _Outcome) -> None:
        _record(database, [outcome], owner=owner, report=report)

    after: tuple[dt.datetime, str, str] | None = None
    while configured and not stopping():
        now = utcnow()
        with database.unit_of_work() as uow:
            page = uow.execute(_page_query(configured, event_id=event_id, after=after).limit(batch_size)).all()
        if not page:
            break
        last = page[-1]
        after = (last.timestamp, str(last.event_id), last.sink)
        ready = []
        for row in page:
            token = (row.sink, row.token_id)
            if token in blocked:
                continue  # an earlier event of this token has not gone through: keep the order
            if not _free(row, now=now, honour_backoff=event_id is None, dead_owners=dead_owners):
                blocked.add(token)
                continue
            ready.append(row)
        leased = _take_leases(
            database,
            ready,
            owner=owner,
            now=now,
            lease_seconds=lease_seconds,
            honour_backoff=event_id is None,
            dead_owners=dead_owners,
        )
        taken = {(row.event_id, row.sink) for row in leased}
        blocked.update((row.sink, row.token_id) for row in ready if (str(row.event_id), row.sink) not in taken)
        per_sink: dict[str, list[_Row]] = {}
        for row in leased:
            per_sink.setdefault(row.sink, []).append(row)
        # sinks deliver side by side (a registration waits for the slowest, not the sum); each sink
        # keeps its rows in key order, so one token's events arrive in order
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(per_sink))) as pool:
                work = [
                    pool.submit(_deliver_all, sinks[sink], rows, blocked, lane, finish, stopping)
                    for sink, rows in per_sink.items()
                ]
                try:
                    for done in work:
                        done.result()
                except BaseException:
                    halt.set()  # the threads finish the delivery in hand, then stop (the pool waits)
                    raise
        except BaseException:  # SIGTERM (SystemExit), Ctrl-C: hand the leases back for the re-run
            _release_quietly(database, leased, owner=owner)
            raise
        if len(page) < batch_size:
            break
    _withdraw_dead_letters(database, report, event_id=event_id)
    _summarise(database, report, configured=set(configured), event_id=event_id)
    return report


def _withdraw_dead_letters(database: Database, report: RelayReport, *, event_id: str | None) -> None:
    """Cancel the dead letters (in scope) of registrations their tokens no longer hold (a reset that
    did not cancel them: the site's own), so they are not reported as waiting for `events retry`."""
    with database.unit_of_work() as uow:
        found = dead_letters(uow, event_id)
        if not found:
            return
        withdrawn = _withdrawn_letters(uow, event_id)
        report.cancelled += _cancel_rows(uow, [(letter[0], letter[1]) for letter in found], withdrawn)
        uow.commit()


def _page_query(configured: list[str], *, event_id: str | None, after: tuple | None) -> sa.Select:
    key = (events.c.timestamp, event_deliveries.c.event_id, event_deliveries.c.sink)
    query = (
        sa.select(
            event_deliveries.c.event_id,
            event_deliveries.c.sink,
            event_deliveries.c.attempts,
            event_deliveries.c.lease_owner,
            event_deliveries.c.lease_until,
            event_deliveries.c.next_attempt_at,
            events.c.token_id,
            events.c.timestamp,
            events.c.payload,
        )
        .join(events, events.c.event_id == event_deliveries.c.event_id)
        .where(event_deliveries.c.status == PENDING, event_deliveries.c.sink.in_(configured))
        .order_by(*key)
    )
    if event_id is not None:
        query = query.where(event_deliveries.c.event_id == event_id)
    if after is not None:
        bounds = (sa.literal(value, type_=column.type) for column, value in zip(key, after, strict=True))
        query = query.where(sa.tuple_(*key) > sa.tuple_(*bounds))
    return query


class _DeadOwners:
    """``owner_is_dead_here`` once per lease owner a relay meets (it reads /proc)."""

    def __init__(self) -> None:
        self._known: dict[str, bool] = {}

    def __call__(self, owner: str | None) -> bool:
        if not owner:
            return False
        if owner not in self._known:
            self._known[owner] = owner_is_dead_here(owner)
        return self._known[owner]


def _free(row: Any, *, now: dt.datetime, honour_backoff: bool, dead_owners: _DeadOwners) -> bool:
    """Whether ``row`` (as read) may be leased now: no live lease (or one whose holder is provably
    dead) and, if honoured, its backoff is over."""
    lease_until = as_utc(row.lease_until)
    next_attempt_at = as_utc(row.next_attempt_at)
    if lease_until is not None and lease_until >= now and not dead_owners(row.lease_owner):
        return False
    return not (honour_backoff and next_attempt_at is not None and next_attempt_at > now)


# The per-row statements are built once: the relay runs them thousands of times, and building a
# SQLAlchemy statement costs more than executing it. Parameters are prefixed "b_" (an UPDATE reserves
# the column names for its SET clause).
_KEY = sa.and_(
    event_deliveries.c.event_id == sa.bindparam("b_event_id"),
    event_deliveries.c.sink == sa.bindparam("b_sink"),
    event_deliveries.c.status == PENDING,
)
_LEASE_FREE = sa.or_(event_deliveries.c.lease_until.is_(None), event_deliveries.c.lease_until < sa.bindparam("b_now"))
_DUE = sa.or_(event_deliveries.c.next_attempt_at.is_(None), event_deliveries.c.next_attempt_at <= sa.bindparam("b_now"))
# a lease taken from a killed relay drops its in-flight mark: this relay has not sent it yet
_TAKE = {"lease_owner": sa.bindparam("b_owner"), "lease_until": sa.bindparam("b_until"), "sending_since": None}
# the WHERE repeats the page's conditions: another relay may have taken or finished the row since it
# was read (PostgreSQL re-checks them after that relay's commit; SQLite serialises the writers)
LEASE = event_deliveries.update().where(_KEY, _LEASE_FREE).values(**_TAKE)
LEASE_IF_DUE = event_deliveries.update().where(_KEY, _LEASE_FREE, _DUE).values(**_TAKE)
# a lease whose holder is provably dead (killed on this machine and PID namespace) is taken at once,
# only if that holder still has it
_HELD_BY_DEAD = event_deliveries.c.lease_owner == sa.bindparam("b_stale")
TAKE_OVER = event_deliveries.update().where(_KEY, _HELD_BY_DEAD).values(**_TAKE)
TAKE_OVER_IF_DUE = event_deliveries.update().where(_KEY, _HELD_BY_DEAD, _DUE).values(**_TAKE)
_MINE = sa.and_(_KEY, event_deliveries.c.lease_owner == sa.bindparam("b_owner"))
RELEASE = event_deliveries.update().where(_MINE).values(lease_owner=None, lease_until=None, sending_since=None)
RENEW = event_deliveries.update().where(_MINE).values(lease_until=sa.bindparam("b_until"))
CLEAR_TO_SEND = (
    event_deliveries.update()
    .where(_MINE)
    .values(lease_until=sa.bindparam("b_until"), sending_since=sa.bindparam("b_now"))
)
_CANCEL = {
    "status": CANCELLED,
    "cancel_reason": sa.bindparam("b_reason"),
    "cancelled_at": sa.bindparam("b_now"),
    "lease_owner": None,
    "lease_until": None,
    "sending_since": None,
    "next_attempt_at": None,
}
CANCEL_MINE = event_deliveries.update().where(_MINE).values(**_CANCEL)
_ROW = sa.and_(
    event_deliveries.c.event_id == sa.bindparam("b_event_id"),
    event_deliveries.c.sink == sa.bindparam("b_sink"),
    event_deliveries.c.status.in_((PENDING, FAILED)),
)
CANCEL_ANY = event_deliveries.update().where(_ROW).values(**_CANCEL)
_NOT_SENDING = sa.or_(
    event_deliveries.c.sending_since.is_(None),
    event_deliveries.c.lease_until.is_(None),
    event_deliveries.c.lease_until < sa.bindparam("b_now"),
)
CANCEL_UNLESS_SENDING = event_deliveries.update().where(_ROW, _NOT_SENDING).values(**_CANCEL)
REQUEUE = (
    event_deliveries.update()
    .where(
        event_deliveries.c.event_id == sa.bindparam("b_event_id"),
        event_deliveries.c.sink == sa.bindparam("b_sink"),
        event_deliveries.c.status == FAILED,
    )
    .values(status=PENDING, next_attempt_at=None, lease_owner=None, lease_until=None, sending_since=None)
)
FINISH = (
    event_deliveries.update()
    .where(_MINE)
    .values(
        lease_owner=None,
        lease_until=None,
        sending_since=None,
        attempts=event_deliveries.c.attempts + 1,
        last_attempt_at=sa.bindparam("b_now"),
        last_error=sa.bindparam("b_error"),
        status=sa.bindparam("b_status"),
        delivered_at=sa.bindparam("b_delivered_at"),
        next_attempt_at=sa.bindparam("b_next_attempt_at"),
    )
)


def _take_leases(
    database: Database,
    page: list[Any],
    *,
    owner: str,
    now: dt.datetime,
    lease_seconds: float,
    honour_backoff: bool,
    dead_owners: _DeadOwners,
) -> list[_Row]:
    """Lease each row of ``page`` with one conditional UPDATE; keep those whose row count is 1."""
    until = now + dt.timedelta(seconds=lease_seconds)
    taken: list[_Row] = []
    with database.unit_of_work() as uow:
        for row in page:
            params = {"b_event_id": row.event_id, "b_sink": row.sink, "b_now": now, "b_owner": owner, "b_until": until}
            lease_until = as_utc(row.lease_until)
            if lease_until is not None and lease_until >= now and dead_owners(row.lease_owner):
                statement = TAKE_OVER_IF_DUE if honour_backoff else TAKE_OVER
                params["b_stale"] = row.lease_owner
                log.warning("took over the delivery of %s to %s from a dead relay", row.event_id, row.sink)
            else:
                statement = LEASE_IF_DUE if honour_backoff else LEASE
            if uow.execute(statement, params).rowcount == 1:
                event = CloudEventRecord.from_structured(row.payload)
                taken.append(_Row(str(row.event_id), row.sink, row.token_id, row.attempts, event))
        uow.commit()
    return taken


def _release_quietly(database: Database, rows: list[_Row], *, owner: str) -> None:
    try:
        with database.unit_of_work() as uow:
            for row in rows:
                uow.execute(RELEASE, {"b_event_id": row.event_id, "b_sink": row.sink, "b_owner": owner})
            uow.commit()
    except Exception:  # the leases then expire on their own
        log.debug("could not release delivery leases", exc_info=True)


LEASE_LOST = "the lease was lost"


@dataclass(frozen=True)
class _Lane:
    """What a sink's thread needs of its relay: clear a row for sending (or learn why not), and renew
    its lease every ``heartbeat_seconds`` while the sink sends it."""

    clear: Callable[[_Row], str | None]
    renew: Callable[[_Row], bool]
    heartbeat_seconds: float


class _LeaseHeartbeat:
    """Renews one row's lease while the sink sends it, from a thread of its own: a sink's call cannot
    be interrupted to renew, and a receiver may take longer than the lease to answer."""

    def __init__(self, lane: _Lane, row: _Row) -> None:
        self._lane, self._row = lane, row
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{row.sink}", daemon=True)

    def __enter__(self) -> _LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        row = self._row
        while not self._stopped.wait(self._lane.heartbeat_seconds):
            try:
                kept = self._lane.renew(row)
            except Exception as exc:  # a database blip: the next beat tries again, within the lease
                log.warning(LOG_LEASE_NOT_RENEWED, row.event_id, row.sink, redact(type(exc).__name__))
                continue
            if not kept:
                log.warning(LOG_LEASE_LOST_SENDING, row.event_id, row.sink)
                return


def _deliver_all(
    sink: EventSink,
    rows: list[_Row],
    blocked: set[tuple[str, str]],
    lane: _Lane,
    finish: Callable[[_Outcome], None],
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Deliver ``rows`` in order, each cleared just before it is sent (the token still holds its
    registration; lease renewed, marked in flight), its lease renewed while the sink sends it, and
    its outcome recorded just after, so neither a slow page nor a slow receiver outlives a lease
    (another relay would then send the row too). After a few transient failures in a row the sink
    counts as down and is left alone for the rest of the pass, so a pass over a dead webhook costs a
    few timeouts, not one per row."""
    failures_in_a_row = 0
    for row in rows:
        token = (row.sink, row.token_id)
        if stopping():  # not attempted: the lease goes back at once, for another relay
            finish(_Outcome(row, error=RELAY_STOPPING, blocked=True))
            continue
        if token in blocked:
            finish(_Outcome(row, error=BLOCKED_BY_EARLIER.format(token=row.token_id), blocked=True))
            continue
        failpoint("before_send", sink.name)
        refusal = LEASE_LOST if failures_in_a_row >= SINK_DOWN_AFTER else lane.clear(row)
        if refusal == LEASE_LOST:  # not attempted: the lease goes back
            finish(_Outcome(row, error=SINK_DOWN_THIS_PASS.format(sink=sink.name), blocked=True))
            continue
        if refusal is not None:  # withdrawn: cancelled, never sent
            continue
        with _LeaseHeartbeat(lane, row):
            outcome = _deliver_one(sink, row)
        if outcome.error is not None:
            blocked.add(token)
        failures_in_a_row = failures_in_a_row + 1 if outcome.error is not None and outcome.retryable else 0
        finish(outcome)


def _deliver_one(sink: EventSink, row: _Row) -> _Outcome:
    try:
        sink.deliver(row.event)
    except SinkDeliveryError as exc:
        return _Outcome(row, error=_error_text(exc.one_line()), retryable=exc.retryable)
    except HokusaiError as exc:  # a setting the sink found wrong is permanent; an outage is not
        return _Outcome(row, error=_error_text(exc.one_line()), retryable=exc.exit_code != EXIT_BAD_INPUT)
    except Exception as exc:  # a sink's own bug must not undo the other sinks' deliveries
        return _Outcome(row, error=_error_text(f"{type(exc).__name__}: {exc}"))
    failpoint("after_publish", sink.name)
    log.info("event %s delivered to %s", row.event_id, sink.name)
    return _Outcome(row)


def _error_text(text: str) -> str:
    return redact(text)[:MAX_ERROR_LENGTH]


def backoff_seconds(attempts: int, *, rng: random.Random | None = None) -> float:
    """Delay before the next try after ``attempts`` failed ones: exponential, capped, equal jitter."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** min(max(attempts - 1, 0), 30))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)  # jitter, not a secret


def _record(database: Database, outcomes: list[_Outcome], *, owner: str, report: RelayReport) -> None:
    """Write each outcome, only where this relay still holds the lease."""
    if not outcomes:
        return
    failpoint("before_mark_delivered")
    now = utcnow()
    with database.unit_of_work() as uow:
        for outcome in outcomes:
            row = outcome.row
            params: dict[str, Any] = {"b_event_id": row.event_id, "b_sink": row.sink, "b_owner": owner}
            if outcome.blocked:  # not attempted: only the lease is given back
                result = uow.execute(RELEASE, params)
            else:
                params.update(b_now=now, b_error=outcome.error, b_delivered_at=None, b_next_attempt_at=None)
                if outcome.error is None:
                    params.update(b_status=DELIVERED, b_delivered_at=now)
                elif not outcome.retryable:
                    params.update(b_status=FAILED)
                else:
                    delay = dt.timedelta(seconds=backoff_seconds(row.attempts + 1))
                    params.update(b_status=PENDING, b_next_attempt_at=now + delay)
                result = uow.execute(FINISH, params)
            if result.rowcount != 1:
                log.warning(LOG_LEASE_LOST, row.event_id, row.sink)
            if outcome.error is None:
                report.delivered.append((row.event_id, row.sink))  # it was delivered, whoever records it
            elif outcome.retryable or outcome.blocked:
                report.retrying.append((row.event_id, row.sink, outcome.error))
        uow.commit()


def _summarise(database: Database, report: RelayReport, *, configured: set[str], event_id: str | None) -> None:
    """Count what is left, per sink, in one query; list the dead letters."""
    query = (
        sa.select(event_deliveries.c.sink, sa.func.count())
        .where(event_deliveries.c.status == PENDING)
        .group_by(event_deliveries.c.sink)
    )
    if event_id is not None:
        query = query.where(event_deliveries.c.event_id == event_id)
    with database.unit_of_work() as uow:
        counts = {sink: count for sink, count in uow.execute(query)}
        report.dead_letters = dead_letters(uow, event_id)
        report.next_due = _next_backoff(uow, configured, event_id=event_id)
    retried_here = len(report.retrying)
    for sink, count in sorted(counts.items()):
        if sink in configured:
            report.waiting += count
        else:
            report.skipped[sink] = count
    report.waiting = max(0, report.waiting - retried_here)


def _next_backoff(uow: UnitOfWork, configured: set[str], *, event_id: str | None) -> tuple[str, str, float] | None:
    """The pending row of a configured sink whose backoff ends first: (event id, sink, seconds left)."""
    if not configured:
        return None
    now = utcnow()
    rows = event_deliveries.c
    query = (
        sa.select(rows.event_id, rows.sink, rows.next_attempt_at)
        .where(rows.status == PENDING, rows.sink.in_(sorted(configured)), rows.next_attempt_at > now)
        .order_by(rows.next_attempt_at)
        .limit(1)
    )
    if event_id is not None:
        query = query.where(rows.event_id == event_id)
    first = uow.execute(query).first()
    if first is None:
        return None
    return str(first.event_id), first.sink, max(0.0, (as_utc(first.next_attempt_at) - now).total_seconds())


# ------------------------------------------------------------------------------ a relay that follows

# Polling (SQLite, or PostgreSQL while LISTEN is not possible): the first wait after a pass that
# delivered something is this short, and each idle pass doubles it up to the relay's --interval.
POLL_MIN_SECONDS = 0.1
LOG_LISTEN_FAILED = "cannot LISTEN on %s (%s); polling every --interval until it can"
LOG_LISTEN_LOST = "the LISTEN connection dropped (%s); passing over the events table and listening again"


def outstanding(database: Database, sinks: Mapping[str, EventSink], *, event_id: str | None = None) -> RelayReport:
    """What a pass would leave behind, counted without delivering: the rows of the configured sinks
    that are pending (waiting) and the dead letters; pending rows of other sinks as skipped."""
    report = RelayReport()
    _summarise(database, report, configured={s for s in sinks if s != DATABASE_SINK}, event_id=event_id)
    return report


def seconds_until_due(
    database: Database, sinks: Mapping[str, EventSink], *, event_id: str | None = None
) -> float | None:
    """Seconds until the earliest pending row of a configured sink comes off its backoff or its
    lease expires (None when no such time lies ahead): a following relay wakes no later than that,
    since no NOTIFY announces it."""
    configured = [sink for sink in sinks if sink != DATABASE_SINK]
    if not configured:
        return None
    now = utcnow()
    rows = event_deliveries.c
    scope = [rows.status == PENDING, rows.sink.in_(configured)]
    if event_id is not None:
        scope.append(rows.event_id == event_id)
    with database.unit_of_work() as uow:
        backoff = uow.execute(sa.select(sa.func.min(rows.next_attempt_at)).where(*scope, rows.next_attempt_at > now))
        first_backoff = backoff.scalar()
        lease = uow.execute(sa.select(sa.func.min(rows.lease_until)).where(*scope, rows.lease_until > now))
        first_lease = lease.scalar()
    times = [as_utc(value) for value in (first_backoff, first_lease) if value is not None]
    if not times:
        return None
    return max(0.0, (min(times) - now).total_seconds())  # type: ignore[type-var]


class IdleBackoff:
    """The wait between polling passes: ``POLL_MIN_SECONDS`` after a pass that moved something,
    doubled after each idle one, never above ``cap`` (the relay's --interval)."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.floor = min(POLL_MIN_SECONDS, cap)
        self._delay = self.floor

    def after_pass(self, *, active: bool) -> float:
        self._delay = self.floor if active else min(self.cap, self._delay * 2)
        return self._delay


class Notifications:
    """``LISTEN token_ready_for_deploy`` on a connection of its own, outside the pool (PostgreSQL).

    A registration's commit sends ``NOTIFY token_ready_for_deploy, '<event_id>'`` (``add_event``), so
    a following relay wakes at once instead of at its next poll. A NOTIFY reaches only those
    listening when it is sent: the relay therefore passes over the events table (the truth) right
    after each LISTEN starts and at least every --interval, and a notification only wakes it early.
    On SQLite there is nothing to listen to: ``wait`` sleeps until its timeout or the wake-up fd.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._connection: Any = None  # the psycopg2 connection, in autocommit, while listening

    @property
    def supported(self) -> bool:
        return self._database.dialect == "postgresql"

    @property
    def listening(self) -> bool:
        return self._connection is not None

    def start(self) -> bool:
        """LISTEN (again) if possible; False (and the relay polls) when the server cannot be reached."""
        if not self.supported or self.listening:
            return self.listening
        try:
            pooled = self._database.engine.raw_connection()
            connection = pooled.driver_connection  # (None once detached)
            pooled.detach()  # ours for good: never handed back to the pool while it listens
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except Exception as exc:  # a database outage: poll, and try again before the next pass
            log.warning(LOG_LISTEN_FAILED, NOTIFY_CHANNEL, redact(type(exc).__name__))
            return False
        self._connection = connection
        return True

    def wait(self, timeout: float, *, wake_fd: int | None = None) -> bool:
        """Wait up to ``timeout`` seconds; True when notifications arrived (all drained) or the
        listening connection dropped (the caller passes over the table and listens again)."""
        if self._connection is not None and self._drain():
            return True
        waited_on: list[Any] = [fd for fd in (wake_fd,) if fd is not None]
        if self._connection is not None:
            waited_on.append(self._connection)
        if not waited_on:
            time.sleep(max(0.0, timeout))
            return False
        try:
            ready, _, _ = select.select(waited_on, [], [], max(0.0, timeout))
        except (OSError, ValueError) as exc:  # the connection's socket is already closed
            self._lost(exc)
            return True
        if self._connection is not None and self._connection in ready:
            return self._drain()
        return False

    def _drain(self) -> bool:
        try:
            self._connection.poll()
        except Exception as exc:  # psycopg2.OperationalError: the server or the network went away
            self._lost(exc)
            return True
        arrived = bool(self._connection.notifies)
        self._connection.notifies.clear()
        return arrived

    def _lost(self, exc: BaseException) -> None:
        log.warning(LOG_LISTEN_LOST, redact(type(exc).__name__))
        self.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # already gone
                log.debug("closing the LISTEN connection failed", exc_info=True)
