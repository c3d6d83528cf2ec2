"""The transactional outbox for ``token_ready_for_deploy``, and the relay that empties it.

``add_event`` (``rows``) writes the ``events`` row and one ``event_deliveries`` row per sink inside
the caller's transaction and never commits: the event exists if and only if the registration
committed. On PostgreSQL it also queues ``NOTIFY token_ready_for_deploy, '<event_id>'``, which the
server sends only at commit (``follow`` listens for it).

``deliver_pending`` (``relay``, each sink's thread in ``lane``) hands pending rows to the sinks, one
lease at a time:

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

The names below are the outbox as the registration and the commands use it. Part of the database
adapter: imports the domain's event, statuses and sink protocol, never a sink itself.
"""

from hokusai_action.db.outbox.follow import (
    POLL_MIN_SECONDS,
    IdleBackoff,
    Notifications,
    outstanding,
    seconds_until_due,
)
from hokusai_action.db.outbox.relay import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    RelayReport,
    backoff_seconds,
    deliver_pending,
)
from hokusai_action.db.outbox.rows import (
    CANCELLED_BY_RESET,
    NOTIFY_CHANNEL,
    add_event,
    cancel_undelivered,
    dead_letters,
    delivery_rows,
    delivery_status,
    event_exists,
    get_event,
    holder_of,
    requeue_failed,
    withdrawal_reason,
)

__all__ = [
    "BACKOFF_BASE_SECONDS",
    "BACKOFF_MAX_SECONDS",
    "CANCELLED_BY_RESET",
    "NOTIFY_CHANNEL",
    "POLL_MIN_SECONDS",
    "IdleBackoff",
    "Notifications",
    "RelayReport",
    "add_event",
    "backoff_seconds",
    "cancel_undelivered",
    "dead_letters",
    "deliver_pending",
    "delivery_rows",
    "delivery_status",
    "event_exists",
    "get_event",
    "holder_of",
    "outstanding",
    "requeue_failed",
    "seconds_until_due",
    "withdrawal_reason",
]
