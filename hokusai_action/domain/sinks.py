"""Event sinks for ``token_ready_for_deploy``.

A sink is any object with a ``name`` (``pubsub``, ``webhook``, ``database``) and a
``deliver(event)`` method that returns once the event is accepted by the far side, or raises
``hokusai_action.errors.SinkDeliveryError``. Sinks never touch the database: the outbox
(``hokusai_action.db.outbox``) records what was delivered.
"""

from __future__ import annotations

from typing import Protocol

from hokusai_action.domain.event import CloudEventRecord


class EventSink(Protocol):
    name: str

    def deliver(self, event: CloudEventRecord) -> None: ...

    def close(self) -> None: ...
