"""delivery leases, dead letters and the event of each registration

- ``event_deliveries``: a lease (``lease_owner``, ``lease_until``) so one relay at a time delivers a
  row on PostgreSQL and SQLite alike; ``next_attempt_at`` for backoff between transient failures;
  status ``failed`` for a dead letter (a permanent failure kept until ``events retry``).
- ``tokens.event_id``: the event of the token's current registration. A token reset to draft and
  registered again is a new registration with a new event id; a re-run of one registration keeps it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hokusai_action.db.migrations.shared import drop_token_column

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_STATUS_CHECK = "status IN ('pending', 'delivered')"
NEW_STATUS_CHECK = "status IN ('pending', 'delivered', 'failed')"


def upgrade() -> None:
    with op.batch_alter_table("event_deliveries") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(255)))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
        batch.drop_constraint("ck_event_deliveries_status", type_="check")
        batch.create_check_constraint("ck_event_deliveries_status", NEW_STATUS_CHECK)
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("event_id", sa.String(36)))


def downgrade() -> None:
    drop_token_column("event_id")
    # a dead letter cannot be expressed in the old schema: it goes back to pending (retried)
    op.execute("UPDATE event_deliveries SET status = 'pending' WHERE status = 'failed'")
    with op.batch_alter_table("event_deliveries") as batch:
        batch.drop_constraint("ck_event_deliveries_status", type_="check")
        batch.create_check_constraint("ck_event_deliveries_status", OLD_STATUS_CHECK)
        batch.drop_column("next_attempt_at")
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
