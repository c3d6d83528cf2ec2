"""How a failed command reaches its user, the same from both faces (the command line and the action):
an outage or a bug, the one ``error:`` line, the error object of ``--output json``, the exit code;
and what every command's process sets up first (logging through redaction, SIGTERM as an exit).

A leaf beside ``errors`` and ``redact``: it imports only those and the standard library, never a face
(``hokusai_action.cli``, ``hokusai_action.action``) nor a vendor. Vendors' exception types are looked up only
among the modules already imported, so classifying a failure costs no import.
"""

from __future__ import annotations

import logging
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from hokusai_action.errors import (
    EXIT_INTERNAL,
    EXIT_SERVICE_UNAVAILABLE,
    HokusaiError,
    InternalError,
    ServiceUnavailable,
)
from hokusai_action.redact import install_log_redaction, redact

INTERNAL_ERROR = "internal error ({kind}): {detail}."
INTERNAL_HINT = "Re-run with --debug and report it."
SERVICE_OUTAGE = "a service did not answer ({kind}): {detail}."
SERVICE_OUTAGE_HINT = (
    "Check that MLflow and the database are up and reachable, then re-run: a finished step is not repeated."
)
INTERRUPTED = "Interrupted."
INTERRUPTED_TITLE = "Interrupted"
EXIT_INTERRUPTED = 130
_MAX_DETAIL = 300  # characters of the exception's first line kept in the one error line

# Raw connection-level failures that escaped an adapter: an outage (exit 4, worth a retry), not a bug
# (exit 70). Names are (module, attribute), looked up only in modules already imported, so this
# costs no import: an exception of a module that is not loaded cannot have been raised.
_OUTAGE_TYPES = (
    ("builtins", "ConnectionError"),
    ("builtins", "TimeoutError"),
    ("socket", "gaierror"),
    ("requests.exceptions", "ConnectionError"),
    ("requests.exceptions", "Timeout"),
    ("urllib3.exceptions", "NewConnectionError"),
    ("urllib3.exceptions", "MaxRetryError"),
    ("urllib3.exceptions", "ProtocolError"),
    ("urllib3.exceptions", "TimeoutError"),
    ("sqlalchemy.exc", "OperationalError"),
    ("sqlalchemy.exc", "DisconnectionError"),
    ("sqlalchemy.exc", "TimeoutError"),
    ("psycopg2", "OperationalError"),
    ("google.api_core.exceptions", "ServiceUnavailable"),
    ("google.api_core.exceptions", "DeadlineExceeded"),
    ("google.api_core.exceptions", "RetryError"),
)
_GRPC_OUTAGE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
_VENDOR_WRAPPERS = frozenset({"mlflow", "google", "grpc", "requests", "urllib3", "sqlalchemy", "psycopg2"})


@dataclass(frozen=True)
class Failure:
    """One failed command as it is reported: the ``error:`` line on stderr, with ``--output json`` the
    error object on stdout, and in the action an annotation titled ``title``. ``kind`` is the
    failure's stable machine name (``HokusaiError.kind``; ``usage`` for click's own errors,
    ``internal`` for a bug)."""

    exit_code: int
    kind: str
    message: str
    hint: str | None = None
    title: str = HokusaiError.title

    @classmethod
    def of(cls, exc: HokusaiError) -> Failure:
        return cls(exit_code=exc.exit_code, kind=exc.kind, message=exc.message, hint=exc.hint, title=exc.title)

    def line(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message

    def as_json(self) -> dict[str, Any]:
        hint = redact(self.hint) if self.hint else None
        error = {"exit_code": self.exit_code, "kind": self.kind, "message": redact(self.message), "hint": hint}
        return {"error": error}


def one_line(text: str) -> str:
    """``text`` with control characters escaped (a newline inside a value the user gave, a NUL): the
    error stays on one line and a terminal never interprets what it echoes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def error_line(text: str) -> str:
    """The one line a failure prints on stderr: redacted, on one line."""
    return f"error: {one_line(redact(text))}"


def failure_of(exc: Exception, internal_hint: str = INTERNAL_HINT) -> Failure:
    """The failure to report for ``exc``: its own for a HokusaiError, else ``unexpected``."""
    if isinstance(exc, HokusaiError):
        return Failure.of(exc)
    return unexpected(exc, internal_hint)


def unexpected(exc: BaseException, internal_hint: str = INTERNAL_HINT) -> Failure:
    """The failure of an exception that is not a HokusaiError: 4 for an outage that escaped an adapter
    raw, else 70 (a bug: retrying will not help)."""
    lines = str(exc).strip().splitlines()
    detail = lines[0].strip() if lines else "no detail"
    if len(detail) > _MAX_DETAIL:
        detail = detail[:_MAX_DETAIL] + "..."
    kind = type(exc).__name__
    if is_outage(exc):
        message = SERVICE_OUTAGE.format(kind=kind, detail=detail)
        return Failure(
            EXIT_SERVICE_UNAVAILABLE, "service_unavailable", message, SERVICE_OUTAGE_HINT, ServiceUnavailable.title
        )
    message = INTERNAL_ERROR.format(kind=kind, detail=detail)
    return Failure(EXIT_INTERNAL, "internal", message, internal_hint, InternalError.title)


def interrupted(hint: str) -> Failure:
    """Ctrl-C (or SIGINT) stopped the command: exit 130, and ``hint`` says how to resume."""
    return Failure(EXIT_INTERRUPTED, "interrupted", INTERRUPTED, hint, INTERRUPTED_TITLE)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc``, or an exception it was raised from, is a connection-level failure."""
    types = tuple(
        kind for module, name in _OUTAGE_TYPES if isinstance(kind := getattr(sys.modules.get(module), name, None), type)
    )
    grpc = sys.modules.get("grpc")
    for link in _exception_chain(exc):
        if isinstance(link, BrokenPipeError):  # our own stdout closed (`| head`): not a service
            return False
        if types and isinstance(link, types):
            return True
        if getattr(link, "connection_invalidated", False):  # SQLAlchemy: the connection dropped
            return True
        if grpc is not None and isinstance(link, grpc.RpcError):
            code = getattr(link, "code", None)
            if callable(code) and getattr(code(), "name", None) in _GRPC_OUTAGE_CODES:
                return True
    return False


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 20:
        chain.append(current)
        # explicit causes (``raise ... from``); the implicit __context__ only of a vendor's wrapper
        # (MLflow raises its MlflowException inside ``except`` without ``from``). A bug of ours, or a
        # builtin error, raised while handling an outage stays a bug: exit 70, not a retried exit 4.
        vendor = type(current).__module__.partition(".")[0] in _VENDOR_WRAPPERS
        current = current.__cause__ or (current.__context__ if vendor else None)
    return chain


def debug_traceback() -> str:
    """The traceback of the exception being handled, redacted: what ``--debug`` prints."""
    return redact(traceback.format_exc())


def start_command(*, debug: bool) -> None:
    """What a command's process sets up before it does anything: log lines (INFO under ``debug``)
    passed through ``redact``, and SIGTERM turned into an exit."""
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(message)s")
    install_log_redaction()
    install_sigterm_handler()


def install_sigterm_handler() -> None:
    """`docker stop` and CI cancellations send SIGTERM: turn it into SystemExit so a claim is released."""
    import signal

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
