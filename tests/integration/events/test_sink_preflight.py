"""The sinks' settings check before the claim: against the Pub/Sub emulator, and its orchestration
beside the model's hashing (`wiring.start_sink_checks`). The command line is covered in
tests/e2e/events/test_events.py (missing topic -> exit 2; emulator down -> exit 5, pending)."""

from __future__ import annotations

import logging
import time

import pytest

from hokusai_action.commands.wiring import start_sink_checks
from hokusai_action.errors import InputError, ServiceUnavailable
from hokusai_action.events.pubsub import PREFLIGHT_MAX_SECONDS, PubSubSink
from tests.pubsub_emulator import PubSubEmulator, TopicWithSubscription


@pytest.mark.integration
def test_an_existing_topic_passes_and_publishes_nothing(
    pubsub_emulator: PubSubEmulator, pubsub_topic: TopicWithSubscription, make_sink
) -> None:
    detail = make_sink(pubsub_topic.topic).preflight()
    assert pubsub_topic.topic in detail
    assert pubsub_emulator.pull(pubsub_topic.subscription, max_messages=1, timeout=1) == []


@pytest.mark.integration
def test_a_missing_topic_is_a_settings_error_naming_it(pubsub_emulator: PubSubEmulator, make_sink) -> None:
    missing = pubsub_emulator.topic_path("not-created-here")
    with pytest.raises(InputError) as caught:
        make_sink(missing).preflight()
    assert f"Pub/Sub topic {missing} does not exist" in caught.value.one_line()
    assert "gcloud pubsub topics create not-created-here" in caught.value.one_line()


@pytest.mark.integration
@pytest.mark.slow
def test_an_unreachable_emulator_is_not_a_settings_error_and_the_check_is_bounded(
    pubsub_emulator: PubSubEmulator, pubsub_topic: TopicWithSubscription, make_sink, caplog
) -> None:
    sink = make_sink(pubsub_topic.topic, timeout=30)  # the delivery's timeout; the check caps itself
    with pubsub_emulator.down():
        began = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            sink.preflight()
        assert time.monotonic() - began < PREFLIGHT_MAX_SECONDS + 1.5

        checks = start_sink_checks({"pubsub": make_sink(pubsub_topic.topic, timeout=2)})
        with caplog.at_level(logging.WARNING, logger="hokusai_action.commands.wiring"):
            checks.wait()  # no raise: the run goes on
    assert "event sink pubsub could not be checked" in caplog.text


@pytest.mark.integration
def test_checks_run_beside_the_caller_and_wait_raises_the_settings_error(
    pubsub_emulator: PubSubEmulator, make_sink
) -> None:
    class SlowSink:
        name = "slow"

        def preflight(self) -> str:
            time.sleep(1.0)
            return "fine"

        def close(self) -> None:
            return None

    missing = make_sink(pubsub_emulator.topic_path("not-there-either"))
    began = time.monotonic()
    checks = start_sink_checks({"slow": SlowSink(), "pubsub": missing})
    assert time.monotonic() - began < 0.5  # started, not awaited: hashing goes on meanwhile
    with pytest.raises(InputError, match="not-there-either"):
        checks.wait()
    assert time.monotonic() - began < 1.0 + PREFLIGHT_MAX_SECONDS


class IamPublisher:
    """A publisher whose topic exists but whose account lacks publish: IAM the emulator does not have."""

    def __init__(self, permissions: list[str]) -> None:
        self.permissions = permissions

    def get_topic(self, request, retry=None, timeout=None):
        return object()

    def test_iam_permissions(self, request, retry=None, timeout=None):
        class Response:
            permissions = self.permissions

        return Response()


@pytest.mark.unit
def test_an_account_that_may_not_publish_is_a_settings_error() -> None:
    topic = "projects/hokusai/topics/token-events"
    with pytest.raises(InputError, match="may not publish"):
        PubSubSink(topic, publisher=IamPublisher([])).preflight()
    assert "may publish" in PubSubSink(topic, publisher=IamPublisher(["pubsub.topics.publish"])).preflight()
