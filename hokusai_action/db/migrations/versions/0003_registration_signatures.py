"""the signature of each registration

``tokens`` gains what a signed registration records (README, "Verifiable registrations"): the method,
the signer's identity, the SHA-256 of the model bundle, of the registration statement and of its bundle,
and where the bundles live. All NULL for an unsigned registration; a reset clears them.

As in 0001, which columns this revision added is recorded in ``hokusai_schema_origin`` (row
``0003:tokens``), so downgrade removes only those and never a column of the site's of the same name.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ORIGIN_TABLE = "hokusai_schema_origin"
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


def _origin() -> sa.TableClause:
    return sa.table(
        ORIGIN_TABLE,
        sa.column("table_name", sa.String),
        sa.column("created", sa.Boolean),
        sa.column("added_columns", sa.Text),
    )


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    present = {c["name"] for c in inspector.get_columns("tokens")}
    missing = [column for column in _columns() if column.name not in present]
    if missing:
        with op.batch_alter_table("tokens") as batch:
            for column in missing:
                batch.add_column(column)
    if not inspector.has_table(ORIGIN_TABLE):  # upgraded before 0001 recorded origins: nothing to record in
        return
    op.bulk_insert(
        _origin(),
        [{"table_name": ORIGIN_ROW, "created": False, "added_columns": json.dumps([c.name for c in missing])}],
    )


def downgrade() -> None:
    bind = op.get_bind()
    recorded = sa.inspect(bind).has_table(ORIGIN_TABLE)
    found = None
    if recorded:
        found = bind.execute(
            sa.text(f"SELECT added_columns FROM {ORIGIN_TABLE} WHERE table_name = :row"), {"row": ORIGIN_ROW}
        ).scalar()
    ours = {column.name for column in _columns()}
    # without the record (never expected), only our own prefixed names are taken as ours
    added = json.loads(found) if found is not None else sorted(ours)
    present = {c["name"] for c in sa.inspect(bind).get_columns("tokens")}
    for name in [n for n in added if n in present and n in ours]:
        if bind.dialect.name == "sqlite":
            # a batch rebuild of ``tokens`` would drop a table that ``events`` references
            op.execute(f'ALTER TABLE tokens DROP COLUMN "{name}"')
        else:
            op.drop_column("tokens", name)
    if recorded:
        op.execute(sa.text(f"DELETE FROM {ORIGIN_TABLE} WHERE table_name = :row").bindparams(row=ORIGIN_ROW))
