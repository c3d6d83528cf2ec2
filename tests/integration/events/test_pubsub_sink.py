"""The Pub/Sub sink against Google's Pub/Sub emulator, read back by a real subscriber.

What a subscriber relies on: one message per delivery, CloudEvents binary mode that the
CloudEvents SDK parses, the token id as ordering key, the same event id on every delivery. What an
operator relies on: a missing topic fails at once and says so; an unreachable Pub/Sub fails within
the timeout, as retryable, and delivery works again once it is back.

The few tests marked ``unit`` need no emulator: faults the emulator cannot show (PermissionDenied,
a key left paused by an earlier attempt) use a stand-in publisher.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event

from hokusai_action.domain.event import CloudEventRecord, event_id_for
from hokusai_action.errors import (
    EXIT_BAD_INPUT,
    EXIT_SERVICE_UNAVAILABLE,
    InputError,
    ServiceUnavailable,
    SinkDeliveryError,
)
from hokusai_action.events.pubsub import PubSubSink, to_pubsub_message
from tests.pubsub_emulator import PubSubEmulator, TopicWithSubscription, group_members

SHORT_TIMEOUT = 3.0


def make_event(symbol: str = "XRAY", digest: str = "sha256:" + "ab" * 32, **data: Any) -> CloudEventRecord:
    token_id = symbol  # named so: ruff's S107 takes a "token" default for a password
    payload = {
        "token_id": token_id,
        "mlflow_run_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "model_name": f"hokusai-{token_id.lower()}",
        "model_version": "3",
        "model_uri": f"models:/hokusai-{token_id.lower()}/3",
        "metric_name": "auroc",
        "metric_value": 0.871,
        "baseline_value": 0.82,
        "artifact_digest": digest,
        "git": {"sha": "a" * 40, "ref": "refs/heads/main", "repository": "hokusai/models"},
        "registered_at": "2026-01-02T03:04:05Z",
        **data,
    }
    return CloudEventRecord(
        id=event_id_for(token_id, digest),
        source="https://github.com/hokusai/models",
        time="2026-01-02T03:04:05Z",
        subject=token_id,
        data=payload,
    )


def parse_cloudevent(message: Any) -> Any:
    """Read a Pub/Sub message with the CloudEvents SDK, via its HTTP binding (ce-* headers + body)."""
    return from_binary_event(HTTPMessage(headers=dict(message.attributes), body=bytes(message.data)))


# -- against the emulator ---------------------------------------------------------------------------


@pytest.mark.integration
def test_subscriber_receives_one_binary_mode_cloudevent(
    pubsub_emulator: PubSubEmulator, pubsub_topic: TopicWithSubscription, make_sink
) -> None:
    event = make_event()
    make_sink(pubsub_topic.topic, timeout=SHORT_TIMEOUT).deliver(event)

    messages = pubsub_emulator.pull(pubsub_topic.subscription, max_messages=2, timeout=3)
    assert len(messages) == 1
    message = messages[0]
    assert message.ordering_key == "XRAY"
    assert dict(message.attributes) == {
        "ce-id": event.id,
        "ce-source": "https://github.com/hokusai/models",
        "ce-specversion": "1.0",
        "ce-type": "token_ready_for_deploy",
        "ce-time": "2026-01-02T03:04:05Z",
        "ce-subject": "XRAY",
        "content-type": "application/json",
        "event_type": "token_ready_for_deploy",
    }
    assert json.loads(message.data) == event.data

    parsed = parse_cloudevent(message)
    assert parsed.get_id() == event.id
    assert parsed.get_source() == event.source
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_type() == "token_ready_for_deploy"
    assert parsed.get_subject() == "XRAY"
    assert parsed.get_time() == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parsed.get_datacontenttype() == "application/json"
    assert parsed.get_data() == event.data
    assert set(parsed.get_data()) == {
        "token_id",
        "mlflow_run_id",
        "model_name",
        "model_version",
        "model_uri",
        "metric_name",
        "metric_value",
        "baseline_value",
        "artifact_digest",
        "git",
        "registered_at",
    }


@pytest.mark.integration
def test_events_of_each_token_arrive_in_publish_order(
    pubsub_emulator: PubSubEmulator, pubsub_topic: TopicWithSubscription, make_sink
) -> None:
    sink = make_sink(pubsub_topic.topic, timeout=SHORT_TIMEOUT)
    sent = [make_event(token, digest=f"sha256:{token}{n}") for n in range(3) for token in ("XRAY", "YOLO")]
    for event in sent:
        sink.deliver(event)

    received = pubsub_emulator.pull(pubsub_topic.subscription, max_messages=len(sent), timeout=5)
    assert len(received) == len(sent)
    for token in ("XRAY", "YOLO"):
        got = [m.attributes["ce-id"] for m in received if m.ordering_key == token]
        assert got == [e.id for e in sent if e.subject == token]
        assert {m.attributes["ce-subject"] for m in received if m.ordering_key == token} == {token}


@pytest.mark.integration
def test_missing_topic_fails_fast_and_the_key_is_not_left_paused(pubsub_emulator: PubSubEmulator, make_sink) -> None:
    name = "not-created-yet"
    topic = pubsub_emulator.topic_path(name)
    sink = make_sink(topic, timeout=10.0)
    event = make_event()

    began = time.monotonic()
    with pytest.raises(SinkDeliveryError) as caught:
        sink.deliver(event)
    elapsed = time.monotonic() - began

    assert caught.value.retryable is False
    assert elapsed < 2.0, f"a missing topic took {elapsed:.2f} s to report"
    line = caught.value.one_line()
    assert topic in line and "does not exist" in line and "HOKUSAI_PUBSUB_TOPIC" in line
    print(f"missing topic reported in {elapsed:.3f} s")

    # Once the topic exists, the same sink (same client, same ordering key) delivers.
    pubsub_emulator.make_topic(name)
    subscription = pubsub_emulator.make_subscription(topic)
    sink.deliver(event)
    [message] = pubsub_emulator.pull(subscription, max_messages=1, timeout=3)
    assert message.attributes["ce-id"] == event.id


@pytest.mark.integration
def test_check_topic_reads_without_publishing(
    pubsub_emulator: PubSubEmulator, pubsub_topic: TopicWithSubscription, make_sink
) -> None:
    check = make_sink(pubsub_topic.topic, timeout=SHORT_TIMEOUT).check_topic()
    assert check.verified is True
    assert check.endpoint == f"the emulator at {pubsub_emulator.host}"
    assert pubsub_emulator.pull(pubsub_topic.subscription, max_messages=1, timeout=1) == []

    with pytest.raises(InputError) as caught:
        make_sink(pubsub_emulator.topic_path("no-such-topic"), timeout=SHORT_TIMEOUT).check_topic()
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert "does not exist" in caught.value.one_line()


@pytest.mark.integration
def test_the_tests_pull_ends_quietly_when_its_time_runs_out_on_the_wire(
    pubsub_emulator: PubSubEmulator, pubsub_topic: TopicWithSubscription
) -> None:
    # The tests' "nothing else arrived" checks pull until their time is up. A pull whose deadline
    # passes while the call is on the wire ends as DEADLINE_EXCEEDED or, about once in a hundred
    # calls here, as CANCELLED (gRPC resets the stream): either means nothing arrived in time.
    for _ in range(2000):
        assert pubsub_emulator.pull(pubsub_topic.subscription, max_messages=1, timeout=1e-5) == []


@pytest.mark.integration
@pytest.mark.slow
def test_emulator_down_is_retryable_bounded_and_recovers(
    pubsub_emulator: PubSubEmulator, pubsub_topic: TopicWithSubscription, make_sink
) -> None:
    sink = make_sink(pubsub_topic.topic, timeout=SHORT_TIMEOUT)
    event = make_event()
    sink.deliver(event)
    assert len(pubsub_emulator.pull(pubsub_topic.subscription, max_messages=1, timeout=3)) == 1

    pgid = pubsub_emulator.pid
    assert pgid is not None
    with pubsub_emulator.down():
        assert group_members(pgid) == [], "the emulator's Java process outlived stop()"

        began = time.monotonic()
        with pytest.raises(SinkDeliveryError) as caught:
            sink.deliver(event)
        elapsed = time.monotonic() - began
        print(f"delivery to a stopped emulator gave up after {elapsed:.2f} s (timeout {SHORT_TIMEOUT} s)")
        assert caught.value.retryable is True
        assert SHORT_TIMEOUT / 2 < elapsed < SHORT_TIMEOUT + 1.0
        assert pubsub_emulator.host in caught.value.one_line()

        began = time.monotonic()
        with pytest.raises(ServiceUnavailable) as unreachable:
            make_sink(pubsub_topic.topic, timeout=SHORT_TIMEOUT).check_topic()
        assert time.monotonic() - began < SHORT_TIMEOUT + 1.0
        assert unreachable.value.exit_code == EXIT_SERVICE_UNAVAILABLE

    # Back on the same port, with the topic and subscription made again: the same sink delivers the
    # same event, and a fresh sink does too. Both messages carry the one event id. The old sink's
    # gRPC channel may still be in its reconnect backoff (seconds, growing while the emulator was
    # down), so it gets the patience a re-run or `events relay` would give it.
    deadline = time.monotonic() + 30
    while True:
        try:
            sink.deliver(event)
            break
        except SinkDeliveryError as exc:
            if not exc.retryable or time.monotonic() > deadline:
                raise
    make_sink(pubsub_topic.topic, timeout=SHORT_TIMEOUT).deliver(event)
    messages = pubsub_emulator.pull(pubsub_topic.subscription, max_messages=4, timeout=3)
    # at least once: an attempt that timed out on our side may still have been published
    assert len(messages) >= 2
    assert {m.attributes["ce-id"] for m in messages} == {event.id}
    assert {m.ordering_key for m in messages} == {"XRAY"}


# -- without a service: invalid settings, and faults the emulator cannot show ---------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    "topic",
    [
        "token-events",
        "projects/hokusai/token-events",
        "projects/hokusai/topics/",
        "projects/hokusai/topics/ab",
        "projects/hokusai/topics/googevents",
        "projects//topics/token-events",
        "projects/hokusai/topics/token events",
        "https://pubsub.googleapis.com/v1/projects/hokusai/topics/token-events",
    ],
)
def test_a_topic_that_is_not_a_full_path_is_an_input_error(topic: str) -> None:
    with pytest.raises(InputError) as caught:
        PubSubSink(topic)
    assert "projects/<project-id>/topics/<topic-name>" in caught.value.one_line()


@pytest.mark.unit
@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), True])
def test_timeout_must_be_a_positive_finite_number(timeout: float) -> None:
    with pytest.raises(InputError):
        PubSubSink("projects/hokusai/topics/token-events", timeout=timeout)


@pytest.mark.unit
def test_binary_mode_mapping() -> None:
    event = make_event("ZETA")
    message = to_pubsub_message(event)
    assert message.ordering_key == "ZETA"
    assert message.data == event.data_bytes()
    assert message.attributes["ce-id"] == event.id
    assert message.attributes["content-type"] == "application/json"
    assert "ce-datacontenttype" not in message.attributes


@pytest.mark.unit
def test_importing_the_sink_imports_no_google_client() -> None:
    code = (
        "import sys, hokusai_action.events.pubsub; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('google', 'grpc')); "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stdout + completed.stderr


class StandInPublisher:
    """A publisher whose futures fail with the given errors in turn, then succeed."""

    def __init__(self, *publish_errors: BaseException, result_errors: list[BaseException] | None = None):
        self.publish_errors = list(publish_errors)
        self.result_errors = list(result_errors or [])
        self.published: list[tuple[str, bytes, str, dict[str, str]]] = []
        self.resumed: list[tuple[str, str]] = []

    def publish(self, topic, data, ordering_key="", retry=None, timeout=None, **attrs):
        if self.publish_errors:
            raise self.publish_errors.pop(0)
        self.published.append((topic, data, ordering_key, attrs))
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        if self.result_errors:
            future.set_exception(self.result_errors.pop(0))
        else:
            future.set_result("message-id-1")
        return future

    def resume_publish(self, topic, ordering_key):
        self.resumed.append((topic, ordering_key))


@pytest.mark.unit
def test_permission_denied_is_not_retryable_and_resumes_the_key() -> None:
    from google.api_core import exceptions as gexc

    topic = "projects/hokusai/topics/token-events"
    publisher = StandInPublisher(result_errors=[gexc.PermissionDenied("User not authorized")])
    sink = PubSubSink(topic, timeout=SHORT_TIMEOUT, publisher=publisher)

    began = time.monotonic()
    with pytest.raises(SinkDeliveryError) as caught:
        sink.deliver(make_event())
    assert time.monotonic() - began < 1.0
    assert caught.value.retryable is False
    assert "roles/pubsub.publisher" in caught.value.one_line()
    assert publisher.resumed == [(topic, "XRAY")]
    assert len(publisher.published) == 1  # not retried


@pytest.mark.unit
@pytest.mark.parametrize(
    ("make_error", "retryable"),
    [
        (lambda e: e.TransportError("metadata server did not answer"), True),
        (lambda e: e.RefreshError("token endpoint 503", retryable=True), True),
        (lambda e: e.RefreshError("invalid_grant: account disabled"), False),
        (lambda e: e.DefaultCredentialsError("no credentials found"), False),
    ],
    ids=["transport", "refresh-retryable", "refresh-revoked", "no-credentials"],
)
def test_a_credentials_hiccup_is_retried_but_bad_credentials_are_a_dead_letter(make_error, retryable: bool) -> None:
    """Google's clients fail auth on their own (no emulator shows it): a stand-in publisher raises."""
    from google.auth import exceptions as auth_exceptions

    sink = PubSubSink(
        "projects/hokusai/topics/token-events",
        timeout=SHORT_TIMEOUT,
        publisher=StandInPublisher(result_errors=[make_error(auth_exceptions)]),
    )
    with pytest.raises(SinkDeliveryError) as caught:
        sink.deliver(make_event())
    assert caught.value.retryable is retryable


@pytest.mark.unit
def test_a_key_paused_by_an_abandoned_attempt_is_resumed_and_published() -> None:
    from google.cloud.pubsub_v1.publisher.exceptions import PublishToPausedOrderingKeyException

    topic = "projects/hokusai/topics/token-events"
    publisher = StandInPublisher(PublishToPausedOrderingKeyException("XRAY"))
    PubSubSink(topic, timeout=SHORT_TIMEOUT, publisher=publisher).deliver(make_event())
    assert publisher.resumed == [(topic, "XRAY")]
    assert len(publisher.published) == 1


@pytest.mark.unit
def test_transient_errors_are_retried_within_the_timeout() -> None:
    from google.api_core import exceptions as gexc

    publisher = StandInPublisher(result_errors=[gexc.ServiceUnavailable("down"), gexc.Aborted("busy")])
    PubSubSink("projects/hokusai/topics/token-events", timeout=SHORT_TIMEOUT, publisher=publisher).deliver(make_event())
    assert len(publisher.published) == 3
    assert len({p[3]["ce-id"] for p in publisher.published}) == 1
