"""Event sinks for ``token_ready_for_deploy``.

A sink has a ``name`` (``pubsub``, ``webhook``, ``database``) and a ``deliver(event)`` method that
returns once the event is accepted by the far side, or raises ``hokusai_action.errors.SinkDeliveryError``.
Sinks never touch the database: the outbox (``hokusai_action.db.outbox``) records what was delivered.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

from hokusai_action.domain.event import CloudEventRecord


class EventSink(ABC):
    """What every sink does; ``preflight``, ``prepare``, ``probe`` and ``close`` are optional: a sink
    overrides the ones it has something to do in, and the defaults here do nothing."""

    name: str

    @abstractmethod
    def deliver(self, event: CloudEventRecord) -> None:
        """Return once the far side accepted ``event``; raise ``SinkDeliveryError`` otherwise."""

    def preflight(self) -> str | None:
        """The registration's read-only check of the sink's settings, before the claim and beside the
        model's hashing: ``InputError`` (exit 2) for settings that cannot work, any other error for a
        far side that does not answer (the run goes on). What was verified, for a log line; None: the
        sink has nothing to check."""
        return None

    def prepare(self) -> None:
        """Open connections ahead of the first delivery, in the background while the model uploads.
        Never raises: ``deliver`` reports what went wrong."""
        return None

    def probe(self, timeout: float) -> str | None:
        """`doctor`'s check that the far side answers within ``timeout``, delivering nothing; used when
        the sink has no ``preflight``. What answered; None: the sink has nothing to probe."""
        return None

    def close(self) -> None:
        """Release what the sink holds (clients, connections); safe to call twice."""
        return None


def close_sinks(sinks: Iterable[EventSink]) -> None:
    """Close each sink: every command that builds sinks closes them this way on its way out."""
    for sink in sinks:
        sink.close()
