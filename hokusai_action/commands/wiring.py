"""Build the commands' parts from settings: the site database, the MLflow registry, the event sinks,
a signer and progress; each command opens and closes them here. The core never builds a client itself."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hokusai_action.domain.event import CloudEventRecord
from hokusai_action.domain.sinks import EventSink, close_sinks
from hokusai_action.errors import EXIT_BAD_INPUT, HokusaiError
from hokusai_action.redact import redact
from hokusai_action.settings.loader import Settings

if TYPE_CHECKING:
    from hokusai_action.db.store import Database
    from hokusai_action.mlflow.registry import MlflowRegistry
    from hokusai_action.progress import Reporter
    from hokusai_action.signing.signer import ModelSigner


log = logging.getLogger(__name__)

# Each sink's own check is bounded (Pub/Sub: PREFLIGHT_MAX_SECONDS); this is the join's backstop.
PREFLIGHT_JOIN_SECONDS = 10.0
SINK_NOT_CHECKED = (
    "event sink %s could not be checked before the registration (%s); going on: if it is still "
    "unreachable after the commit, the event stays pending (exit 5) for `events relay`"
)


@dataclass
class SinkChecks:
    """Read-only settings checks of the sinks, run in threads beside the model's hashing.

    ``wait()`` raises the first settings error (exit 2: a topic that does not exist, no permission to
    publish). A sink that cannot be reached is not a settings error: it is logged and the run goes on.
    """

    threads: list[threading.Thread] = field(default_factory=list)
    errors: dict[str, BaseException] = field(default_factory=dict)
    verified: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, name: str, *, detail: str | None = None, error: BaseException | None = None) -> None:
        """A check's outcome: its error, or what it verified (None: the sink had nothing to check)."""
        with self.lock:
            if error is not None:
                self.errors[name] = error
            elif detail is not None:
                self.verified[name] = detail

    def wait(self) -> None:
        for thread in self.threads:
            thread.join(PREFLIGHT_JOIN_SECONDS)
        with self.lock:  # a check still running past the join (a slow credential probe) is "not checked"
            errors, verified = dict(self.errors), dict(self.verified)
            unfinished = [t.name.removeprefix("preflight-") for t in self.threads if t.is_alive()]
        for name in unfinished:
            if name not in errors and name not in verified:
                log.warning(SINK_NOT_CHECKED, name, f"no answer within {PREFLIGHT_JOIN_SECONDS:g} s")
        for name, error in errors.items():
            if isinstance(error, HokusaiError) and error.exit_code == EXIT_BAD_INPUT:
                raise error
            detail = error.one_line() if isinstance(error, HokusaiError) else f"{type(error).__name__}: {error}"
            log.warning(SINK_NOT_CHECKED, name, redact(detail))
        for name, detail in verified.items():
            log.info("event sink %s checked: %s", name, detail)


def start_sink_checks(sinks: dict[str, EventSink]) -> SinkChecks:
    """Start each sink's ``preflight()`` in a daemon thread; ``wait()`` collects them."""
    checks = SinkChecks()

    def run(name: str, sink: EventSink) -> None:
        try:
            checks.record(name, detail=sink.preflight())
        except Exception as exc:  # collected for wait(): a thread must not die with it unseen
            checks.record(name, error=exc)

    for name, sink in sinks.items():
        thread = threading.Thread(target=run, args=(name, sink), name=f"preflight-{name}", daemon=True)
        thread.start()
        checks.threads.append(thread)
    return checks


class DatabaseSink(EventSink):
    """The site's watcher reads the ``events`` row: writing it in the registration's transaction
    (with NOTIFY on PostgreSQL) is the delivery, so there is nothing left to send afterwards."""

    name = "database"

    def deliver(self, event: CloudEventRecord) -> None:
        return None


