"""Fixtures of the event sinks' integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hokusai_action.events.pubsub import PubSubSink


@pytest.fixture
def make_sink() -> Iterator[Callable[..., PubSubSink]]:
    """``make_sink(topic, **options)``: a Pub/Sub sink, closed after the test (test_webhook_sink.py
    has a ``make_sink`` of its own, for webhook sinks)."""
    sinks: list[PubSubSink] = []

    def make(topic: str, **kwargs: Any) -> PubSubSink:
        sink = PubSubSink(topic, **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()
