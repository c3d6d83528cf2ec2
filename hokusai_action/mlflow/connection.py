"""The connection every part of the registry shares: the MLflow client, built on first use; bounded
retries for read-only calls; and the one place an MLflow failure becomes the line a user sees.

With the server down, MLflow's client retries for many minutes by default: the bounds are set here,
before the first call, and read-only calls retry connection failures themselves until ``timeout``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hokusai_action.errors import InputError, ServiceUnavailable, connection_reason
from hokusai_action.mlflow.store_migration import make_sqlite_folder, other_revision_error
from hokusai_action.mlflow.transfer_limits import TransferLimits, set_transfer_defaults
from hokusai_action.redact import redact

if TYPE_CHECKING:
    from mlflow.exceptions import MlflowException

T = TypeVar("T")

UNREACHABLE = "MLflow at {uri} did not answer within {timeout:g} s ({reason})."
UNREACHABLE_HINT = (
    "Check MLFLOW_TRACKING_URI and that the server is up; raise HOKUSAI_MLFLOW_TIMEOUT to wait longer. "
    "Nothing was uploaded."
)
REFUSED = "MLflow at {uri} refused the request (HTTP {status}): {reason}."
REFUSED_HINT = "Check MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD."
FAILED = "MLflow failed while {doing}: {reason}."
FAILED_HINT = "Re-run the same command: it resumes without a duplicate version."

MAX_RETRIES = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
REQUEST_TIMEOUT = "MLFLOW_HTTP_REQUEST_TIMEOUT"


class MlflowConnection:
    """An MLflow tracking server (or store) and the client that talks to it: the base of every part
    of ``MlflowRegistry``, which all share one client, timeout and experiment."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        experiment: str,
        timeout: float = 30.0,
        artifact_root: Path | None = None,
        transfer_limits: TransferLimits | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.timeout = timeout
        self.artifact_root = artifact_root
        self.transfer_limits = transfer_limits or TransferLimits()
        self._client: Any = None
        self._experiment_id: str | None = None
        self.unreachable_hint = UNREACHABLE_HINT  # what to do when MLflow does not answer (doctor has its own)
        # before any call: client_retries_off() restores the variables it finds, so bounds set while
        # it is active (the first client use is inside one) would be undone when it exits
        _configure_http_retries(timeout, self.transfer_limits)

    @property
    def client(self) -> Any:
        """The MLflow client, built on first use: an idempotent re-run never imports MLflow."""
        if self._client is None:
            _configure_http_retries(self.timeout, self.transfer_limits)
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # it prints the URI's user-info
            import mlflow

            from hokusai_action.mlflow.compat import migrates_stores_on_open

            if migrates_stores_on_open():  # so it never refuses one: ask before it opens the store
                other = other_revision_error(self.tracking_uri)
                if other is not None:
                    raise other
            make_sqlite_folder(self.tracking_uri)
            # some registry paths (resolving a models:/<model_id> source) use the global URI, not the client's
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    @property
    def display_uri(self) -> str:
        return redact(self.tracking_uri)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn an MLflow failure (or a failed connection) inside the block into ``ServiceUnavailable``
        (exit 4) saying what was being done, or that the server refused our credentials."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except (MlflowException, OSError) as exc:
            raise self._service_error(exc, doing) from exc

    def _service_error(self, exc: BaseException, doing: str) -> ServiceUnavailable:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            status = exc.get_http_status_code()
            if status in (401, 403):
                return ServiceUnavailable(
                    REFUSED.format(uri=self.display_uri, status=status, reason=redact(first_line(exc.message))),
                    hint=REFUSED_HINT,
                )
        return ServiceUnavailable(FAILED.format(doing=doing, reason=redact(first_line(str(exc)))), hint=FAILED_HINT)

    def _with_connection_retries(self, call: Callable[[], T], doing: str) -> T:
        """Run a read-only call, retrying connection failures until ``timeout`` seconds have passed."""
        from mlflow.exceptions import MlflowException

        deadline = time.monotonic() + self.timeout
        delay = 0.25
        with client_retries_off(), _restored(REQUEST_TIMEOUT):  # each attempt is ours: one request, no hidden retries
            while True:
                remaining = deadline - time.monotonic()
                os.environ[REQUEST_TIMEOUT] = str(max(1, int(min(10, remaining + 1))))
                try:
                    return call()
                except MlflowException as exc:
                    self._raise_unless_retryable(exc, doing)
                    last: BaseException = exc
                except OSError as exc:  # requests' ConnectionError is an OSError
                    last = exc
                if time.monotonic() + delay > deadline:
                    reason = connection_reason(last) or first_line(str(last))
                    raise ServiceUnavailable(
                        UNREACHABLE.format(uri=self.display_uri, timeout=self.timeout, reason=redact(reason)),
                        hint=self.unreachable_hint,
                    ) from last
                time.sleep(delay)
                delay = min(delay * 2, 4.0)

    def _raise_unless_retryable(self, exc: MlflowException, doing: str) -> None:
        """Raise what ``exc`` means unless it is an outage worth another attempt: a store at another
        schema revision is a setup step to name, a refusal or a client error is final."""
        if _may_be_a_store_refusal(exc):
            other = other_revision_error(self.tracking_uri)
            if other is not None:
                raise other from exc
        status = exc.get_http_status_code()
        if status in (401, 403) or not (status >= 500 or looks_like_connection_failure(exc)):
            raise self._service_error(exc, doing) from exc


def _configure_http_retries(timeout: float, limits: TransferLimits) -> None:
    """Bound MLflow's HTTP retries (read per request from the environment) unless the user set them.

    The per-request timeout of metadata calls is ``timeout``, at least 60 s; requests that carry model
    bytes get a budget that grows with their size while they run (``upload_timeouts``). Both timeout
    variables are set here, before other threads start, so an upload never adds or removes a key.
    """
    os.environ.setdefault(MAX_RETRIES, "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")
    set_transfer_defaults(limits, timeout)


def first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0][:400] if text else "no detail"


def quote(value: str) -> str:
    """``value`` for an MLflow search filter, between single quotes (which it may not hold)."""
    if "'" in value:
        raise InputError(f"Value {value!r} cannot be used in an MLflow filter.")
    return value


def looks_like_connection_failure(exc: BaseException) -> bool:
    """MLflow wraps requests' connection errors in an MlflowException without an HTTP status."""
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, OSError):
            return True
        cause = cause.__cause__ or cause.__context__
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in (
        "TEMPORARILY_UNAVAILABLE",
        "INTERNAL_ERROR",
    )


def _may_be_a_store_refusal(exc: BaseException) -> bool:
    """MLflow refuses to open a database store at another schema revision with a bare INTERNAL_ERROR
    (``mlflow.store.db.utils._verify_schema``); a database outage comes as TEMPORARILY_UNAVAILABLE with
    the driver's error as its cause, an HTTP server's answer with its status."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "INTERNAL_ERROR" and exc.__cause__ is None


@contextlib.contextmanager
def client_retries_off() -> Iterator[None]:
    """MLflow reads its retry count per request from the environment."""
    with _restored(MAX_RETRIES):
        os.environ[MAX_RETRIES] = "0"
        yield


@contextlib.contextmanager
def _restored(name: str) -> Iterator[None]:
    """Put environment variable ``name`` back as it was (set, or not) when the block ends."""
    previous = os.environ.get(name)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
