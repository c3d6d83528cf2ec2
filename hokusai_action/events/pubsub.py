"""Pub/Sub event sink: publish ``token_ready_for_deploy`` in CloudEvents binary content mode.

Wire form (the CloudEvents Pub/Sub binding, binary mode): the message ``data`` is the event's JSON
``data``; each context attribute travels as a message attribute named ``ce-<attribute>``;
``datacontenttype`` travels as ``content-type``. An extra ``event_type`` attribute lets subscribers
filter without knowing CloudEvents. The ordering key is the event's subject (the token id), so the
events of one token reach an ordered subscription in publish order.
Binding: https://github.com/google/knative-gcp/blob/main/docs/spec/pubsub-protocol-binding.md

Why the client is wrapped the way it is (each point checked against google-cloud-pubsub 2.44):

- With message ordering enabled, ``PublisherClient.publish`` replaces any ``retry`` it is given by
  the same retry with a deadline of 2**32 s (see ``publish`` in ``pubsub_v1/publisher/client.py``),
  so a publish to an unreachable service retries in a background thread for ever. Only
  ``retry=None`` escapes that: each attempt here is one RPC with its own deadline, and ``deliver``
  retries transient failures itself, with backoff, until its ``timeout`` is spent. It also waits on
  ``future.result(timeout=...)``, so no call outlives ``timeout`` by more than a fraction of a second.
- After a failed publish the ordering key stays paused: every later publish with that key fails at
  once until ``resume_publish(topic, key)``. We resume after every failure, and once more if a
  publish finds the key paused by an attempt that failed after we stopped waiting for it.
- ``PUBSUB_EMULATOR_HOST`` is honoured by the client itself (insecure channel, anonymous
  credentials) when the client is built; we build it on first use, never at import.

``google.cloud.pubsub_v1`` is imported inside the methods that need it: ``hokusai-ml-platform
--help`` must not pay for (or fail on) Google's client libraries.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hokusai_action.domain.event import CloudEventRecord
from hokusai_action.domain.sinks import EventSink
from hokusai_action.errors import InputError
from hokusai_action.events.pubsub_errors import (
    Topic,
    check_failure,
    delivery_error,
    detail,
    endpoint_description,
    not_authenticated,
    transient_errors,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from google.cloud.pubsub_v1 import PublisherClient

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 30.0

CE_ATTRIBUTE_PREFIX = "ce-"
CONTENT_TYPE_ATTRIBUTE = "content-type"
EVENT_TYPE_ATTRIBUTE = "event_type"

# projects/<project>/topics/<topic>. Topic names: 3-255 characters, starting with a letter, from
# letters, digits and - _ . ~ + %, not starting with "goog" (https://cloud.google.com/pubsub/docs/admin).
# Project ids are checked loosely (legacy ids contain "." and ":"); the service has the last word.
_TOPIC_PATH = re.compile(
    r"projects/(?P<project>[A-Za-z0-9][A-Za-z0-9.:_-]{0,99})"
    r"/topics/(?P<topic>(?!goog)[A-Za-z][A-Za-z0-9._~+%-]{2,254})"
)

# Pause between attempts inside one delivery: short, doubling, capped.
_BACKOFF_INITIAL = 0.1
_BACKOFF_MAX = 1.0
# An attempt's RPC deadline ends this long before our own wait does, so the RPC gives up first: the
# user sees its real error rather than our timeout, and the ordering key is already paused (resumable).
_WAIT_SLACK = 0.25
_MIN_WAIT = 0.05

# Messages: what happened, why, what to do (a vendor error's, in ``pubsub_errors``).
INVALID_TOPIC = (
    "Pub/Sub topic {topic!r} is not a full topic path, so no event can be published to it. "
    "Set HOKUSAI_PUBSUB_TOPIC (or events.pubsub.topic in hokusai.yaml) to "
    "'projects/<project-id>/topics/<topic-name>'."
)
INVALID_TIMEOUT = "Pub/Sub timeout {timeout!r} is not a finite number of seconds above zero; give one."
PREFLIGHT_MAX_SECONDS = 5.0  # the settings check before the claim runs beside hashing: never longer than this
PUBLISH_PERMISSION = "pubsub.topics.publish"
PREFLIGHT_CANNOT_PUBLISH = (
    "The account in use may not publish to Pub/Sub topic {topic} on {endpoint} (no pubsub.topics.publish), "
    "or the topic does not exist; nothing was changed."
)
PERMISSION_DENIED_HINT_PREFLIGHT = (
    "Grant that account roles/pubsub.publisher on the topic (or run as one that has it), or fix "
    "HOKUSAI_PUBSUB_TOPIC, then run the registration again."
)
CHECK_NOT_VERIFIED = (
    "topic {topic} not verified: the account may not read topic metadata (pubsub.topics.get), "
    "which a publisher-only role does not need"
)


@dataclass(frozen=True)
class PubSubMessage:
    """One event in Pub/Sub binary content mode: what ``publish`` receives."""

    data: bytes
    attributes: dict[str, str]
    ordering_key: str


@dataclass(frozen=True)
class TopicCheck:
    """Result of ``PubSubSink.check_topic``; ``verified`` is False when the topic could not be read."""

    topic: str
    endpoint: str
    verified: bool
    detail: str


def parse_topic_path(topic: str) -> tuple[str, str]:
    """Return ``(project, topic_id)`` of ``projects/P/topics/T``; raise ``InputError`` otherwise."""
    match = _TOPIC_PATH.fullmatch(topic.strip()) if isinstance(topic, str) else None
    if match is None:
        raise InputError(INVALID_TOPIC.format(topic=topic))
    return match.group("project"), match.group("topic")


def to_pubsub_message(event: CloudEventRecord) -> PubSubMessage:
    """Map ``event`` to CloudEvents binary content mode for Pub/Sub.

    Attribute values travel as they are: Pub/Sub attributes are UTF-8 strings, so the HTTP
    binding's percent-encoding does not apply (and an event's values contain no ``%``).
    """
    attributes = {
        f"{CE_ATTRIBUTE_PREFIX}{name}": value for name, value in event.attributes().items() if name != "datacontenttype"
    }
    attributes[CONTENT_TYPE_ATTRIBUTE] = event.datacontenttype
    attributes[EVENT_TYPE_ATTRIBUTE] = event.type
    return PubSubMessage(data=event.data_bytes(), attributes=attributes, ordering_key=event.subject)


class PubSubSink(EventSink):
    """Publish events to one Pub/Sub topic, ordered per token, taking at most about ``timeout`` s.

    ``publisher`` may be a ready ``google.cloud.pubsub_v1.PublisherClient`` built with
    ``PublisherOptions(enable_message_ordering=True)``; the sink then leaves it open on ``close``.
    Without one the sink builds its own client on first use and closes it on ``close``.
    """

    name = "pubsub"

    def __init__(
        self,
        topic: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        publisher: PublisherClient | None = None,
    ) -> None:
        self.project, self.topic_id = parse_topic_path(topic)
        self.topic = topic.strip()
        self._topic_parts = Topic(path=self.topic, project=self.project, topic_id=self.topic_id)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise InputError(INVALID_TIMEOUT.format(timeout=timeout))
        self.timeout = float(timeout)
        self._publisher = publisher
        self._owns_publisher = publisher is None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PubSubSink(topic={self.topic!r}, timeout={self.timeout:g})"

    # -- public API -------------------------------------------------------------------------------

    def deliver(self, event: CloudEventRecord) -> None:
        """Publish ``event``; return once Pub/Sub stored it, else raise ``SinkDeliveryError``.

        Transient failures are retried until ``timeout`` seconds have passed. Every attempt sends
        the same message, so the same event id; a subscriber may see it more than once.
        """
        transient = transient_errors()
        message = to_pubsub_message(event)
        publisher = self._client(for_check=False)
        deadline = time.monotonic() + self.timeout
        delay = _BACKOFF_INITIAL
        while True:
            remaining = deadline - time.monotonic()
            try:
                future = self._publish(publisher, message, rpc_timeout=max(remaining - _WAIT_SLACK, _MIN_WAIT))
                future.result(timeout=max(remaining, _MIN_WAIT))
                return
            except Exception as exc:
                self._resume(publisher, message.ordering_key)
                if not isinstance(exc, transient) or deadline - time.monotonic() <= delay:
                    raise delivery_error(exc, self._topic_parts, timeout=self.timeout) from exc
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    def check_topic(self, *, timeout: float | None = None) -> TopicCheck:
        """Read-only check that Pub/Sub answers within ``timeout`` (default: the sink's) and the topic exists.

        Raises ``ServiceUnavailable`` when Pub/Sub cannot be reached, ``InputError`` when the topic is
        missing or there are no credentials. An account that may publish but not read the topic's
        metadata gets ``verified=False``, not an error: delivery does not need that permission.
        """
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_exceptions

        endpoint = endpoint_description()
        budget = self.timeout if timeout is None else timeout
        publisher = self._client(for_check=True)
        try:
            publisher.get_topic(
                request={"topic": self.topic}, retry=self._read_retry(budget), timeout=self._read_timeout(budget)
            )
        except gexc.PermissionDenied as exc:
            shown = f"{CHECK_NOT_VERIFIED.format(topic=self.topic)} ({detail(exc)})"
            return TopicCheck(topic=self.topic, endpoint=endpoint, verified=False, detail=shown)
        except (
            gexc.NotFound,
            auth_exceptions.GoogleAuthError,
            gexc.RetryError,
            gexc.GoogleAPICallError,
            TimeoutError,
            OSError,
        ) as exc:
            raise check_failure(exc, self._topic_parts, budget=budget) from exc
        return TopicCheck(topic=self.topic, endpoint=endpoint, verified=True, detail=f"topic {self.topic} exists")

    def preflight(self) -> str:
        """The registration's settings check before the claim, bounded by ``PREFLIGHT_MAX_SECONDS``.

        ``InputError`` (exit 2) when the topic does not exist or the account may not publish to it;
        ``ServiceUnavailable`` when Pub/Sub does not answer (not a settings error: the caller warns and
        goes on). Publish permission is asked with ``testIamPermissions``, which needs no permission
        itself; the emulator does not implement it (it has no IAM), so there the topic's existence is
        the whole check. Returns what was verified, for a log line.
        """
        from google.api_core import exceptions as gexc

        budget = min(self.timeout, PREFLIGHT_MAX_SECONDS)
        started = time.monotonic()
        check = self.check_topic(timeout=budget)
        remaining = max(budget - (time.monotonic() - started), _MIN_WAIT)
        publisher = self._client(for_check=True)
        try:
            response = publisher.test_iam_permissions(
                request={"resource": self.topic, "permissions": [PUBLISH_PERMISSION]},
                retry=self._read_retry(remaining),
                timeout=self._read_timeout(remaining),
            )
        except gexc.MethodNotImplemented:
            return check.detail  # the emulator: no IAM to ask
        except (gexc.GoogleAPICallError, gexc.RetryError, TimeoutError, OSError) as exc:
            return f"{check.detail}; publish permission not verified ({detail(exc)})"
        if PUBLISH_PERMISSION not in response.permissions:
            raise InputError(
                PREFLIGHT_CANNOT_PUBLISH.format(topic=self.topic, endpoint=endpoint_description()),
                hint=PERMISSION_DENIED_HINT_PREFLIGHT,
            )
        return f"{check.detail}; the account may publish to it"

    def close(self) -> None:
        """Release the client's channel if this sink built the client; safe to call twice."""
        if not self._owns_publisher or self._publisher is None:
            return
        publisher, self._publisher = self._publisher, None
        try:
            publisher.stop()  # non-blocking: hands any pending batch to its commit thread
        except RuntimeError:
            pass  # already stopped
        finally:
            publisher.transport.close()

    def __enter__(self) -> PubSubSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Build the client (imports, credentials, channel) ahead of the first publish; never raises."""
        try:
            publisher = self._client(for_check=False)
            # gRPC connects lazily, on the first call; connect now so the publish after the
            # registration's commit pays no handshake (no RPC is made, so no permission is needed)
            import grpc

            grpc.channel_ready_future(publisher.transport.grpc_channel).result(timeout=self.timeout)
        except Exception:
            log.debug("Pub/Sub client warm-up failed; deliver() will report it", exc_info=True)

    def _client(self, *, for_check: bool) -> PublisherClient:
        with self._client_lock:  # prepare() may be building it on another thread
            return self._build_client(for_check=for_check)

    def _build_client(self, *, for_check: bool) -> PublisherClient:
        if self._publisher is not None:
            return self._publisher
        from google.auth import exceptions as auth_exceptions
        from google.cloud import pubsub_v1

        try:
            self._publisher = pubsub_v1.PublisherClient(
                # one event per registration: send it at once instead of waiting 10 ms for a batch
                batch_settings=pubsub_v1.types.BatchSettings(max_messages=1),
                publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
            )
        except auth_exceptions.GoogleAuthError as exc:
            raise not_authenticated(self._topic_parts, exc, for_check=for_check) from exc
        self._owns_publisher = True
        return self._publisher

    def _publish(self, publisher: PublisherClient, message: PubSubMessage, *, rpc_timeout: float) -> Any:
        from google.cloud.pubsub_v1.publisher import exceptions as pexc

        def publish() -> Any:
            # retry=None: one RPC per attempt; any other value becomes an endless retry (see above).
            return publisher.publish(
                self.topic,
                message.data,
                ordering_key=message.ordering_key,
                retry=None,
                timeout=rpc_timeout,
                **message.attributes,
            )

        try:
            return publish()
        except pexc.PublishToPausedOrderingKeyException:
            # An earlier attempt failed after we stopped waiting on it, and paused the key.
            self._resume(publisher, message.ordering_key)
            return publish()

    def _resume(self, publisher: PublisherClient, ordering_key: str) -> None:
        # RuntimeError: the key is not paused (the failed attempt never reached the sequencer, or is
        # still in flight) or the client is stopped; the next publish resumes the key if it finds it
        # paused. ValueError: ordering is off on an injected client, so nothing can pause.
        with contextlib.suppress(RuntimeError, ValueError):
            publisher.resume_publish(self.topic, ordering_key)

    def _read_retry(self, budget: float | None = None) -> Any:
        """A bounded retry for unary calls (``get_topic``), which keep the deadline they are given."""
        from google.api_core import retry as gretry

        return gretry.Retry(
            predicate=gretry.if_exception_type(*transient_errors()),
            initial=_BACKOFF_INITIAL,
            maximum=_BACKOFF_MAX,
            multiplier=2.0,
            timeout=self._read_timeout(budget),
        )

    def _read_timeout(self, budget: float | None = None) -> float:
        return max((self.timeout if budget is None else budget) - _WAIT_SLACK, _MIN_WAIT)
