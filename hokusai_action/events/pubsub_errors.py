"""Google's Pub/Sub and auth errors as ours: what happened, why, and what to do, for a delivery
(``SinkDeliveryError``, retryable or a dead letter) and for a check of the settings (``InputError``,
exit 2, or ``ServiceUnavailable``, exit 4). Topic paths and endpoints are never secret.

Google's modules are imported inside the functions: ``hokusai-ml-platform --help`` must not pay for
(or fail on) them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hokusai_action.errors import HokusaiError, InputError, ServiceUnavailable, SinkDeliveryError
from hokusai_action.redact import redact

EMULATOR_HOST_ENV = "PUBSUB_EMULATOR_HOST"
# Transient failures worth another attempt inside one delivery (the set the client retries by
# default), named so that no Google code is imported until it is used.
TRANSIENT_ERRORS = (
    "Aborted",
    "Cancelled",
    "DeadlineExceeded",
    "InternalServerError",
    "ResourceExhausted",
    "ServiceUnavailable",
    "Unknown",
)
MAX_DETAIL_CHARS = 300

TOPIC_NOT_FOUND = "Pub/Sub topic {topic} does not exist on {endpoint}, so the event was not published."
TOPIC_NOT_FOUND_HINT = (
    "Create the topic (gcloud pubsub topics create {topic_id} --project {project}) "
    "or fix HOKUSAI_PUBSUB_TOPIC; the delivery is kept as a dead letter until 'events retry'."
)
PERMISSION_DENIED = "Pub/Sub refused to publish to {topic}: the account in use lacks permission pubsub.topics.publish."
PERMISSION_DENIED_HINT = (
    "Grant that account roles/pubsub.publisher on the topic (or run as one that has it); "
    "the delivery is kept as a dead letter until 'events retry'."
)
NOT_AUTHENTICATED = "Pub/Sub could not authenticate the publisher for {topic} ({detail})."
NOT_AUTHENTICATED_HINT = (
    "Provide Google credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity, or "
    "'gcloud auth application-default login'), or set PUBSUB_EMULATOR_HOST to use an emulator."
)
REJECTED = "Pub/Sub rejected the event for {topic} ({detail})."
REJECTED_HINT = (
    "Trying again will not help; check the topic's settings (schema, message limits). The delivery is "
    "kept as a dead letter until 'events retry'."
)
UNREACHABLE = "Pub/Sub at {endpoint} did not accept the event for {topic} within {timeout:g} s ({detail})."
UNREACHABLE_HINT = (
    "The service or emulator is down or unreachable; the event is kept, and "
    "'hokusai-ml-platform events relay' (or a re-run) delivers it once Pub/Sub answers."
)
PUBLISH_FAILED = "Publishing the event to Pub/Sub topic {topic} failed ({detail})."
PUBLISH_FAILED_HINT = "The event is kept; 'hokusai-ml-platform events relay' (or a re-run) tries again."
CHECK_UNREACHABLE = "Pub/Sub at {endpoint} did not answer within {timeout:g} s ({detail})."
CHECK_UNREACHABLE_HINT = (
    "Check the network, credentials and PUBSUB_EMULATOR_HOST (if it names an emulator, is it running?)."
)
CHECK_TOPIC_NOT_FOUND = "Pub/Sub topic {topic} does not exist on {endpoint}; nothing was changed."
CHECK_TOPIC_NOT_FOUND_HINT = (
    "Create it (gcloud pubsub topics create {topic_id} --project {project}) or fix HOKUSAI_PUBSUB_TOPIC."
)


@dataclass(frozen=True)
class Topic:
    """A topic as the messages name it: its full path, and the parts ``gcloud`` wants."""

    path: str
    project: str
    topic_id: str


def endpoint_description() -> str:
    """Where a client built now connects, for messages: the emulator's host or Google's service."""
    emulator = os.environ.get(EMULATOR_HOST_ENV)
    return f"the emulator at {emulator}" if emulator else "pubsub.googleapis.com"


def transient_errors() -> tuple[type[Exception], ...]:
    from google.api_core import exceptions as gexc

    return tuple(getattr(gexc, name) for name in TRANSIENT_ERRORS)


def not_authenticated(topic: Topic, exc: BaseException, *, for_check: bool) -> HokusaiError:
    """No credentials for the client: a setting to fix (exit 2), or a dead letter while delivering."""
    message = NOT_AUTHENTICATED.format(topic=topic.path, detail=detail(exc))
    if for_check:
        return InputError(message, hint=NOT_AUTHENTICATED_HINT)
    return SinkDeliveryError(message, hint=NOT_AUTHENTICATED_HINT, retryable=False)


def check_failure(exc: BaseException, topic: Topic, *, budget: float) -> HokusaiError:
    """Why reading the topic failed: it does not exist or there are no credentials (exit 2), or
    Pub/Sub (or the credentials' token endpoint) did not answer within ``budget`` (exit 4)."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exceptions

    endpoint = endpoint_description()
    if isinstance(exc, gexc.NotFound):
        return InputError(
            CHECK_TOPIC_NOT_FOUND.format(topic=topic.path, endpoint=endpoint),
            hint=CHECK_TOPIC_NOT_FOUND_HINT.format(topic_id=topic.topic_id, project=topic.project),
        )
    hiccup = isinstance(exc, auth_exceptions.GoogleAuthError) and auth_hiccup(exc)
    if not hiccup and isinstance(exc, gexc.Unauthenticated | auth_exceptions.GoogleAuthError):
        return not_authenticated(topic, exc, for_check=True)
    # Pub/Sub, or the metadata server or token endpoint (a hiccup, not a setting), did not answer
    return ServiceUnavailable(
        CHECK_UNREACHABLE.format(endpoint=endpoint, timeout=budget, detail=detail(exc)), hint=CHECK_UNREACHABLE_HINT
    )


def delivery_error(exc: BaseException, topic: Topic, *, timeout: float) -> SinkDeliveryError:
    """A failed publish as a delivery error: a dead letter when trying again cannot help (no topic,
    no permission, no credentials, a message the topic refuses), else retryable."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exceptions

    endpoint = endpoint_description()
    unreachable = UNREACHABLE.format(endpoint=endpoint, topic=topic.path, timeout=timeout, detail=detail(exc))
    if isinstance(exc, gexc.NotFound):
        return SinkDeliveryError(
            TOPIC_NOT_FOUND.format(topic=topic.path, endpoint=endpoint),
            hint=TOPIC_NOT_FOUND_HINT.format(topic_id=topic.topic_id, project=topic.project),
            retryable=False,
        )
    if isinstance(exc, gexc.PermissionDenied):
        return SinkDeliveryError(
            PERMISSION_DENIED.format(topic=topic.path), hint=PERMISSION_DENIED_HINT, retryable=False
        )
    if isinstance(exc, auth_exceptions.GoogleAuthError) and auth_hiccup(exc):
        return SinkDeliveryError(unreachable, hint=UNREACHABLE_HINT, retryable=True)
    if isinstance(exc, gexc.Unauthenticated | auth_exceptions.GoogleAuthError):
        return SinkDeliveryError(
            NOT_AUTHENTICATED.format(topic=topic.path, detail=detail(exc)), hint=NOT_AUTHENTICATED_HINT, retryable=False
        )
    if isinstance(exc, gexc.InvalidArgument | gexc.FailedPrecondition | gexc.OutOfRange):
        return SinkDeliveryError(
            REJECTED.format(topic=topic.path, detail=detail(exc)), hint=REJECTED_HINT, retryable=False
        )
    if isinstance(exc, (*transient_errors(), gexc.RetryError, TimeoutError)):
        return SinkDeliveryError(unreachable, hint=UNREACHABLE_HINT, retryable=True)
    # Anything else (a batch cancelled because an earlier message of this token failed, an
    # unexpected status) may pass on another try, and the outbox keeps the event for it.
    return SinkDeliveryError(
        PUBLISH_FAILED.format(topic=topic.path, detail=detail(exc)), hint=PUBLISH_FAILED_HINT, retryable=True
    )


def auth_hiccup(exc: BaseException) -> bool:
    """A credentials failure worth retrying: the token endpoint or metadata server did not answer
    (``TransportError``), or google-auth says so itself (``retryable``, e.g. a 5xx on refresh)."""
    from google.auth import exceptions as auth_exceptions

    return isinstance(exc, auth_exceptions.TransportError) or bool(getattr(exc, "retryable", False))


def detail(exc: BaseException) -> str:
    """A short, secret-free description of a vendor error, for one line of output."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.RetryError) and exc.cause is not None:
        return f"retries exhausted; last error: {detail(exc.cause)}"
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    if isinstance(exc, gexc.GoogleAPICallError):
        code = exc.grpc_status_code
        text = f"{code.name if code is not None else type(exc).__name__}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return redact(text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "...")
