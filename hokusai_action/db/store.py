"""The database: connecting, migrating, the unit of work, and the token queries of a registration.

``UnitOfWork`` rolls back unless ``commit()`` is called, so an exception anywhere inside a
registration step leaves the database as it was. The claim (draft -> registering) is a single
conditional ``UPDATE``: PostgreSQL re-checks its ``WHERE`` after a concurrent writer commits and
SQLite serialises writers, so on both exactly one run wins.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from hokusai_action.db.schema import events, tokens
from hokusai_action.domain.event import event_id_for
from hokusai_action.domain.statuses import DONE_STATUSES, DRAFT, REGISTERED, REGISTERING
from hokusai_action.errors import InputError, ServiceUnavailable, TokenStateError
from hokusai_action.failpoints import failpoint
from hokusai_action.redact import redact

HEAD_REVISION = "0004"
# Connections one process holds at most on a server database (PostgreSQL): the main thread and one
# more (the claim heartbeat during an upload, or a second sink's delivery thread). No code path
# nests one unit of work inside another, so two never wait on each other. `events relay --follow`
# holds one more, outside the pool, for LISTEN.
POOL_SIZE = 2
APPLICATION_NAME = "hokusai-ml-platform"  # pg_stat_activity.application_name of every connection

DB_UNREACHABLE = "The Hokusai database at {url} is unreachable: {reason}."
DB_UNREACHABLE_HINT = "Check HOKUSAI_DATABASE_URL and that the server is up. Nothing was changed."
DB_BAD_URL = "HOKUSAI_DATABASE_URL is not a valid SQLAlchemy URL ({reason})."
DB_BAD_URL_HINT = "Use e.g. postgresql+psycopg2://user@host:5432/hokusai or sqlite:///hokusai.db."
SCHEMA_MISSING = "The Hokusai database at {url} has no registration schema (revision {found}, need {head})."
SCHEMA_MISSING_HINT = "Run `hokusai-ml-platform db upgrade` against it first."
TOKEN_EXISTS = "Token {token} already exists (status {status})."
TOKEN_EXISTS_HINT = "Use `hokusai-ml-platform token show {token}` to see it."
TOKEN_MISSING = "Token {token} does not exist in the Hokusai database at {url}."
TOKEN_MISSING_HINT = "Create it on the Hokusai site (or `hokusai-ml-platform token create {token}`), then re-run."
TOKEN_CLAIMED = "Token {token} is being registered by another run ({owner}, claim expires {expires})."
TOKEN_CLAIMED_RESET_HINT = "It was not reset: wait for that run to finish (or its claim to expire), then reset it."
TOKEN_CHANGED = "Token {token} changed twice while it was being reset."
TOKEN_CHANGED_HINT = "Nothing was changed: run the reset again."
# revision 0003: a signed registration's signature; without the prefix, the event's data.signature keys
SIGNATURE_COLUMNS = (
    "signature_method",
    "signature_identity",
    "signature_model_bundle_sha256",
    "signature_statement_sha256",
    "signature_statement_bundle_sha256",
    "signature_bundle_uri",
)
# what a registration writes on a token; a reset clears all of it (the events stay: they happened)
REGISTRATION_COLUMNS = (
    "mlflow_run_id",
    "metric_name",
    "metric_value",
    "baseline_value",
    "model_name",
    "model_version",
    "model_uri",
    "artifact_digest",
    "registered_at",
    "claim_owner",
    "claim_expires_at",
    "event_id",
    *SIGNATURE_COLUMNS,
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Token:
    token_id: str
    model_status: str
    mlflow_run_id: str | None
    metric_name: str | None
    metric_value: float | None
    baseline_value: float | None
    model_name: str | None
    model_version: str | None
    model_uri: str | None
    artifact_digest: str | None
    registered_at: dt.datetime | None
    claim_owner: str | None
    claim_expires_at: dt.datetime | None
    created_at: dt.datetime | None
    updated_at: dt.datetime | None
    metadata: Any
    event_id: str | None = None  # the event of the current registration (NULL before revision 0002)
    signature: dict[str, str] | None = None  # revision 0003: the signature columns, None when unsigned
    registration_count: int = 0  # revision 0004: registrations committed; numbers the next event id

    @classmethod
    def from_row(cls, row: Any) -> Token:
        m = row._mapping
        return cls(
            token_id=m["token_id"],
            model_status=m["model_status"],
            mlflow_run_id=m["mlflow_run_id"],
            metric_name=m["metric_name"],
            metric_value=m["metric_value"],
            baseline_value=m["baseline_value"],
            model_name=m["model_name"],
            model_version=m["model_version"],
            model_uri=m["model_uri"],
            artifact_digest=m["artifact_digest"],
            registered_at=as_utc(m["registered_at"]),
            claim_owner=m["claim_owner"],
            claim_expires_at=as_utc(m["claim_expires_at"]),
            created_at=as_utc(m["created_at"]),
            updated_at=as_utc(m["updated_at"]),
            metadata=m["metadata_"],
            event_id=m["event_id"],
            signature=_signature_of(m),
            registration_count=m["registration_count"] or 0,
        )

    @property
    def registered_event_id(self) -> str | None:
        """The event of the registration the token records; rows registered before revision 0002 lack
        the column, and their registration was the token's first (the id formula of that time)."""
        if self.event_id:
            return self.event_id
        return event_id_for(self.token_id, self.artifact_digest) if self.artifact_digest else None

    @property
    def holds(self) -> str | None:
        """The event of the registration the token holds now (registered or deployed), else None: the
        one event of the token that may be delivered (and deployed)."""
        return self.registered_event_id if self.model_status in DONE_STATUSES else None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, dt.datetime) else value
        return out


