"""tokens, events and per-sink event deliveries

Creates the site's documented ``tokens`` and ``events`` tables, or extends them with the columns
registration needs when the site already has them, plus ``event_deliveries`` (the outbox state).

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
STATUS_CHECK = "model_status IN ('draft', 'registering', 'registered', 'failed', 'deployed', 'archived')"


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
        sa.Column("token_id", sa.String(64), sa.ForeignKey("tokens.token_id")),
    ]


def _add_missing(table: str, columns: list[sa.Column], existing: set[str]) -> None:
    missing = [column for column in columns if column.name not in existing]
    if missing:
        with op.batch_alter_table(table) as batch:
            for column in missing:
                batch.add_column(column)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())

    if "tokens" in tables:
        _add_missing("tokens", _token_columns(), {c["name"] for c in inspector.get_columns("tokens")})
    else:
        op.create_table(
            "tokens",
            sa.Column("token_id", sa.String(64), primary_key=True),
            sa.Column("model_status", sa.String(16), nullable=False, server_default="draft"),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
            *_token_columns(),
            sa.CheckConstraint(STATUS_CHECK, name="ck_tokens_model_status"),
        )

    if "events" in tables:
        _add_missing("events", _event_columns(), {c["name"] for c in inspector.get_columns("events")})
    else:
        op.create_table(
            "events",
            sa.Column("event_id", sa.Uuid(as_uuid=False), primary_key=True),
            sa.Column("event_type", sa.String(64), nullable=False),
            sa.Column("source", sa.String(255), nullable=False),
            sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
            sa.Column("payload", JSONType, nullable=False),
            *_event_columns(),
        )
    # the site's watcher polls unprocessed rows; keep that cheap as the table grows
    op.create_index("ix_events_unprocessed", "events", ["processed", "timestamp"])

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


def downgrade() -> None:
    op.drop_index("ix_event_deliveries_pending", table_name="event_deliveries")
    op.drop_table("event_deliveries")
    op.drop_index("ix_events_unprocessed", table_name="events")
    op.drop_table("events")
    op.drop_table("tokens")
