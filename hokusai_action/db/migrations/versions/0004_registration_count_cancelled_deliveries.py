"""a registration counter per token; cancelled deliveries; deliveries in flight

- ``tokens.registration_count``: how many registrations the token has committed. The next one's event
  id is numbered by it (``events.model.event_id_for``), so an id is never given twice even after the
  site prunes ``events`` rows. Existing tokens start at the number of their ``events`` rows, which is
  what the id was numbered by until now: their next registration gets the id it would have had.
- ``event_deliveries`` status ``cancelled`` (with ``cancel_reason`` and ``cancelled_at``): a delivery of
  a registration the token no longer holds (reset to draft) is never sent, and ``events retry`` leaves
  it alone.
- ``event_deliveries.sending_since``: set while a relay is sending the row, so that a reset can tell a
  delivery on its way (which it cannot call back: it refuses) from one merely leased (which it cancels).

As in 0003, which ``tokens`` column this revision added is recorded in ``hokusai_schema_origin`` (row
``0004:tokens``), so downgrade removes only that and never a column of the site's of the same name.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ORIGIN_TABLE = "hokusai_schema_origin"
ORIGIN_ROW = "0004:tokens"
COUNTER = "registration_count"
OLD_STATUS_CHECK = "status IN ('pending', 'delivered', 'failed')"
NEW_STATUS_CHECK = "status IN ('pending', 'delivered', 'failed', 'cancelled')"
DELIVERY_COLUMNS = ("cancel_reason", "cancelled_at", "sending_since")


def _origin() -> sa.TableClause:
    return sa.table(
        ORIGIN_TABLE,
        sa.column("table_name", sa.String),
        sa.column("created", sa.Boolean),
        sa.column("added_columns", sa.Text),
    )


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    added = []
    if COUNTER not in {c["name"] for c in inspector.get_columns("tokens")}:
        with op.batch_alter_table("tokens") as batch:
            batch.add_column(sa.Column(COUNTER, sa.Integer, nullable=False, server_default="0"))
        added.append(COUNTER)
        # the number the next registration's event id would have had: the token's events rows
        op.execute(
            f"UPDATE tokens SET {COUNTER} = (SELECT count(*) FROM events WHERE events.token_id = tokens.token_id)"
        )
    with op.batch_alter_table("event_deliveries") as batch:
        batch.add_column(sa.Column("cancel_reason", sa.Text))
        batch.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("sending_since", sa.DateTime(timezone=True)))
        batch.drop_constraint("ck_event_deliveries_status", type_="check")
        batch.create_check_constraint("ck_event_deliveries_status", NEW_STATUS_CHECK)
    if inspector.has_table(ORIGIN_TABLE):
        op.bulk_insert(_origin(), [{"table_name": ORIGIN_ROW, "created": False, "added_columns": json.dumps(added)}])


def downgrade() -> None:
    bind = op.get_bind()
    # the old schema cannot say "never send this": a cancelled delivery's row goes (its event stays), so
    # no relay of the old release sends it and no `events retry` revives it
    op.execute("DELETE FROM event_deliveries WHERE status = 'cancelled'")
    with op.batch_alter_table("event_deliveries") as batch:
        batch.drop_constraint("ck_event_deliveries_status", type_="check")
        batch.create_check_constraint("ck_event_deliveries_status", OLD_STATUS_CHECK)
        for name in reversed(DELIVERY_COLUMNS):
            batch.drop_column(name)
    recorded = sa.inspect(bind).has_table(ORIGIN_TABLE)
    found = None
    if recorded:
        found = bind.execute(
            sa.text(f"SELECT added_columns FROM {ORIGIN_TABLE} WHERE table_name = :row"), {"row": ORIGIN_ROW}
        ).scalar()
    # without the record (never expected), the counter is taken as ours: no site documents it
    added = json.loads(found) if found is not None else [COUNTER]
    if COUNTER in added and COUNTER in {c["name"] for c in sa.inspect(bind).get_columns("tokens")}:
        if bind.dialect.name == "sqlite":
            # a batch rebuild of ``tokens`` would drop a table that ``events`` references
            op.execute(f'ALTER TABLE tokens DROP COLUMN "{COUNTER}"')
        else:
            op.drop_column("tokens", COUNTER)
    if recorded:
        op.execute(sa.text(f"DELETE FROM {ORIGIN_TABLE} WHERE table_name = :row").bindparams(row=ORIGIN_ROW))
