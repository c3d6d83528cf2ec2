"""the signature of each registration

``tokens`` gains what a signed registration records (docs/deploy/verify.md): the method,
the signer's identity, the SHA-256 of the model bundle, of the registration statement and of its bundle,
and where the bundles live. All NULL for an unsigned registration; a reset clears them.

As in 0001, which columns this revision added is recorded in ``hokusai_schema_origin`` (row
``0003:tokens``), so downgrade removes only those and never a column of the site's of the same name.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hokusai_action.db.migrations.shared import drop_token_column, forget_added, record_added, recorded_added

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ORIGIN_ROW = "0003:tokens"


def _columns() -> list[sa.Column]:
    return [
        sa.Column("signature_method", sa.String(16)),
        sa.Column("signature_identity", sa.String(512)),
        sa.Column("signature_model_bundle_sha256", sa.String(64)),
        sa.Column("signature_statement_sha256", sa.String(64)),
        sa.Column("signature_statement_bundle_sha256", sa.String(64)),
        sa.Column("signature_bundle_uri", sa.String(1024)),
    ]


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    present = {c["name"] for c in inspector.get_columns("tokens")}
    missing = [column for column in _columns() if column.name not in present]
    if missing:
        with op.batch_alter_table("tokens") as batch:
            for column in missing:
                batch.add_column(column)
    record_added(ORIGIN_ROW, [column.name for column in missing])


def downgrade() -> None:
    ours = {column.name for column in _columns()}
    added = recorded_added(ORIGIN_ROW)
    # without the record (never expected), only our own prefixed names are taken as ours
    dropped = sorted(ours) if added is None else [name for name in added if name in ours]
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("tokens")}
    for name in dropped:
        if name in present:
            drop_token_column(name)
    forget_added(ORIGIN_ROW)