def _signature_of(m: Any) -> dict[str, str] | None:
    """The row's signature columns as the event's ``data.signature`` keys; None when unsigned."""
    if not m.get("signature_method"):
        return None
    return {column.removeprefix("signature_"): m[column] for column in SIGNATURE_COLUMNS}


class UnitOfWork:
    """One transaction. Leaving the ``with`` block without ``commit()`` rolls it back."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._committed = False

    def __enter__(self) -> UnitOfWork:
        try:
            self.connection = self._database.engine.connect()
        except sa_exc.SQLAlchemyError as exc:
            raise self._database.unreachable(exc) from exc
        self._transaction = self.connection.begin()
        return self

    def commit(self) -> None:
        try:
            self._transaction.commit()
        except sa_exc.OperationalError as exc:
            raise self._database.unreachable(exc) from exc
        self._committed = True

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if not self._committed and self._transaction.is_active:
                self._transaction.rollback()
        except sa_exc.SQLAlchemyError:
            pass  # the connection is gone: the server rolls the transaction back itself
        finally:
            self.connection.close()

    @property
    def dialect(self) -> str:
        return self.connection.dialect.name

    def execute(self, statement: Any, *args: Any) -> Any:
        try:
            return self.connection.execute(statement, *args)
        except sa_exc.OperationalError as exc:
            raise self._database.unreachable(exc) from exc


class Database:
    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        try:
            parsed = sa.engine.make_url(url)
        except (sa_exc.ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is not a number
            raise InputError(DB_BAD_URL.format(reason=redact(str(exc))), hint=DB_BAD_URL_HINT) from exc
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the site and this tool use psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg2")
        self.url = url
        self.display_url = redact(parsed.render_as_string(hide_password=True))
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            connect_args["timeout"] = timeout
        elif parsed.get_backend_name() == "postgresql":
            connect_args["connect_timeout"] = max(1, math.ceil(timeout))
            connect_args["application_name"] = APPLICATION_NAME
        pool: dict[str, Any] = {}
        if parsed.get_backend_name() != "sqlite":
            # a bounded pool: 16 registrations at once must not hold 16 x 15 server connections (the
            # default pool_size 5 + max_overflow 10). A thread that finds both in use waits for one
            # (every hold is one short transaction), at most `timeout` seconds, then reports an outage.
            pool = {"pool_size": POOL_SIZE, "max_overflow": 0, "pool_timeout": timeout}
        try:
            self.engine = sa.create_engine(parsed, connect_args=connect_args, pool_pre_ping=True, **pool)
        except (sa_exc.ArgumentError, ImportError) as exc:
            raise InputError(DB_BAD_URL.format(reason=redact(str(exc))), hint=DB_BAD_URL_HINT) from exc
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def unreachable(self, exc: BaseException) -> ServiceUnavailable:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return ServiceUnavailable(
            DB_UNREACHABLE.format(url=self.display_url, reason=redact(reason[0] if reason else "no detail")),
            hint=DB_UNREACHABLE_HINT,
        )

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self)

    def dispose(self) -> None:
        self.engine.dispose()

    # --------------------------------------------------------------------------- migrations

    def _alembic_config(self, connection: sa.Connection) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        config.attributes["connection"] = connection
        return config

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except sa_exc.OperationalError as exc:
            raise self.unreachable(exc) from exc

    def upgrade(self) -> tuple[str | None, str | None]:
        """Bring the schema to the newest revision; return (before, after)."""
        from alembic import command

        before = self.revision()
        try:
            with self.engine.begin() as connection:
                command.upgrade(self._alembic_config(connection), "head")
        except sa_exc.OperationalError as exc:
            raise self.unreachable(exc) from exc
        return before, self.revision()

    def require_schema(self) -> None:
        # a plain read of Alembic's table: importing Alembic costs more than the whole check
        try:
            with self.engine.connect() as connection:
                found = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        except sa_exc.OperationalError as exc:
            if _is_missing_table(exc):
                found = None
            else:
                raise self.unreachable(exc) from exc
        except sa_exc.ProgrammingError:  # PostgreSQL: relation "alembic_version" does not exist
            found = None
        if found != HEAD_REVISION:
            # a missing schema is a setup step the user must take, not an outage: exit 2
            raise InputError(
                SCHEMA_MISSING.format(url=self.display_url, found=found or "none", head=HEAD_REVISION),
                hint=SCHEMA_MISSING_HINT,
            )


def _is_missing_table(exc: sa_exc.OperationalError) -> bool:
    """SQLite reports a missing table as an OperationalError; a connection failure has no such text."""
    return "no such table" in str(getattr(exc, "orig", exc))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the one writer
    cursor.close()


# ------------------------------------------------------------------------------------ tokens


def get_token(uow: UnitOfWork, token_id: str, *, share_lock: bool = False) -> Token | None:
    """The token, or None. ``share_lock`` (PostgreSQL) holds the row against a concurrent reset until
    the transaction ends (SQLite serialises writers: a conditional write there does the same)."""
    query = sa.select(tokens).where(tokens.c.token_id == token_id)
    if share_lock and uow.dialect == "postgresql":
        query = query.with_for_update(read=True)
    row = uow.execute(query).first()
    return Token.from_row(row) if row else None


def token_missing(token_id: str, url: str) -> TokenStateError:
    return TokenStateError(
        TOKEN_MISSING.format(token=token_id, url=url), hint=TOKEN_MISSING_HINT.format(token=token_id)
    )


def token_claimed(token: Token, *, hint: str) -> TokenStateError:
    expires = token.claim_expires_at.isoformat(timespec="seconds") if token.claim_expires_at else "never"
    return TokenStateError(
        TOKEN_CLAIMED.format(token=token.token_id, owner=token.claim_owner, expires=expires), hint=hint
    )


def count_events(uow: UnitOfWork, token_id: str) -> int:
    """How many events ``token_id`` has had: one per registration, kept across resets."""
    return uow.execute(sa.select(sa.func.count()).select_from(events).where(events.c.token_id == token_id)).scalar_one()


def insert_token(uow: UnitOfWork, token_id: str, *, metadata: dict[str, Any] | None = None) -> Token:
    existing = get_token(uow, token_id)
    if existing is not None:
        raise TokenStateError(
            TOKEN_EXISTS.format(token=token_id, status=existing.model_status),
            hint=TOKEN_EXISTS_HINT.format(token=token_id),
        )
    now = utcnow()
    try:
        uow.execute(
            tokens.insert().values(
                token_id=token_id,
                model_status=DRAFT,
                created_at=now,
                updated_at=now,
                metadata_=metadata or {},
            )
        )
    except sa_exc.IntegrityError as exc:  # created by someone else between our read and insert
        raise TokenStateError(
            TOKEN_EXISTS.format(token=token_id, status="unknown"),
            hint=TOKEN_EXISTS_HINT.format(token=token_id),
        ) from exc
    token = get_token(uow, token_id)
    assert token is not None
    return token


def try_claim(
    uow: UnitOfWork, token_id: str, *, owner: str, ttl_seconds: float, stale_owner: str | None = None
) -> bool:
    """draft -> registering for ``owner``. Also takes an expired claim, or ``stale_owner``'s claim."""
    now = utcnow()
    takeable = sa.or_(
        tokens.c.model_status == DRAFT,
        sa.and_(tokens.c.model_status == REGISTERING, tokens.c.claim_expires_at < now),
    )
    if stale_owner is not None:
        takeable = sa.or_(takeable, sa.and_(tokens.c.model_status == REGISTERING, tokens.c.claim_owner == stale_owner))
    result = uow.execute(
        tokens.update()
        .where(tokens.c.token_id == token_id, takeable)
        .values(
            model_status=REGISTERING,
            claim_owner=owner,
            claim_expires_at=now + dt.timedelta(seconds=ttl_seconds),
            updated_at=now,
        )
    )
    return result.rowcount == 1


