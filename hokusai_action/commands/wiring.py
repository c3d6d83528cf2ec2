"""Build the registration's parts from settings. The CLI and the action entrypoint both use this;
the core never builds a client itself."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hokusai_action.domain.event import CloudEventRecord
from hokusai_action.errors import EXIT_BAD_INPUT, HokusaiError
from hokusai_action.redact import redact
from hokusai_action.settings.loader import Settings

if TYPE_CHECKING:
    from hokusai_action.db.store import Database
    from hokusai_action.domain.sinks import EventSink
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
        with self.lock:
            if error is not None:
                self.errors[name] = error
            else:
                self.verified[name] = detail or ""

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
    """Start each sink's ``preflight()`` (if it has one) in a daemon thread; ``wait()`` collects them."""
    checks = SinkChecks()

    def run(name: str, preflight) -> None:
        try:
            checks.record(name, detail=preflight())
        except Exception as exc:  # collected for wait(): a thread must not die with it unseen
            checks.record(name, error=exc)

    for name, sink in sinks.items():
        preflight = getattr(sink, "preflight", None)
        if preflight is not None:
            thread = threading.Thread(target=run, args=(name, preflight), name=f"preflight-{name}", daemon=True)
            thread.start()
            checks.threads.append(thread)
    return checks


class DatabaseSink:
    """The site's watcher reads the ``events`` row: writing it in the registration's transaction
    (with NOTIFY on PostgreSQL) is the delivery, so there is nothing left to send afterwards."""

    name = "database"

    def deliver(self, event: CloudEventRecord) -> None:
        return None

    def close(self) -> None:
        return None


@dataclass
class Parts:
    database: Database
    registry: MlflowRegistry
    sinks: dict[str, EventSink]
    signer: ModelSigner | None = None

    def warm_up_sinks(self) -> None:
        """Let sinks open their connections in the background while the model uploads."""
        for sink in self.sinks.values():
            prepare = getattr(sink, "prepare", None)
            if prepare is not None:
                threading.Thread(target=prepare, name=f"prepare-{sink.name}", daemon=True).start()

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()
        self.database.dispose()


def build_database(settings: Settings) -> Database:
    from hokusai_action.db.store import Database

    return Database(settings.database_url, timeout=settings.database_timeout)


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
