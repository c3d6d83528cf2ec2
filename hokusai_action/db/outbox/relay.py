"""The relay: ``deliver_pending`` hands pending delivery rows to the sinks, one lease at a time, and
records each outcome; ``summarise`` counts what is left. The rules it keeps are the package's
(``hokusai_action.db.outbox``): lease, clearance, outcome, paging, order.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from hokusai_action.db.outbox.lane import LEASE_LOST, Lane, LeasedRow, Outcome, deliver_in_order
from hokusai_action.db.outbox.rows import (
    DATABASE_SINK,
    Letter,
    cancel_rows,
    dead_letters,
    withdrawal_reason,
    withdrawn_letters,
)
from hokusai_action.db.outbox.statements import (
    CANCEL_MINE,
    CLEAR_TO_SEND,
    FINISH,
    LEASE,
    LEASE_IF_DUE,
    RELEASE,
    RENEW,
    TAKE_OVER,
    TAKE_OVER_IF_DUE,
)
from hokusai_action.db.owner import claim_owner_id, owner_is_dead_here
from hokusai_action.db.schema import event_deliveries, events
from hokusai_action.db.store import Database, UnitOfWork, as_utc, get_token, utcnow
from hokusai_action.domain.event import CloudEventRecord
from hokusai_action.domain.sinks import EventSink
from hokusai_action.domain.statuses import DEAD_LETTER, DELIVERED, PENDING
from hokusai_action.failpoints import failpoint
from hokusai_action.settings.table import DEFAULT_RELAY_LEASE

log = logging.getLogger(__name__)

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

PageKey = tuple[dt.datetime, str, str]  # (events.timestamp, event_id, sink): the order rows are read in


@dataclass
class RelayReport:
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (event_id, sink)
    retrying: list[Letter] = field(default_factory=list)  # transient failure: (id, sink, error)
    dead_letters: list[Letter] = field(default_factory=list)  # every failed row in scope
    cancelled: list[Letter] = field(default_factory=list)  # withdrawn, never sent: (id, sink, why)
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

    A lease is held in the claim owner's form (``claim_owner_id``): a relay killed outright is then
    provably dead to a relay on the same machine and PID namespace, which takes its leases at once.
    """
    relay = _RelayPass(
        database, sinks, event_id=event_id, lease_seconds=lease_seconds, owner=owner or claim_owner_id(), stop=stop
    )
    after: PageKey | None = None
    while relay.configured and not relay.stopping():
        now = utcnow()
        page = relay.read_page(after=after, limit=batch_size)
        if not page:
            break
        last = page[-1]
        after = (last.timestamp, str(last.event_id), last.sink)
        relay.deliver(relay.lease(page, now=now))
        if len(page) < batch_size:
            break
    relay.withdraw_dead_letters()
    summarise(database, relay.report, configured=set(relay.configured), event_id=event_id)
    return relay.report


