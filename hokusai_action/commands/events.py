"""`events relay` (once, or following), and `events retry`: deliver the outbox's pending events to
the sinks, and put dead letters back to pending."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hokusai_action.commands.wiring import event_sinks, open_site_database, site_database
from hokusai_action.db import outbox
from hokusai_action.db.outbox import RelayReport
from hokusai_action.db.store import Database, UnitOfWork
from hokusai_action.domain.sinks import EventSink
from hokusai_action.domain.statuses import CANCELLED, DEAD_LETTER
from hokusai_action.errors import EXIT_EVENTS_PENDING, EXIT_OK, HokusaiError, InputError, TokenStateError
from hokusai_action.settings.loader import Settings

RETRY_COMMAND = "hokusai-ml-platform events retry {event_id}"
DEAD_LETTER_LINE = "dead letter {event_id} -> {sink}: {error} Fix the cause, then run `{retry}`."
SKIPPED_SINK = (
    "sink '{sink}' is not configured in this run: {count} pending deliveries left for a relay that "
    "configures it (HOKUSAI_EVENT_SINKS)"
)
EVENT_NOT_FOUND = "Event {event_id} does not exist in the Hokusai database at {url}."
EVENT_NOT_FOUND_HINT = "Check the id: `hokusai-ml-platform token show SYMBOL` prints a token's event id."
BAD_EVENT_ID = "Event id {event_id!r} is not a UUID."
RETRY_NEEDS_ONE = "Give either an EVENT_ID or --all-failed (not both, not neither)."
RETRY_NOTHING = "Event {event_id} has no dead-lettered delivery; nothing was re-queued."
RETRY_WITHDRAWN = "Event {event_id} was withdrawn: {why}."
RETRY_WITHDRAWN_HINT = (
    "A withdrawn registration's event is never sent again, and nothing was changed. "
    "Register the token again: that sends a new event."
)


def _event_id_argument(event_id: str) -> str:
    try:
        return str(uuid.UUID(event_id.strip()))
    except (ValueError, AttributeError):
        raise InputError(BAD_EVENT_ID.format(event_id=event_id), hint=EVENT_NOT_FOUND_HINT) from None


# A one-shot relay waits for backoffs that end within this many seconds (a registration whose sink was
# down leaves its delivery backing off for about a second, and the operator who fixed the sink runs
# the relay at once); a longer one is reported with when it ends and how to send it now (--event-id).
ONE_SHOT_BACKOFF_WAIT = 10.0


def run_events_relay(settings: Settings, *, event_id: str | None = None) -> tuple[dict[str, Any], int]:
    """Deliver what is pending; exit 5 while anything in scope is undelivered (dead letters included).

    Without --event-id backoffs are honoured, but those ending within ``ONE_SHOT_BACKOFF_WAIT`` seconds
    are waited out, as long as no delivery of this run failed (the sink is still down then)."""
    if event_id is not None:
        event_id = _event_id_argument(event_id)
    with site_database(settings) as database, event_sinks(settings) as sinks:
        database.require_schema()
        deadline = time.monotonic() + ONE_SHOT_BACKOFF_WAIT
        report = outbox.deliver_pending(database, sinks, event_id=event_id, lease_seconds=settings.relay_lease)
        while event_id is None and not report.retrying and report.next_due is not None:
            wait = report.next_due[2]
            if time.monotonic() + wait > deadline:
                break
            time.sleep(wait)
            later = outbox.deliver_pending(database, sinks, lease_seconds=settings.relay_lease)
            report = report.then(later)
    return relay_summary(report), (EXIT_EVENTS_PENDING if report.pending else EXIT_OK)


def relay_summary(report: RelayReport) -> dict[str, Any]:
    """A relay pass's report as the `events relay` JSON object."""
    return {
        "delivered": [{"event_id": e, "sink": s} for e, s in report.delivered],
        "failed": [
            {"event_id": e, "sink": s, "error": err, "retry": RETRY_COMMAND.format(event_id=e)}
            for e, s, err in report.dead_letters
        ],
        "pending": [{"event_id": e, "sink": s, "error": err} for e, s, err in report.retrying],
        "waiting": report.waiting,
        "next_due": (
            {"event_id": report.next_due[0], "sink": report.next_due[1], "in_seconds": round(report.next_due[2], 1)}
            if report.next_due
            else None
        ),
        "cancelled": [{"event_id": e, "sink": s, "reason": why} for e, s, why in report.cancelled],
        "skipped": [
            {"sink": s, "count": n, "reason": SKIPPED_SINK.format(sink=s, count=n)} for s, n in report.skipped.items()
        ],
    }