@dataclass
class Parts:
    """What a registration is handed, built from settings (nothing is contacted yet); a context manager
    that closes the sinks and disposes of the database on the way out."""

    database: Database
    registry: MlflowRegistry
    sinks: dict[str, EventSink]
    signer: ModelSigner | None = None

    def warm_up_sinks(self) -> None:
        """Let sinks open their connections in the background while the model uploads."""
        for sink in self.sinks.values():
            threading.Thread(target=sink.prepare, name=f"prepare-{sink.name}", daemon=True).start()

    def __enter__(self) -> Parts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        close_sinks(self.sinks.values())
        self.database.dispose()


def build_database(settings: Settings) -> Database:
    from hokusai_action.db.store import Database

    return Database(settings.database_url, timeout=settings.database_timeout)


@contextlib.contextmanager
def site_database(settings: Settings) -> Iterator[Database]:
    """The site database's client (nothing contacted yet), disposed of on the way out."""
    database = build_database(settings)
    try:
        yield database
    finally:
        database.dispose()


@contextlib.contextmanager
def open_site_database(settings: Settings) -> Iterator[Database]:
    """The site database with the registration schema in place; disposed of on the way out."""
    with site_database(settings) as database:
        database.require_schema()
        yield database


def build_registry(settings: Settings) -> MlflowRegistry:
    from hokusai_action.mlflow.registry import MlflowRegistry
    from hokusai_action.mlflow.transfer_limits import TransferLimits

    return MlflowRegistry(
        settings.mlflow_tracking_uri,
        experiment=settings.mlflow_experiment,
        timeout=settings.mlflow_timeout,
        transfer_limits=TransferLimits(
            stall_seconds=settings.upload_stall_timeout, min_rate_mib_s=settings.upload_min_rate
        ),
        # the embedded SQLite store keeps artifacts beside it, not in ./mlruns of whatever folder
        artifact_root=(settings.home / "mlartifacts").resolve() if settings.uses_embedded_mlflow else None,
    )


def build_sinks(settings: Settings) -> dict[str, EventSink]:
    sinks: dict[str, EventSink] = {}
    for name in settings.event_sinks:
        if name == "database":
            sinks[name] = DatabaseSink()
        elif name == "pubsub":
            from hokusai_action.events.pubsub import PubSubSink

            assert settings.pubsub_topic  # checked by load_settings
            sinks[name] = PubSubSink(settings.pubsub_topic, timeout=settings.pubsub_timeout)
        elif name == "webhook":
            from hokusai_action.events.webhook import WebhookSink

            assert settings.webhook_url and settings.webhook_secret  # checked by load_settings
            sinks[name] = WebhookSink(
                settings.webhook_url,
                settings.webhook_secret,
                timeout=settings.webhook_timeout,
                allow_insecure_http=settings.webhook_allow_http,
            )
    return sinks


@contextlib.contextmanager
def event_sinks(settings: Settings) -> Iterator[dict[str, EventSink]]:
    """The configured sinks, closed on the way out."""
    sinks = build_sinks(settings)
    try:
        yield sinks
    finally:
        close_sinks(sinks.values())


def build_signer(settings: Settings) -> ModelSigner | None:
    """The signer of ``--sign`` (None for none). Reads nothing yet: the core calls ``check()`` before the claim."""
    if settings.sign == "none":
        return None
    from hokusai_action.signing.signer import ModelSigner

    return ModelSigner(
        settings.sign,
        key_path=settings.signing_key_path,
        key_pem=settings.signing_key_pem,
        certificate_chain=settings.signing_certificate_chain,
        identity_token=settings.sigstore_identity_token,
        oidc_request_url=settings.oidc_request_url,
        oidc_request_token=settings.oidc_request_token,
        oidc_issuer=settings.oidc_issuer,
    )


def build_progress(*, quiet: bool = False) -> Reporter:
    """Progress on stderr (a bar on a terminal, plain lines in CI and logs), or none with ``quiet``."""
    from hokusai_action.progress import Reporter

    return Reporter(quiet=quiet)


def build_parts(settings: Settings) -> Parts:
    return Parts(
        database=build_database(settings),
        registry=build_registry(settings),
        sinks=build_sinks(settings),
        signer=build_signer(settings),
    )
