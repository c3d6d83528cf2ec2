"""Build the registration's parts from settings. The CLI and the action entrypoint both use this;
the core never builds a client itself."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hokusai_action.events.model import CloudEventRecord
from hokusai_action.settings import Settings

if TYPE_CHECKING:
    from hokusai_action.db.store import Database
    from hokusai_action.events import EventSink
    from hokusai_action.registry import MlflowRegistry


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
    from hokusai_action.registry import MlflowRegistry

    return MlflowRegistry(
        settings.mlflow_tracking_uri,
        experiment=settings.mlflow_experiment,
        timeout=settings.mlflow_timeout,
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


def build_parts(settings: Settings) -> Parts:
    return Parts(database=build_database(settings), registry=build_registry(settings), sinks=build_sinks(settings))