def renew_claim(uow: UnitOfWork, token_id: str, *, owner: str, ttl_seconds: float) -> bool:
    """Push the claim's expiry forward, only while ``owner`` still holds it."""
    return _update_claimed(uow, token_id, owner=owner, claim_expires_at=utcnow() + dt.timedelta(seconds=ttl_seconds))


def release_claim(uow: UnitOfWork, token_id: str, *, owner: str) -> bool:
    """registering -> draft, only if ``owner`` still holds the claim."""
    return _update_claimed(
        uow, token_id, owner=owner, model_status=DRAFT, claim_owner=None, claim_expires_at=None, updated_at=utcnow()
    )


def mark_registered(uow: UnitOfWork, token_id: str, *, owner: str, values: dict[str, Any]) -> bool:
    """registering -> registered with the registration's fields, only if ``owner`` holds the claim."""
    return _update_claimed(
        uow,
        token_id,
        owner=owner,
        model_status=REGISTERED,
        claim_owner=None,
        claim_expires_at=None,
        updated_at=utcnow(),
        **values,
    )


def _update_claimed(uow: UnitOfWork, token_id: str, *, owner: str, **values: Any) -> bool:
    """Write ``values`` on the token only while ``owner`` holds its claim; whether it did."""
    claimed = (tokens.c.token_id == token_id, tokens.c.model_status == REGISTERING, tokens.c.claim_owner == owner)
    result = uow.execute(tokens.update().where(*claimed).values(**values))
    return result.rowcount == 1


