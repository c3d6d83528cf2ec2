"""One sink's lane in a relay pass: its leased rows delivered in key order, each cleared just before
it is sent, its lease renewed by a heartbeat while the sink works, and its outcome recorded at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hokusai_action.domain.event import CloudEventRecord
from hokusai_action.domain.sinks import EventSink
from hokusai_action.errors import EXIT_BAD_INPUT, HokusaiError, SinkDeliveryError
from hokusai_action.failpoints import failpoint
from hokusai_action.redact import redact

log = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 1000
SINK_DOWN_AFTER = 3  # transient failures in a row that make a sink count as down for the rest of a pass
LEASE_LOST = "the lease was lost"
BLOCKED_BY_EARLIER = "an earlier event of token {token} failed for this sink in this run; delivered after it"
SINK_DOWN_THIS_PASS = "sink {sink} failed several times in a row in this pass (or the lease was lost); tried next pass"
RELAY_STOPPING = "the relay was stopping; handed back for the next relay"
LOG_LEASE_NOT_RENEWED = "event %s: could not renew the lease on sink %s while sending (%s); trying again"
LOG_LEASE_LOST_SENDING = "event %s: the lease on sink %s was lost while sending; another relay may send it too"


@dataclass(frozen=True)
class LeasedRow:
    """A delivery row this relay holds the lease of, with its event."""

    event_id: str
    sink: str
    token_id: str
    attempts: int
    event: CloudEventRecord


@dataclass(frozen=True)
class Outcome:
    row: LeasedRow
    error: str | None = None
    retryable: bool = True
    blocked: bool = False  # not attempted: only the lease goes back


@dataclass(frozen=True)
class Lane:
    """What a sink's thread needs of its relay pass: clear a row for sending (None, or why it may not
    be sent), renew its lease every ``heartbeat_seconds`` while the sink sends it, record an outcome,
    and whether the pass is stopping. ``blocked`` holds the ``(sink, token)`` pairs whose earlier
    event is not through: their later events wait, so one token's events reach a sink in order."""

    clear: Callable[[LeasedRow], str | None]
    renew: Callable[[LeasedRow], bool]
    record: Callable[[Outcome], None]
    stopping: Callable[[], bool]
    blocked: set[tuple[str, str]]
    heartbeat_seconds: float


def deliver_in_order(sink: EventSink, rows: list[LeasedRow], lane: Lane) -> None:
    """Deliver ``rows`` in order, each cleared just before it is sent (the token still holds its
    registration; lease renewed, marked in flight), its lease renewed while the sink sends it, and
    its outcome recorded just after, so neither a slow page nor a slow receiver outlives a lease
    (another relay would then send the row too). After a few transient failures in a row the sink
    counts as down and is left alone for the rest of the pass, so a pass over a dead webhook costs a
    few timeouts, not one per row."""
    failures_in_a_row = 0
    for row in rows:
        token = (row.sink, row.token_id)
        if lane.stopping():  # not attempted: the lease goes back at once, for another relay
            lane.record(Outcome(row, error=RELAY_STOPPING, blocked=True))
            continue
        if token in lane.blocked:
            lane.record(Outcome(row, error=BLOCKED_BY_EARLIER.format(token=row.token_id), blocked=True))
            continue
        failpoint("before_send", sink.name)
        refusal = LEASE_LOST if failures_in_a_row >= SINK_DOWN_AFTER else lane.clear(row)
        if refusal == LEASE_LOST:  # not attempted: the lease goes back
            lane.record(Outcome(row, error=SINK_DOWN_THIS_PASS.format(sink=sink.name), blocked=True))
            continue
        if refusal is not None:  # withdrawn: cancelled, never sent
            continue
        with LeaseHeartbeat(lane, row):
            outcome = deliver_one(sink, row)
        if outcome.error is not None:
            lane.blocked.add(token)
        failures_in_a_row = failures_in_a_row + 1 if outcome.error is not None and outcome.retryable else 0
        lane.record(outcome)


def deliver_one(sink: EventSink, row: LeasedRow) -> Outcome:
    try:
        sink.deliver(row.event)
    except SinkDeliveryError as exc:
        return Outcome(row, error=error_text(exc.one_line()), retryable=exc.retryable)
    except HokusaiError as exc:  # a setting the sink found wrong is permanent; an outage is not
        return Outcome(row, error=error_text(exc.one_line()), retryable=exc.exit_code != EXIT_BAD_INPUT)
    except Exception as exc:  # a sink's own bug must not undo the other sinks' deliveries
        return Outcome(row, error=error_text(f"{type(exc).__name__}: {exc}"))
    failpoint("after_publish", sink.name)
    log.info("event %s delivered to %s", row.event_id, sink.name)
    return Outcome(row)


def error_text(text: str) -> str:
    return redact(text)[:MAX_ERROR_LENGTH]


class LeaseHeartbeat:
    """Renews one row's lease while the sink sends it, from a thread of its own: a sink's call cannot
    be interrupted to renew, and a receiver may take longer than the lease to answer."""

    def __init__(self, lane: Lane, row: LeasedRow) -> None:
        self._lane, self._row = lane, row
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{row.sink}", daemon=True)

    def __enter__(self) -> LeaseHeartbeat:
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
