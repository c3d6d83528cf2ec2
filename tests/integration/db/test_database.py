"""Migrations and the claim on both databases the tool supports: PostgreSQL and SQLite."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from hokusai_action.db.store import Database, get_token, insert_token, release_claim, try_claim
from hokusai_action.errors import InputError, TokenStateError
from tests.schema_migrations import columns

pytestmark = [pytest.mark.integration]

EXPECTED_TOKEN_COLUMNS = {
    "token_id", "model_status", "mlflow_run_id", "metric_name", "metric_value", "baseline_value", "created_at",
    "updated_at", "metadata", "model_name", "model_version", "model_uri", "artifact_digest", "registered_at",
    "claim_owner", "claim_expires_at", "event_id",
    # revision 0003
    "signature_method", "signature_identity", "signature_model_bundle_sha256", "signature_statement_sha256",
    "signature_statement_bundle_sha256", "signature_bundle_uri",
    # revision 0004
    "registration_count",
}  # fmt: skip
SIGNATURE_COLUMNS = {c for c in EXPECTED_TOKEN_COLUMNS if c.startswith("signature_")}
OUR_TABLES = {"tokens", "events", "event_deliveries", "hokusai_schema_origin"}


def table_names(database: Database) -> set[str]:
    return set(sa.inspect(database.engine).get_table_names()) - {"alembic_version"}


def downgrade_to_base(database: Database) -> None:
    from alembic import command

    with database.engine.begin() as connection:
        command.downgrade(database._alembic_config(connection), "base")


def create_site_tables(database: Database) -> None:
    """The site's own tokens/events tables, each with a column of its own and rows."""
    uuid_type = "UUID" if database.dialect == "postgresql" else "CHAR(36)"
    with database.engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE tokens (token_id VARCHAR(64) PRIMARY KEY, model_status VARCHAR(16) NOT NULL, "
                "mlflow_run_id VARCHAR(64), created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL, "
                "site_owner VARCHAR(64))"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO tokens VALUES "
                "('OLDTOKEN', 'deployed', 'abc123', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'radiology')"
            )
        )
        connection.execute(
            sa.text(
                f"CREATE TABLE events (event_id {uuid_type} PRIMARY KEY, event_type VARCHAR(64) NOT NULL, "
                "source VARCHAR(255) NOT NULL, timestamp TIMESTAMP NOT NULL, payload JSON NOT NULL, "
                "site_channel VARCHAR(32))"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO events VALUES "
                "('0b6f3c1e-0000-4000-8000-000000000001', 'token_created', 'site', CURRENT_TIMESTAMP, '{}', 'ops')"
            )
        )


def assert_site_tables_intact(database: Database) -> None:
    assert columns(database, "tokens") == {
        "token_id", "model_status", "mlflow_run_id", "created_at", "updated_at", "site_owner"
    }  # fmt: skip
    assert columns(database, "events") == {"event_id", "event_type", "source", "timestamp", "payload", "site_channel"}
    with database.engine.connect() as connection:
        assert sorted(connection.execute(sa.text("SELECT token_id, mlflow_run_id, site_owner FROM tokens")).all()) == [
            ("NEWTOKEN", None, None),  # a row the tool created is a row of the site's table: it stays
            ("OLDTOKEN", "abc123", "radiology"),
        ]
        assert connection.execute(sa.text("SELECT event_type, site_channel FROM events")).all() == [
            ("token_created", "ops")
        ]


def test_upgrade_creates_the_schema_and_is_idempotent(blank_url):
    database = Database(blank_url)
    with pytest.raises(InputError, match="has no registration schema"):
        database.require_schema()
    assert database.upgrade() == (None, "0004")
    assert database.upgrade() == ("0004", "0004")
    database.require_schema()
    assert columns(database, "tokens") == EXPECTED_TOKEN_COLUMNS
    assert {"event_id", "event_type", "source", "timestamp", "payload", "processed", "token_id"} <= columns(
        database, "events"
    )
    assert {"event_id", "sink", "status", "attempts", "last_error", "delivered_at"} <= columns(
        database, "event_deliveries"
    )
    database.dispose()


