"""a registration counter per token; cancelled deliveries; deliveries in flight

- ``tokens.registration_count``: how many registrations the token has committed. The next one's event
  id is numbered by it (``domain.event.event_id_for``), so an id is never given twice even after the
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

import sqlalchemy as sa
from alembic import op

from hokusai_action.db.migrations.shared import drop_token_column, forget_added, record_added, recorded_added

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ORIGIN_ROW = "0004:tokens"
COUNTER = "registration_count"
OLD_STATUS_CHECK = "status IN ('pending', 'delivered', 'failed')"
NEW_STATUS_CHECK = "status IN ('pending', 'delivered', 'failed', 'cancelled')"
DELIVERY_COLUMNS = ("cancel_reason", "cancelled_at", "sending_since")


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
    record_added(ORIGIN_ROW, added)


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
    added = recorded_added(ORIGIN_ROW)
    # without the record (never expected), the counter is taken as ours: no site documents it
    ours = added if added is not None else [COUNTER]
    if COUNTER in ours and COUNTER in {c["name"] for c in sa.inspect(bind).get_columns("tokens")}:
        drop_token_column(COUNTER)
    forget_added(ORIGIN_ROW)
