"""Revision 0004 (the registration counter, cancelled and in-flight deliveries): up and down on
PostgreSQL and SQLite. A token registered before it keeps the event ids it would have had."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from hokusai_action.db.schema import event_deliveries
from hokusai_action.db.store import Database
from hokusai_action.domain.event import event_id_for
from hokusai_action.registration.event import next_registration
from tests.schema_migrations import columns, migrate

pytestmark = [pytest.mark.integration]

DIGEST = "sha256:" + "ab" * 32


def add_history(database: Database, token_id: str, registrations: int) -> list[str]:
    """A token of revision 0003 registered ``registrations`` times (reset in between), as the tool
    numbered them then: by the token's events rows. The last event's webhook delivery is pending."""
    ids = [event_id_for(token_id, DIGEST, n) for n in range(registrations)]
    with database.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO tokens (token_id, model_status, created_at, updated_at, event_id) "
                "VALUES (:token, 'registered', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :event)"
            ),
            {"token": token_id, "event": ids[-1] if ids else None},
        )
        for event_id in ids:
            connection.execute(
                sa.text(
                    "INSERT INTO events (event_id, event_type, source, timestamp, payload, processed, token_id) "
                    "VALUES (:event, 'token_ready_for_deploy', 'test', CURRENT_TIMESTAMP, '{}', false, :token)"
                ),
                {"event": uuid.UUID(event_id).hex if database.dialect == "sqlite" else event_id, "token": token_id},
            )
    return ids


def counters(database: Database) -> dict[str, int]:
    with database.engine.connect() as connection:
        return dict(connection.execute(sa.text("SELECT token_id, registration_count FROM tokens")).all())


def test_upgrade_counts_the_registrations_so_the_next_event_id_is_the_one_it_always_was(blank_url):
    database = Database(blank_url)
    migrate(database, "upgrade", "0003")
    add_history(database, "TWICE", 2)
    add_history(database, "NEVER", 0)

    assert database.upgrade() == ("0003", "0004")

    assert counters(database) == {"TWICE": 2, "NEVER": 0}
    with database.unit_of_work() as uow:
        # what revision 0003 numbered the next registration by: the token's 2 events rows
        assert next_registration(uow, "TWICE", DIGEST) == (2, event_id_for("TWICE", DIGEST, 2))
        assert next_registration(uow, "NEVER", DIGEST) == (0, event_id_for("NEVER", DIGEST))
    database.dispose()


def test_downgrade_to_0003_drops_cancelled_deliveries_and_the_new_columns(blank_url):
    database = Database(blank_url)
    migrate(database, "upgrade", "0003")
    first, second = add_history(database, "RESET", 2)
    database.upgrade()
    with database.unit_of_work() as uow:
        uow.execute(
            event_deliveries.insert(),
            [
                {"event_id": first, "sink": "webhook", "status": "cancelled", "cancel_reason": "reset"},
                {"event_id": second, "sink": "webhook", "status": "pending", "cancel_reason": None},
            ],
        )
        uow.commit()

    migrate(database, "downgrade", "0003")

    assert database.revision() == "0003"
    assert "registration_count" not in columns(database)
    delivery_columns = {c["name"] for c in sa.inspect(database.engine).get_columns("event_deliveries")}
    assert not {"cancel_reason", "cancelled_at", "sending_since"} & delivery_columns
    with database.engine.connect() as connection:
        # the old schema cannot say "never send": the cancelled row goes, so an old relay never sends it
        left = connection.execute(sa.text("SELECT sink, status FROM event_deliveries")).all()
    assert left == [("webhook", "pending")]
    assert database.upgrade() == ("0003", "0004")
    assert counters(database) == {"RESET": 2}
    database.dispose()