class StopRequest:
    """Set by SIGTERM/SIGINT in a following relay: the flag stops the pass between deliveries, and a
    byte written to a pipe wakes the relay's wait at once (a signal handler may only do that much)."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self.signal: int | None = None

    def request(self, signum: int | None = None) -> None:
        self.signal = signum
        self._flag.set()
        with contextlib.suppress(OSError):  # the pipe is full: it is readable already
            os.write(self._write, b"!")

    def __call__(self) -> bool:
        return self._flag.is_set()

    @property
    def wake_fd(self) -> int:
        return self._read


def run_events_follow(
    settings: Settings,
    *,
    interval: float,
    stop: StopRequest,
    on_pass: Callable[[dict[str, Any]], None],
    on_error: Callable[[HokusaiError, float], None],
    max_seconds: float | None = None,
    event_id: str | None = None,
) -> int:
    """`events relay --follow`: pass over the pending deliveries, wait, repeat, until ``stop`` is set
    (exit 0) or ``max_seconds`` have passed (exit 0, or 5 when what a pass would leave is not empty).

    The wait ends early on a NOTIFY (PostgreSQL, ``outbox.Notifications``), and otherwise lasts
    --interval while listening, or a polling backoff that starts short after activity and grows to
    --interval (SQLite); never past the moment a backed-off row falls due. A pass that cannot reach
    the database is reported and retried after --interval: an outage ends a pass, not the relay.
    """
    if event_id is not None:
        event_id = _event_id_argument(event_id)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    with (
        site_database(settings) as database,
        event_sinks(settings) as sinks,
        contextlib.closing(outbox.Notifications(database)) as notifications,
    ):
        relay = _FollowingRelay(
            database=database,
            sinks=sinks,
            notifications=notifications,
            lease_seconds=settings.relay_lease,
            event_id=event_id,
            stop=stop,
            interval=interval,
            on_pass=on_pass,
            on_error=on_error,
        )
        while not stop():
            notifications.start()  # before the pass: whatever commits after it wakes the wait
            delay = relay.one_pass()
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                delay = min(delay, left)
            if stop():
                break
            notifications.wait(delay, wake_fd=stop.wake_fd)
        if stop():
            return EXIT_OK  # stopped on request: what is left waits for the next relay
        outstanding = outbox.outstanding(database, sinks, event_id=event_id)
        return EXIT_EVENTS_PENDING if outstanding.pending else EXIT_OK


@dataclass
class _FollowingRelay:
    """The passes of a following relay, and what it reported last (a pass that changed nothing is not
    reported again)."""

    database: Database
    sinks: dict[str, EventSink]
    notifications: outbox.Notifications
    lease_seconds: float
    event_id: str | None
    stop: StopRequest
    interval: float
    on_pass: Callable[[dict[str, Any]], None]
    on_error: Callable[[HokusaiError, float], None]
    previous: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.backoff = outbox.IdleBackoff(self.interval)

    def one_pass(self) -> float:
        """Deliver what is pending, and report it if that moved something; the seconds to wait before
        the next pass."""
        try:
            self.database.require_schema()
            report = outbox.deliver_pending(
                self.database, self.sinks, event_id=self.event_id, stop=self.stop, lease_seconds=self.lease_seconds
            )
            listening = self.notifications.listening
            delay = self.interval if listening else self.backoff.after_pass(active=bool(report.delivered))
            due = outbox.seconds_until_due(self.database, self.sinks, event_id=self.event_id)
        except HokusaiError as exc:
            self.on_error(exc, self.interval)
            self.previous = None
            return self.interval
        summary = relay_summary(report)
        if relay_moved_something(summary, self.previous):
            self.on_pass(summary)
        self.previous = summary
        return delay if due is None else min(delay, due)


def relay_moved_something(summary: Mapping[str, Any], previous: Mapping[str, Any] | None) -> bool:
    """Whether a --follow pass is worth a report: it delivered something, or what is stuck changed."""
    if summary["delivered"] or summary["cancelled"] or previous is None:
        return True

    def stuck(report: Mapping[str, Any]) -> tuple[Any, ...]:
        return (
            sorted((f["event_id"], f["sink"]) for f in report["failed"]),
            sorted((p["event_id"], p["sink"]) for p in report["pending"]),
            sorted((s["sink"], s["count"]) for s in report["skipped"]),
        )

    return stuck(summary) != stuck(previous)


def describe_relay(summary: Mapping[str, Any]) -> list[str]:
    lines = [
        f"delivered {len(summary['delivered'])}, pending {len(summary['pending']) + summary['waiting']}, "
        f"dead letters {len(summary['failed'])}, skipped {sum(s['count'] for s in summary['skipped'])}"
        + (f", cancelled {len(summary['cancelled'])}" if summary["cancelled"] else "")
    ]
    lines += [f"  pending {p['event_id']} -> {p['sink']}: {p['error']}" for p in summary["pending"]]
    due = summary["next_due"]
    if summary["waiting"] and due:
        lines.append(
            f"  waiting {summary['waiting']} deliveries: the next backoff ends in {due['in_seconds']:.0f} s "
            f"({due['event_id']} -> {due['sink']}); `hokusai-ml-platform events relay --event-id {due['event_id']}` "
            "sends it now"
        )
    elif summary["waiting"]:
        lines.append(f"  waiting {summary['waiting']} deliveries: held by another relay")
    lines += [f"  skipped {s['reason']}" for s in summary["skipped"]]
    lines += [f"  cancelled {c['event_id']} -> {c['sink']}: {c['reason']}" for c in summary["cancelled"]]
    lines += [
        "  " + DEAD_LETTER_LINE.format(event_id=f["event_id"], sink=f["sink"], error=f["error"], retry=f["retry"])
        for f in summary["failed"]
    ]
    return lines


def run_events_retry(
    settings: Settings, *, event_id: str | None = None, all_failed: bool = False
) -> tuple[dict[str, Any], int]:
    """Put dead letters back to pending (one event's, or all); exit 2 for an unknown event id."""
    if (event_id is None) == (not all_failed):
        raise InputError(RETRY_NEEDS_ONE)
    if event_id is not None:
        event_id = _event_id_argument(event_id)
    with open_site_database(settings) as database:
        if event_id is not None:
            with database.unit_of_work() as uow:
                if not outbox.event_exists(uow, event_id):
                    raise InputError(
                        EVENT_NOT_FOUND.format(event_id=event_id, url=database.display_url), hint=EVENT_NOT_FOUND_HINT
                    )
                _refuse_withdrawn(uow, event_id)
        requeued, cancelled = outbox.requeue_failed(database, event_id=event_id)
    summary = {
        "requeued": [{"event_id": e, "sink": s, "last_error": err} for e, s, err in requeued],
        "cancelled": [{"event_id": e, "sink": s, "reason": why} for e, s, why in cancelled],
    }
    return summary, EXIT_OK


def _refuse_withdrawn(uow: UnitOfWork, event_id: str) -> None:
    """Exit 3 for an event whose registration its token no longer holds, when it has a dead letter
    (kept as it is) or cancelled deliveries: none of them is ever sent again."""
    rows = outbox.delivery_rows(uow, event_id)
    failed = [row for row in rows if row["status"] == DEAD_LETTER]
    cancelled = [row for row in rows if row["status"] == CANCELLED]
    why = None
    if failed:
        token_id, token = outbox.holder_of(uow, event_id)
        why = outbox.withdrawal_reason(token_id or "?", token, event_id)
    elif cancelled:
        sinks = ", ".join(row["sink"] for row in cancelled)
        why = f"its {sinks} deliveries were cancelled ({cancelled[0]['cancel_reason']})"
    if why is not None:
        raise TokenStateError(RETRY_WITHDRAWN.format(event_id=event_id, why=why), hint=RETRY_WITHDRAWN_HINT)


def describe_retry(summary: Mapping[str, Any], *, event_id: str | None) -> list[str]:
    requeued, cancelled = summary["requeued"], summary["cancelled"]
    lines = []
    if not requeued:
        lines.append(RETRY_NOTHING.format(event_id=event_id) if event_id else "No dead letters; nothing was re-queued.")
    else:
        lines.append(f"re-queued {len(requeued)} deliveries; run `hokusai-ml-platform events relay` to send them:")
        lines += [f"  {r['event_id']} -> {r['sink']} (was: {r['last_error']})" for r in requeued]
    lines += [f"  cancelled {c['event_id']} -> {c['sink']}: {c['reason']}" for c in cancelled]
    return lines