class _RelayPass:
    """One ``deliver_pending`` pass: its steps, and what its sinks' threads share with it."""

    def __init__(
        self,
        database: Database,
        sinks: Mapping[str, EventSink],
        *,
        event_id: str | None,
        lease_seconds: float,
        owner: str,
        stop: Callable[[], bool] | None,
    ) -> None:
        self.database, self.sinks, self.event_id, self.owner = database, sinks, event_id, owner
        self.lease_seconds = lease_seconds
        # a named event is tried at once; the relay over all events waits out each row's backoff
        self.honour_backoff = event_id is None
        self.configured = sorted(sink for sink in sinks if sink != DATABASE_SINK)
        self.report = RelayReport()
        self._stop = stop
        self._halt = threading.Event()  # set when the pass is interrupted: the sinks' threads stop too
        self._dead_owners = _DeadOwners()
        self.lane = Lane(
            clear=self.clear,
            renew=self.renew,
            record=self.record,
            stopping=self.stopping,
            blocked=set(),  # (sink, token) whose earlier event is not delivered yet
            heartbeat_seconds=lease_seconds / HEARTBEATS_PER_LEASE,
        )

    def stopping(self) -> bool:
        return self._halt.is_set() or (self._stop is not None and self._stop())

    def read_page(self, *, after: PageKey | None, limit: int) -> list[Any]:
        with self.database.unit_of_work() as uow:
            return list(uow.execute(_page_query(self.configured, event_id=self.event_id, after=after).limit(limit)))

    def lease(self, page: list[Any], *, now: dt.datetime) -> list[LeasedRow]:
        """Lease the rows of ``page`` that may go now. A row of a token whose earlier event is not
        through for that sink (blocked, leased elsewhere, backing off, or lost to another relay)
        waits, and blocks that token's later rows in turn: one token's events go in order."""
        blocked = self.lane.blocked
        ready = []
        for row in page:
            token = (row.sink, row.token_id)
            if token in blocked:
                continue
            if not _free(row, now=now, honour_backoff=self.honour_backoff, dead_owners=self._dead_owners):
                blocked.add(token)
                continue
            ready.append(row)
        leased = _take_leases(
            self.database,
            ready,
            owner=self.owner,
            now=now,
            lease_seconds=self.lease_seconds,
            honour_backoff=self.honour_backoff,
            dead_owners=self._dead_owners,
        )
        taken = {(row.event_id, row.sink) for row in leased}
        blocked.update((row.sink, row.token_id) for row in ready if (str(row.event_id), row.sink) not in taken)
        return leased

    def deliver(self, leased: list[LeasedRow]) -> None:
        """Sinks deliver side by side (a registration waits for the slowest, not the sum); each keeps
        its rows in key order. An interruption (SIGTERM as SystemExit, Ctrl-C) lets each sink finish
        the delivery in hand, then hands the leases back for the next relay."""
        per_sink: dict[str, list[LeasedRow]] = {}
        for row in leased:
            per_sink.setdefault(row.sink, []).append(row)
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(per_sink))) as pool:
                work = [
                    pool.submit(deliver_in_order, self.sinks[sink], rows, self.lane) for sink, rows in per_sink.items()
                ]
                try:
                    for done in work:
                        done.result()
                except BaseException:
                    self._halt.set()  # the threads finish the delivery in hand, then stop (the pool waits)
                    raise
        except BaseException:
            _release_quietly(self.database, leased, owner=self.owner)
            raise

    def renew(self, row: LeasedRow) -> bool:
        until = utcnow() + dt.timedelta(seconds=self.lease_seconds)
        params = {"b_event_id": row.event_id, "b_sink": row.sink, "b_owner": self.owner, "b_until": until}
        with self.database.unit_of_work() as uow:
            kept: bool = uow.execute(RENEW, params).rowcount == 1
            uow.commit()
        return kept

    def clear(self, row: LeasedRow) -> str | None:
        """None when ``row`` may be sent now (lease renewed, marked in flight); else why it may not
        (its token no longer holds the registration: the row is cancelled; or the lease was lost)."""
        now = utcnow()
        params: dict[str, Any] = {"b_event_id": row.event_id, "b_sink": row.sink, "b_owner": self.owner, "b_now": now}
        with self.database.unit_of_work() as uow:
            reason = withdrawal_reason(row.token_id, get_token(uow, row.token_id, share_lock=True), row.event_id)
            if reason is None:
                params["b_until"] = now + dt.timedelta(seconds=self.lease_seconds)
                cleared = uow.execute(CLEAR_TO_SEND, params).rowcount == 1
                uow.commit()
                return None if cleared else LEASE_LOST
            params["b_reason"] = reason
            cancelled = uow.execute(CANCEL_MINE, params).rowcount == 1
            uow.commit()
        if cancelled:
            log.warning("event %s to %s cancelled: %s", row.event_id, row.sink, reason)
            self.report.cancelled.append((row.event_id, row.sink, reason))
        return reason

    def record(self, outcome: Outcome) -> None:
        """Write the outcome, only where this relay still holds the lease."""
        failpoint("before_mark_delivered")
        row = outcome.row
        params: dict[str, Any] = {"b_event_id": row.event_id, "b_sink": row.sink, "b_owner": self.owner}
        now = utcnow()
        with self.database.unit_of_work() as uow:
            if outcome.blocked:  # not attempted: only the lease is given back
                result = uow.execute(RELEASE, params)
            else:
                result = uow.execute(FINISH, {**params, **_finish_values(outcome, now=now)})
            if result.rowcount != 1:
                log.warning(LOG_LEASE_LOST, row.event_id, row.sink)
            if outcome.error is None:
                self.report.delivered.append((row.event_id, row.sink))  # it was delivered, whoever records it
            elif outcome.retryable or outcome.blocked:
                self.report.retrying.append((row.event_id, row.sink, outcome.error))
            uow.commit()

    def withdraw_dead_letters(self) -> None:
        """Cancel the dead letters (in scope) of registrations their tokens no longer hold (a reset that
        did not cancel them: the site's own), so they are not reported as waiting for `events retry`."""
        with self.database.unit_of_work() as uow:
            found = dead_letters(uow, self.event_id)
            if not found:
                return
            withdrawn = withdrawn_letters(uow, self.event_id)
            self.report.cancelled += cancel_rows(uow, [(letter[0], letter[1]) for letter in found], withdrawn)
            uow.commit()


