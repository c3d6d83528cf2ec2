"""A relay that follows (``events relay --follow``): what a pass would leave, when the next row comes
due, the wait between polling passes, and ``LISTEN`` for the NOTIFY a registration's commit sends.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from hokusai_action.db.outbox.relay import RelayReport, summarise
from hokusai_action.db.outbox.rows import DATABASE_SINK, NOTIFY_CHANNEL
from hokusai_action.db.schema import event_deliveries
from hokusai_action.db.store import Database, as_utc, utcnow
from hokusai_action.domain.sinks import EventSink
from hokusai_action.domain.statuses import PENDING
from hokusai_action.redact import redact

log = logging.getLogger(__name__)

# Polling (SQLite, or PostgreSQL while LISTEN is not possible): the first wait after a pass that
# delivered something is this short, and each idle pass doubles it up to the relay's --interval.
POLL_MIN_SECONDS = 0.1
LOG_LISTEN_FAILED = "cannot LISTEN on %s (%s); polling every --interval until it can"
LOG_LISTEN_LOST = "the LISTEN connection dropped (%s); passing over the events table and listening again"


def outstanding(database: Database, sinks: Mapping[str, EventSink], *, event_id: str | None = None) -> RelayReport:
    """What a pass would leave behind, counted without delivering: the rows of the configured sinks
    that are pending (waiting) and the dead letters; pending rows of other sinks as skipped."""
    report = RelayReport()
    summarise(database, report, configured={s for s in sinks if s != DATABASE_SINK}, event_id=event_id)
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
    times = [when for when in (as_utc(first_backoff), as_utc(first_lease)) if when is not None]
    if not times:
        return None
    return max(0.0, (min(times) - now).total_seconds())


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
            connection = pooled.driver_connection  # read before detaching: None once detached
            pooled.detach()  # ours for good: never handed back to the pool while it listens
            assert connection is not None, "a pooled connection that is not detached has its driver's"
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