def test_upgrade_extends_an_existing_site_tokens_table(blank_url):
    """The site already has its documented tokens/events tables with rows: keep them, add columns."""
    database = Database(blank_url)
    with database.engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE tokens (token_id VARCHAR(64) PRIMARY KEY, model_status VARCHAR(16) NOT NULL, "
                "mlflow_run_id VARCHAR(64), created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL)"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO tokens VALUES ('OLDTOKEN', 'deployed', 'abc123', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    database.upgrade()
    assert columns(database, "tokens") == EXPECTED_TOKEN_COLUMNS
    with database.unit_of_work() as uow:
        old = get_token(uow, "OLDTOKEN")
    assert old is not None
    assert (old.model_status, old.mlflow_run_id) == ("deployed", "abc123")
    database.dispose()


def test_token_create_twice_is_a_state_error(blank_url):
    database = Database(blank_url)
    database.upgrade()
    with database.unit_of_work() as uow:
        insert_token(uow, "XRAY", metadata={"owner": "radiology"})
        uow.commit()
    with pytest.raises(TokenStateError, match="Token XRAY already exists"), database.unit_of_work() as uow:
        insert_token(uow, "XRAY")
    database.dispose()


def test_the_claim_has_exactly_one_winner_among_threads(blank_url):
    database = Database(blank_url, timeout=30)
    database.upgrade()
    with database.unit_of_work() as uow:
        insert_token(uow, "RACE")
        uow.commit()
    start = threading.Barrier(8)
    winners: list[str] = []

    def contend(owner: str) -> None:
        start.wait()
        with database.unit_of_work() as uow:
            won = try_claim(uow, "RACE", owner=owner, ttl_seconds=60)
            uow.commit()
        if won:
            winners.append(owner)

    threads = [threading.Thread(target=contend, args=(f"host:{n}:x",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(winners) == 1
    with database.unit_of_work() as uow:
        token = get_token(uow, "RACE")
        assert token is not None and token.model_status == "registering" and token.claim_owner == winners[0]
        assert not release_claim(uow, "RACE", owner="host:999:someone-else")
        assert release_claim(uow, "RACE", owner=winners[0])
        uow.commit()
    with database.unit_of_work() as uow:
        assert get_token(uow, "RACE").model_status == "draft"
    database.dispose()


def test_the_heartbeat_keeps_a_short_claim_alive(blank_url):
    import time

    from hokusai_action.registration.claim import ClaimHeartbeat

    database = Database(blank_url, timeout=30)
    database.upgrade()
    with database.unit_of_work() as uow:
        insert_token(uow, "BEAT")
        assert try_claim(uow, "BEAT", owner="host:1:a", ttl_seconds=0.4)
        uow.commit()
    heartbeat = ClaimHeartbeat(database, "BEAT", "host:1:a", ttl=0.4)
    heartbeat.start()
    time.sleep(1.2)  # three TTLs: without renewals the claim would have expired twice over
    with database.unit_of_work() as uow:
        assert not try_claim(uow, "BEAT", owner="host:2:b", ttl_seconds=60)
        uow.commit()
    heartbeat.stop()
    time.sleep(0.6)
    with database.unit_of_work() as uow:
        assert try_claim(uow, "BEAT", owner="host:2:b", ttl_seconds=60)  # expired once the beats stopped
        uow.commit()
    database.dispose()


def test_downgrade_removes_only_what_upgrade_added_to_the_site_tables(blank_url):
    database = Database(blank_url)
    create_site_tables(database)
    database.upgrade()
    with database.unit_of_work() as uow:  # the tool is used before the downgrade: rows in our columns
        insert_token(uow, "NEWTOKEN")
        uow.commit()

    downgrade_to_base(database)

    assert database.revision() is None
    assert table_names(database) == {"tokens", "events"}
    assert_site_tables_intact(database)
    assert database.upgrade() == (None, "0004")  # and back up again
    database.dispose()


def test_downgrade_of_a_fresh_database_drops_what_upgrade_created(blank_url):
    database = Database(blank_url)
    database.upgrade()
    assert table_names(database) >= OUR_TABLES

    downgrade_to_base(database)

    assert database.revision() is None
    assert table_names(database) == set()
    database.dispose()


@pytest.mark.parametrize("site_tables", [True, False], ids=["site-tables", "fresh"])
def test_downgrade_of_a_database_upgraded_before_the_origin_was_recorded(blank_url, site_tables):
    """No record of who created the tables: the site's documented table has only columns we know, so
    no table is dropped (that could not be undone); only registration's own columns go."""
    database = Database(blank_url)
    if site_tables:
        create_site_tables(database)
    database.upgrade()
    with database.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE hokusai_schema_origin"))
        connection.execute(
            sa.text(
                "INSERT INTO tokens (token_id, model_status, created_at, updated_at) "
                "VALUES ('KEEPME', 'draft', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )

    downgrade_to_base(database)

    assert table_names(database) == {"tokens", "events"}
    site_own = {"site_owner"} if site_tables else set()
    # the site's documented columns stay (we cannot know which it had); registration's own go
    assert columns(database, "tokens") == EXPECTED_TOKEN_COLUMNS - {
        "model_name", "model_version", "model_uri", "artifact_digest", "registered_at", "claim_owner",
        "claim_expires_at", "event_id", *SIGNATURE_COLUMNS, "registration_count",
    } | site_own  # fmt: skip
    assert columns(database, "events") == {
        "event_id", "event_type", "source", "timestamp", "payload", "processed",
    } | ({"site_channel"} if site_tables else set())  # fmt: skip
    with database.engine.connect() as connection:
        kept = connection.execute(sa.text("SELECT token_id FROM tokens WHERE token_id = 'KEEPME'")).scalar()
    assert kept == "KEEPME"
    database.dispose()
