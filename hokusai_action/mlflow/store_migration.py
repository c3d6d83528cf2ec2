"""MLflow's own database, where the tracking URI names one (the embedded ``sqlite:///`` store): its schema.

MLflow checks a database store's schema each time it opens it (``SqlAlchemyStore.__init__`` in
``mlflow/store/tracking/sqlalchemy_store.py``, MLflow 3.17). It creates and migrates missing tables
on the spot, inside whatever command opened the store, and it refuses a store whose tables are all
there at another revision ("Detected out-of-date database schema"), as a newer MLflow finds one after
a migration that only alters columns. Both happen to a ``./.hokusai/`` kept across an upgrade of the tool.

So ``db upgrade`` migrates an SQLite store to this MLflow's head, keeping a copy of it as it was and
putting that copy back if a migration fails (Alembic commits SQLite migrations one by one), and a
command that meets a store at another revision says what to run, at once, instead of retrying MLflow's
refusal as an outage until its timeout. MLflow's helpers used here are private
(``mlflow.store.db.utils``); its own ``mlflow db upgrade`` uses the same ones, and
``tests/e2e/db/test_embedded.py`` holds them to the pinned MLflow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hokusai_action.errors import InputError
from hokusai_action.redact import redact

STORE_OLDER = "The MLflow store at {uri} was written by an older MLflow (revision {found}; this MLflow needs {head})."
STORE_OLDER_HINT_SQLITE = (
    "Run `hokusai-ml-platform db upgrade`: it migrates the store and keeps a copy of it as it was. Nothing was changed."
)
STORE_OLDER_HINT = "Back it up, then migrate it with MLflow's `mlflow db upgrade <uri>`. Nothing was changed."
STORE_NEWER = (
    "The MLflow store at {uri} was written by a newer MLflow (revision {found}, which this MLflow does not know; "
    "its newest is {head})."
)
STORE_NEWER_HINT = "Use the version of hokusai-ml-platform that wrote it, or a newer one. Nothing was changed."
UNREADABLE = "The MLflow store at {uri} could not be read: {reason}."
UNREADABLE_HINT = "Check that it is an MLflow store and that this user may read and write it, then re-run."
COPY_FAILED = "The MLflow store at {uri} could not be copied to {backup} before its migration: {reason}."
COPY_FAILED_HINT = "Free some space or fix the folder's permissions, then re-run `hokusai-ml-platform db upgrade`."
UPGRADE_FAILED = (
    "The MLflow store at {uri} could not be migrated from revision {found} to {head}: {reason}. "
    "It was put back as it was."
)
UPGRADE_FAILED_HINT = "A copy of it as it was is kept in {backup}. Report this line with the MLflow version."
RESTORE_FAILED = (
    "The MLflow store at {uri} could not be migrated from revision {found} to {head} ({reason}), and could not "
    "be put back as it was ({restore})."
)
RESTORE_FAILED_HINT = "It may be half migrated: copy {backup} over {path} before anything else uses it."
CONNECT_SECONDS = 5  # a store that does not answer by then is MLflow's outage to report, not ours


@dataclass(frozen=True)
class StoreUpgrade:
    """A migration ``db upgrade`` made: the revisions before and after, and where the old store is kept."""

    before: str
    after: str
    backup: Path


@dataclass(frozen=True)
class _Schema:
    found: str | None  # None: no MLflow schema yet
    head: str
    known: bool  # found is one of this MLflow's revisions (or None)


def other_revision_error(tracking_uri: str) -> InputError | None:
    """The error for an MLflow database store at another revision than this MLflow's head; ``None`` when
    ``tracking_uri`` names no such store, or it cannot be read (then the caller's own error stands).

    For the caller to ask once MLflow has refused to open a store: a store at its head costs nothing.
    """
    try:
        from mlflow.store.db.db_types import DATABASE_ENGINES

        if tracking_uri.split(":", 1)[0].split("+", 1)[0] not in DATABASE_ENGINES:
            return None
        if tracking_uri.startswith("sqlite:"):
            path = _sqlite_path(tracking_uri)
            if path is None or not path.is_file():
                return None  # reading it would create it
        schema = _schema(tracking_uri)
    except Exception:  # unreadable: no finding of ours to add to MLflow's own failure
        return None
    if schema.found is None or schema.found == schema.head:
        return None
    return _other_revision(tracking_uri, schema)


def upgrade_sqlite_store(tracking_uri: str) -> StoreUpgrade | None:
    """Migrate the SQLite store ``tracking_uri`` names to this MLflow's head, after copying it aside
    (``<file>.<revision>.bak``, never overwritten). ``None`` when there is nothing to migrate: the store
    is at its head, or new (MLflow creates its tables when it first opens it). A failed migration puts
    the copy back."""
    from mlflow.store.db.utils import _upgrade_db

    path = _sqlite_path(tracking_uri)
    if path is None or not path.is_file():
        return None
    uri = redact(tracking_uri)
    try:
        schema = _schema(tracking_uri)
    except Exception as exc:
        raise InputError(UNREADABLE.format(uri=uri, reason=_reason(exc)), hint=UNREADABLE_HINT) from exc
    if schema.found is None or schema.found == schema.head:
        return None
    if not schema.known:
        raise _other_revision(tracking_uri, schema)
    backup = _backup_path(path, schema.found)
    try:
        _copy_store(path, backup)
    except (OSError, sqlite3.Error) as exc:
        raise InputError(
            COPY_FAILED.format(uri=uri, backup=backup, reason=_reason(exc)), hint=COPY_FAILED_HINT
        ) from exc
    engine = _engine(tracking_uri)
    try:
        _upgrade_db(engine)
    except Exception as exc:
        engine.dispose()
        failed = dict(uri=uri, found=schema.found, head=schema.head, reason=_reason(exc))
        try:
            _copy_sqlite(backup, path)
        except (OSError, sqlite3.Error) as restore:
            raise InputError(
                RESTORE_FAILED.format(**failed, restore=_reason(restore)),
                hint=RESTORE_FAILED_HINT.format(backup=backup, path=path),
            ) from exc
        raise InputError(UPGRADE_FAILED.format(**failed), hint=UPGRADE_FAILED_HINT.format(backup=backup)) from exc
    engine.dispose()
    return StoreUpgrade(before=schema.found, after=schema.head, backup=backup)


def _other_revision(tracking_uri: str, schema: _Schema) -> InputError:
    uri = redact(tracking_uri)
    if not schema.known:
        return InputError(STORE_NEWER.format(uri=uri, found=schema.found, head=schema.head), hint=STORE_NEWER_HINT)
    return InputError(
        STORE_OLDER.format(uri=uri, found=schema.found, head=schema.head),
        hint=STORE_OLDER_HINT_SQLITE if tracking_uri.startswith("sqlite:") else STORE_OLDER_HINT,
    )


def _schema(tracking_uri: str) -> _Schema:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config, _get_schema_version

    engine = _engine(tracking_uri)
    try:
        found = _get_schema_version(engine)
    finally:
        engine.dispose()
    script = ScriptDirectory.from_config(_get_alembic_config(tracking_uri))
    head = script.get_current_head()
    if head is None:  # MLflow ships its migrations: scripts without a head are a broken installation
        raise RuntimeError("MLflow's schema migrations name no head revision")
    known = found is None or any(revision.revision == found for revision in script.walk_revisions())
    return _Schema(found=found, head=head, known=known)


def _engine(tracking_uri: str) -> Any:
    # not MLflow's create_sqlalchemy_engine_with_retry: it waits minutes for a server that is down
    import sqlalchemy as sa

    url = sa.engine.make_url(tracking_uri)
    backend = url.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args["timeout"] = CONNECT_SECONDS  # a writer holding the file
    elif backend in ("postgresql", "mysql"):
        connect_args["connect_timeout"] = CONNECT_SECONDS
    return sa.create_engine(url, connect_args=connect_args)


def make_sqlite_folder(tracking_uri: str) -> None:
    """Create the folder of a ``sqlite:///`` store's file: an older MLflow (3.0) does not, and then retries
    "unable to open database file" for minutes as if a server were down."""
    if not tracking_uri.startswith("sqlite:"):
        return
    path = _sqlite_path(tracking_uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


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


def _copy_store(path: Path, backup: Path) -> None:
    """A consistent copy of the store, whatever its journal holds, with the store's permissions; a copy
    cut short (a full disk) never takes the backup's name."""
    partial = backup.with_name(backup.name + ".partial")
    try:
        _copy_sqlite(path, partial)
        shutil.copymode(path, partial)
        os.replace(partial, backup)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _copy_sqlite(source: Path, target: Path) -> None:
    with contextlib.closing(sqlite3.connect(source)) as reader, contextlib.closing(sqlite3.connect(target)) as writer:
        reader.backup(writer)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0][:400] if text else type(exc).__name__)
