"""One error root for everything the tool reports to a user.

Every failure a user can meet is a ``HokusaiError`` subclass carrying the process exit code fixed in
DESIGN.md. Adapters re-raise vendor exceptions as one of these with ``raise ... from exc``; the CLI
and the GitHub Action entrypoint turn them into one clear line. Code branches on the class or the
``exit_code``, never on message text.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TOKEN_STATE = 3
EXIT_SERVICE_UNAVAILABLE = 4
EXIT_EVENTS_PENDING = 5
EXIT_INTERNAL = 70  # a bug: never used for a service outage, so retry policies do not retry bugs

# What each exit code means and what to do about it: the reference documentation's table and the
# README's are generated from, or checked against, this one (tests/unit/repository/test_docs.py).
EXIT_CODES: tuple[tuple[int, str, str], ...] = (
    (EXIT_OK, "registered, or already registered with the same bytes", "nothing"),
    (
        EXIT_GATE_FAILED,
        "the metric does not meet the baseline (nothing was uploaded); for `model verify`, a check failed",
        "improve the model or revisit the baseline; a failed verification: do not deploy that version",
    ),
    (
        EXIT_BAD_INPUT,
        "bad input or settings, found before anything changed: a flag, `hokusai.yaml`, a model file or link, "
        "a sink that cannot work (missing Pub/Sub topic, unparsable webhook URL), an unreadable signing key",
        "fix what the one error line names",
    ),
    (
        EXIT_TOKEN_STATE,
        "the token's state forbids it: missing, not draft, claimed by another live run, registered with other bytes",
        "see the line; a new model needs a new token",
    ),
    (
        EXIT_SERVICE_UNAVAILABLE,
        "MLflow or the database unreachable before the commit; the token is left as it was",
        "re-run when the service is up: a finished step is not repeated",
    ),
    (
        EXIT_EVENTS_PENDING,
        "registered, but an event is still undelivered (pending, or dead-lettered after a permanent refusal)",
        "re-run the same command or `events relay`; a dead letter needs `events retry` once its cause is fixed",
    ),
    (
        EXIT_INTERNAL,
        "internal error: a bug, never an outage (so retry policies do not retry it)",
        "re-run with `--debug` (action input `debug: true`) and report the redacted traceback",
    ),
)


class HokusaiError(Exception):
    """Base of every error shown to a user: ``message`` says what happened, ``hint`` what to do."""

    exit_code: int = EXIT_BAD_INPUT
    title: str = "Hokusai registration failed"
    kind: str = "input"  # the failure's stable machine name: `--output json`'s error.kind

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The single line printed on failure (secrets are scrubbed by the caller)."""
        return f"{self.message} {self.hint}" if self.hint else self.message


class InputError(HokusaiError):
    """A flag, input, setting or file the user gave is invalid (exit 2)."""

    exit_code = EXIT_BAD_INPUT
    title = "Invalid input"
    kind = "input"


class ModelChanged(InputError):
    """A model file changed between hashing and the version's creation (exit 2): no version is made."""

    kind = "model_changed"


class TokenStateError(HokusaiError):
    """The token's state forbids this registration (exit 3)."""

    exit_code = EXIT_TOKEN_STATE
    title = "Token state forbids registration"
    kind = "token_state"


class ServiceUnavailable(HokusaiError):
    """MLflow, the database or an event sink could not be reached in time (exit 4)."""

    exit_code = EXIT_SERVICE_UNAVAILABLE
    title = "Service unreachable"
    kind = "service_unavailable"


class SinkDeliveryError(HokusaiError):
    """One event sink refused or could not take an event.

    Raised by sinks; the outbox records it against that sink's delivery row and the registration
    then exits 5 (registered, event pending). ``retryable`` tells the relay whether trying again
    can help (a 5xx or a timeout) or not (a 4xx, a missing topic).
    """

    exit_code = EXIT_EVENTS_PENDING
    title = "Event not delivered"
    kind = "event_undelivered"

    def __init__(self, message: str, *, hint: str | None = None, retryable: bool = True) -> None:
        super().__init__(message, hint=hint)
        self.retryable = retryable


class InternalError(HokusaiError):
    """A bug in this tool (exit 70): one line with the exception type; re-run with --debug and report it."""

    exit_code = EXIT_INTERNAL
    title = "Internal error"
    kind = "internal"


_TIMEOUT_NAMES = ("Timeout", "TimeoutError")  # requests' and urllib3's timeouts are not builtin TimeoutErrors


def connection_reason(exc: BaseException) -> str | None:
    """Why a request got no answer in the socket's words (``Connection refused``, ``timed out``, the
    resolver's message), found down the chain of an HTTP client's wrapped exceptions (MLflow ->
    requests -> urllib3 -> the socket) whose own text is unreadable; None when there is none."""
    reason = None
    link: BaseException | None = exc
    for _ in range(20):
        if link is None:
            break
        if isinstance(link, OSError) and link.errno is not None and link.strerror:
            reason = link.strerror  # the innermost wins: the socket's own
        elif reason is None and (isinstance(link, TimeoutError) or type(link).__name__.endswith(_TIMEOUT_NAMES)):
            reason = "timed out"
        link = link.__cause__ or link.__context__
    return reason
