"""Tables of the Hokusai site database that registration reads and writes (SQLAlchemy Core).

The shapes follow the site's documented ``tokens`` and ``events`` tables; the Alembic migrations in
``migrations/versions`` create or extend them. This module describes them for queries only.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from hokusai_action.domain.statuses import DRAFT, PENDING

metadata = sa.MetaData()


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_id", sa.String(64), primary_key=True),
    sa.Column("model_status", sa.String(16), nullable=False, server_default=DRAFT),
    sa.Column("mlflow_run_id", sa.String(64)),
    sa.Column("metric_name", sa.String(64)),
    sa.Column("metric_value", sa.Float),
    sa.Column("baseline_value", sa.Float),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("metadata", JSONType, key="metadata_"),
    sa.Column("model_name", sa.String(255)),
    sa.Column("model_version", sa.String(32)),
    sa.Column("model_uri", sa.String(1024)),
    sa.Column("artifact_digest", sa.String(80)),
    sa.Column("registered_at", sa.DateTime(timezone=True)),
    sa.Column("claim_owner", sa.String(255)),
    sa.Column("claim_expires_at", sa.DateTime(timezone=True)),
    sa.Column("event_id", sa.String(36)),  # the event of the current registration (revision 0002)
    # revision 0003: the registration's signature (all NULL when unsigned)
    sa.Column("signature_method", sa.String(16)),
    sa.Column("signature_identity", sa.String(512)),
    sa.Column("signature_model_bundle_sha256", sa.String(64)),
    sa.Column("signature_statement_sha256", sa.String(64)),
    sa.Column("signature_statement_bundle_sha256", sa.String(64)),
    sa.Column("signature_bundle_uri", sa.String(1024)),
    # revision 0004: registrations committed so far; numbers the next one's event id
    sa.Column("registration_count", sa.Integer, nullable=False, server_default="0"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("processed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("token_id", sa.String(64), sa.ForeignKey("tokens.token_id"), nullable=False),
)

event_deliveries = sa.Table(
    "event_deliveries",
    metadata,
    sa.Column("event_id", sa.Uuid(as_uuid=False), sa.ForeignKey("events.event_id"), primary_key=True),
    sa.Column("sink", sa.String(16), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, server_default=PENDING),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    # revision 0002: one relay at a time holds a row's lease; backoff between transient failures
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    # revision 0004: why and when a delivery was cancelled (never sent); set while a relay is sending it
    sa.Column("cancel_reason", sa.Text),
    sa.Column("cancelled_at", sa.DateTime(timezone=True)),
    sa.Column("sending_since", sa.DateTime(timezone=True)),
)