def _finish_values(outcome: Outcome, *, now: dt.datetime) -> dict[str, Any]:
    """``FINISH``'s values for an attempted delivery: delivered; a dead letter after a permanent
    failure; or still pending after a transient one, due again after ``backoff_seconds``."""
    values: dict[str, Any] = {"b_now": now, "b_error": outcome.error, "b_delivered_at": None, "b_next_attempt_at": None}
    if outcome.error is None:
        values.update(b_status=DELIVERED, b_delivered_at=now)
    elif not outcome.retryable:
        values.update(b_status=DEAD_LETTER)
    else:
        delay = dt.timedelta(seconds=backoff_seconds(outcome.row.attempts + 1))
        values.update(b_status=PENDING, b_next_attempt_at=now + delay)
    return values


def backoff_seconds(attempts: int, *, rng: random.Random | None = None) -> float:
    """Delay before the next try after ``attempts`` failed ones: exponential, capped, equal jitter."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** min(max(attempts - 1, 0), 30))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)  # jitter, not a secret


def _page_query(configured: list[str], *, event_id: str | None, after: PageKey | None) -> sa.Select[Any]:
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


def _take_leases(
    database: Database,
    page: list[Any],
    *,
    owner: str,
    now: dt.datetime,
    lease_seconds: float,
    honour_backoff: bool,
    dead_owners: _DeadOwners,
) -> list[LeasedRow]:
    """Lease each row of ``page`` with one conditional UPDATE; keep those whose row count is 1."""
    until = now + dt.timedelta(seconds=lease_seconds)
    taken: list[LeasedRow] = []
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
                taken.append(LeasedRow(str(row.event_id), row.sink, row.token_id, row.attempts, event))
        uow.commit()
    return taken


def _release_quietly(database: Database, rows: list[LeasedRow], *, owner: str) -> None:
    try:
        with database.unit_of_work() as uow:
            for row in rows:
                uow.execute(RELEASE, {"b_event_id": row.event_id, "b_sink": row.sink, "b_owner": owner})
            uow.commit()
    except Exception:  # the leases then expire on their own
        log.debug("could not release delivery leases", exc_info=True)


def summarise(database: Database, report: RelayReport, *, configured: set[str], event_id: str | None) -> None:
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
    due = as_utc(first.next_attempt_at)
    assert due is not None  # the query's ``next_attempt_at > now``
    return str(first.event_id), first.sink, max(0.0, (due - now).total_seconds())
