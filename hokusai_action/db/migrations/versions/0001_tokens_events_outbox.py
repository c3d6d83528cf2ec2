"""tokens, events and per-sink event deliveries

Creates the site's documented ``tokens`` and ``events`` tables, or extends them with the columns
registration needs when the site already has them, plus ``event_deliveries`` (the outbox state).
Which of the two it did is recorded in ``hokusai_schema_origin``, so that downgrade removes only what
upgrade added and never a table of the site's.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
STATUS_CHECK = "model_status IN ('draft', 'registering', 'registered', 'failed', 'deployed', 'archived')"
ORIGIN_TABLE = "hokusai_schema_origin"
# the site's documented columns (DESIGN.md); the rest of ours exist only for registration
SITE_COLUMNS = {
    "tokens": {
        "token_id", "model_status", "mlflow_run_id", "metric_name", "metric_value", "baseline_value",
        "created_at", "updated_at", "metadata",
    },
    "events": {"event_id", "event_type", "source", "timestamp", "payload", "processed"},
}  # fmt: skip


def _token_columns() -> list[sa.Column]:
    return [
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("metric_name", sa.String(64)),
        sa.Column("metric_value", sa.Float),
        sa.Column("baseline_value", sa.Float),
        sa.Column("metadata", JSONType),
        sa.Column("model_name", sa.String(255)),
        sa.Column("model_version", sa.String(32)),
        sa.Column("model_uri", sa.String(1024)),
        sa.Column("artifact_digest", sa.String(80)),
        sa.Column("registered_at", sa.DateTime(timezone=True)),
        sa.Column("claim_owner", sa.String(255)),
        sa.Column("claim_expires_at", sa.DateTime(timezone=True)),
    ]


def _event_columns() -> list[sa.Column]:
    return [
        sa.Column("processed", sa.Boolean, nullable=False, server_default=sa.false()),
        # named: SQLite adds it to a site table by a batch rebuild, which needs constraint names
        sa.Column("token_id", sa.String(64), sa.ForeignKey("tokens.token_id", name="fk_events_token_id")),
    ]


def _add_missing(table: str, columns: list[sa.Column], existing: set[str]) -> list[str]:
    missing = [column for column in columns if column.name not in existing]
    if missing:
        with op.batch_alter_table(table) as batch:
            for column in missing:
                batch.add_column(column)
    return [column.name for column in missing]


def _our_columns(table: str) -> set[str]:
    """Every column this revision gives ``table`` when it creates it."""
    own = _token_columns() if table == "tokens" else _event_columns()
    return SITE_COLUMNS[table] | {column.name for column in own}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    # table -> the columns added to the site's table; None: created
    origin: dict[str, list[str] | None] = {
        "tokens": _extend_or_create("tokens", inspector, tables, create=_create_tokens),
        "events": _extend_or_create("events", inspector, tables, create=_create_events),
    }
    # the site's watcher polls unprocessed rows; keep that cheap as the table grows
    op.create_index("ix_events_unprocessed", "events", ["processed", "timestamp"])
    _create_deliveries()
    _record_origin(origin)


def _extend_or_create(table: str, inspector: Any, tables: set[str], *, create: Callable[[], None]) -> list[str] | None:
    """Add our columns to the site's ``table`` (the names added), or create it (None)."""
    if table in tables:
        own = _token_columns() if table == "tokens" else _event_columns()
        return _add_missing(table, own, {c["name"] for c in inspector.get_columns(table)})
    create()
    return None


def _create_tokens() -> None:
    op.create_table(
        "tokens",
        sa.Column("token_id", sa.String(64), primary_key=True),
        sa.Column("model_status", sa.String(16), nullable=False, server_default="draft"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        *_token_columns(),
        sa.CheckConstraint(STATUS_CHECK, name="ck_tokens_model_status"),
    )


def _create_events() -> None:
    op.create_table(
        "events",
        sa.Column("event_id", sa.Uuid(as_uuid=False), primary_key=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        *_event_columns(),
    )


def _create_deliveries() -> None:
    op.create_table(
        "event_deliveries",
        sa.Column("event_id", sa.Uuid(as_uuid=False), sa.ForeignKey("events.event_id"), primary_key=True),
        sa.Column("sink", sa.String(16), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('pending', 'delivered')", name="ck_event_deliveries_status"),
    )
    op.create_index("ix_event_deliveries_pending", "event_deliveries", ["status", "sink"])


def _record_origin(origin: dict[str, list[str] | None]) -> None:
    record = op.create_table(
        ORIGIN_TABLE,
        sa.Column("table_name", sa.String(64), primary_key=True),
        sa.Column("created", sa.Boolean, nullable=False),
        sa.Column("added_columns", sa.Text, nullable=False),  # JSON list
    )
    op.bulk_insert(
        record,
        [
            {"table_name": table, "created": added is None, "added_columns": json.dumps(added or [])}
            for table, added in origin.items()
        ],
    )


def downgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    origin: dict[str, tuple[bool, list[str]]] = {}
    if inspector.has_table(ORIGIN_TABLE):
        for row in bind.execute(sa.text(f"SELECT table_name, created, added_columns FROM {ORIGIN_TABLE}")):
            origin[row.table_name] = (bool(row.created), json.loads(row.added_columns))
        op.drop_table(ORIGIN_TABLE)

    op.drop_index("ix_event_deliveries_pending", table_name="event_deliveries")
    op.drop_table("event_deliveries")
    op.drop_index("ix_events_unprocessed", table_name="events")
    for table in ("events", "tokens"):  # events first: it refers to tokens
        _undo(table, origin.get(table), {c["name"] for c in inspector.get_columns(table)})


def _undo(table: str, origin: tuple[bool, list[str]] | None, present: set[str]) -> None:
    """Drop ``table`` only if this revision created it and it holds nothing of the site's; otherwise
    drop only the columns this revision added to it.

    Databases upgraded before the origin was recorded have no record, and the site's documented
    table has only columns we know: without proof that we created it, a table is never dropped (a
    table left behind can be dropped by hand; a dropped one cannot be brought back), only our
    registration-only columns go.
    """
    ours = _our_columns(table)
    if origin is None:
        created, added = False, sorted(ours - SITE_COLUMNS[table])
    else:
        created, added = origin
    if created and present <= ours:
        op.drop_table(table)
        return
    if created:  # the site added columns of its own to a table we created: keep the table and its data
        added = sorted(ours - SITE_COLUMNS[table])
    _drop_columns(table, [name for name in added if name in present])


def _drop_columns(table: str, names: list[str]) -> None:
    if not names:
        return
    if op.get_bind().dialect.name == "sqlite" and table == "tokens":
        # a batch rebuild of ``tokens`` would drop a table that ``events`` references (SQLite 3.35+)
        for name in names:
            op.execute(f'ALTER TABLE tokens DROP COLUMN "{name}"')
        return
    # ``events.token_id`` carries a foreign key, which SQLite's DROP COLUMN refuses: rebuild instead
    # (nothing refers to ``events`` once ``event_deliveries`` is gone)
    with op.batch_alter_table(table) as batch:
        for name in names:
            batch.drop_column(name)
