"""MLflow's own database, where the tracking URI names one (the embedded ``sqlite:///`` store): its schema.

MLflow checks a database store's schema each time it opens it (``SqlAlchemyStore.__init__`` in
``mlflow/store/tracking/sqlalchemy_store.py``, MLflow 3.17). It creates and migrates missing tables
on the spot, inside whatever command opened the store, and it refuses a store whose tables are all
there at an older revision ("Detected out-of-date database schema"), as a newer MLflow finds one after
a migration that only alters columns. Both happen to a ``./.hokusai/`` kept across an upgrade of the tool.

So ``db upgrade`` migrates an SQLite store to this MLflow's head, keeping a copy of it as it was, and a
command that meets an older store says what to run, at once, instead of retrying MLflow's refusal as
an outage until its timeout. MLflow's helpers used here are private (``mlflow.store.db.utils``); its own
``mlflow db upgrade`` uses the same ones, and ``tests/e2e/test_embedded.py`` holds them to the pinned
MLflow.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hokusai_action.errors import InputError
from hokusai_action.redact import redact

STORE_OLDER = "The MLflow store at {uri} was written by an older MLflow (revision {found}; this MLflow needs {head})."
STORE_OLDER_HINT_SQLITE = (
    "Run `hokusai-ml-platform db upgrade`: it migrates the store and keeps a copy of it as it was. Nothing was changed."
)
STORE_OLDER_HINT = "Back it up, then migrate it with MLflow's `mlflow db upgrade <uri>`. Nothing was changed."
UPGRADE_FAILED = "The MLflow store at {uri} could not be migrated from revision {found} to {head}: {reason}."
UPGRADE_FAILED_HINT = "The store as it was is kept in {backup}: copy it back over {path} before anything else uses it."


@dataclass(frozen=True)
class StoreUpgrade:
    """A migration ``db upgrade`` made: the revisions before and after, and where the old store is kept."""

    before: str
    after: str
    backup: Path


def older_store_error(tracking_uri: str) -> InputError | None:
    """The error for an MLflow database store at an older revision than this MLflow's head; ``None`` when
    ``tracking_uri`` names no such store, or it cannot be read (then the caller's own error stands).

    Called once MLflow has refused to open a store, never before: a store at its head costs nothing.
    """
    from mlflow.store.db.db_types import DATABASE_ENGINES

    if tracking_uri.split(":", 1)[0].split("+", 1)[0] not in DATABASE_ENGINES:
        return None
    sqlite = tracking_uri.startswith("sqlite:")
    if sqlite:
        path = _sqlite_path(tracking_uri)
        if path is None or not path.is_file():
            return None  # reading it would create it
    try:
        found, head = _revisions(tracking_uri)
    except Exception:  # unreadable: no finding of ours to add to MLflow's own failure
        return None
    if found is None or found == head:
        return None
    return InputError(
        STORE_OLDER.format(uri=redact(tracking_uri), found=found, head=head),
        hint=STORE_OLDER_HINT_SQLITE if sqlite else STORE_OLDER_HINT,
    )


def upgrade_sqlite_store(tracking_uri: str) -> StoreUpgrade | None:
    """Migrate the SQLite store ``tracking_uri`` names to this MLflow's head, after copying it aside
    (``<file>.<revision>.bak``). ``None`` when there is nothing to migrate: the store is at its head,
    or new (MLflow creates its tables when it first opens it)."""
    from mlflow.store.db.utils import _upgrade_db

    path = _sqlite_path(tracking_uri)
    if path is None or not path.is_file():
        return None
    found, head = _revisions(tracking_uri)
    if found is None or found == head:
        return None
    backup = _backup_path(path, found)
    with contextlib.closing(sqlite3.connect(path)) as source, contextlib.closing(sqlite3.connect(backup)) as copy:
        source.backup(copy)  # a consistent copy, whatever the store's journal holds
    engine = _engine(tracking_uri)
    try:
        _upgrade_db(engine)
    except Exception as exc:
        raise InputError(
            UPGRADE_FAILED.format(uri=redact(tracking_uri), found=found, head=head, reason=_first_line(exc)),
            hint=UPGRADE_FAILED_HINT.format(backup=backup, path=path),
        ) from exc
    finally:
        engine.dispose()
    return StoreUpgrade(before=found, after=head, backup=backup)


def _revisions(tracking_uri: str) -> tuple[str | None, str]:
    """The store's revision (``None``: no MLflow schema yet) and this MLflow's head."""
    from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version

    engine = _engine(tracking_uri)
    try:
        return _get_schema_version(engine), _get_latest_schema_revision()
    finally:
        engine.dispose()


def _engine(tracking_uri: str):
    # not MLflow's create_sqlalchemy_engine_with_retry: it waits minutes for a server that is down
    import sqlalchemy as sa

    return sa.create_engine(tracking_uri)


def _sqlite_path(tracking_uri: str) -> Path | None:
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    return Path(database) if database and database != ":memory:" else None


def _backup_path(path: Path, revision: str) -> Path:
    """``<file>.<revision>.bak``, or with a number when an earlier attempt left one: never overwritten."""
    candidate = path.with_name(f"{path.name}.{revision}.bak")
    number = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{revision}.{number}.bak")
        number += 1
    return candidate


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)