def reset_token(uow: UnitOfWork, token_id: str, *, url: str) -> Token:
    """Any status -> draft, clearing what registration wrote; refused while a live run holds the claim.

    Returns the token as it was. The write is conditional on what was read (status, claim, event), so a
    claim taken between the read and the write is never reset away: on PostgreSQL the row is also
    locked while it is read; on SQLite the read is not inside the write transaction, and a write that
    finds the row changed reads it again, now under SQLite's one write lock. The events stay: they
    happened; ``outbox.cancel_undelivered`` withdraws their undelivered deliveries in the same transaction.
    """
    for _ in range(2):
        row = _read_for_reset(uow, token_id, url=url)
        failpoint("reset_after_read")
        unchanged = [
            column.is_(None) if row._mapping[column.key] is None else column == row._mapping[column.key]
            for column in (tokens.c.model_status, tokens.c.claim_owner, tokens.c.claim_expires_at, tokens.c.event_id)
        ]
        written = uow.execute(
            tokens.update()
            .where(tokens.c.token_id == token_id, *unchanged)
            .values(model_status=DRAFT, updated_at=utcnow(), **dict.fromkeys(REGISTRATION_COLUMNS))
        )
        if written.rowcount == 1:
            return Token.from_row(row)
    raise TokenStateError(TOKEN_CHANGED.format(token=token_id), hint=TOKEN_CHANGED_HINT)


def _read_for_reset(uow: UnitOfWork, token_id: str, *, url: str) -> Any:
    query = sa.select(tokens).where(tokens.c.token_id == token_id)
    if uow.dialect == "postgresql":
        query = query.with_for_update()
    row = uow.execute(query).first()
    if row is None:
        raise token_missing(token_id, url)
    before = Token.from_row(row)
    if before.model_status == REGISTERING and not (before.claim_expires_at and before.claim_expires_at < utcnow()):
        raise token_claimed(before, hint=TOKEN_CLAIMED_RESET_HINT)
    return row
