"""Revision 0003 (the registration's signature columns): up and down on PostgreSQL and SQLite, and
a column of the site's that happens to have one of our names is never dropped."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from hokusai_action.db.store import SIGNATURE_COLUMNS, Database
from tests.schema_migrations import columns, migrate

pytestmark = [pytest.mark.integration]


def test_downgrade_to_0002_removes_the_signature_columns_and_upgrade_restores_them(blank_url):
    database = Database(blank_url)
    database.upgrade()
    assert set(SIGNATURE_COLUMNS) <= columns(database)

    migrate(database, "downgrade", "0002")

    assert database.revision() == "0002"
    assert not set(SIGNATURE_COLUMNS) & columns(database)
    assert {"event_id", "artifact_digest"} <= columns(database)
    migrate(database, "upgrade", "0003")
    assert database.revision() == "0003"
    assert set(SIGNATURE_COLUMNS) <= columns(database)
    database.dispose()


def test_a_site_column_with_one_of_our_names_survives_the_downgrade(blank_url):
    database = Database(blank_url)
    migrate(database, "upgrade", "0002")
    with database.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE tokens ADD COLUMN signature_identity VARCHAR(512)"))

    migrate(database, "upgrade", "0003")
    migrate(database, "downgrade", "0002")

    assert "signature_identity" in columns(database)  # the site's: 0003 did not add it
    assert not (set(SIGNATURE_COLUMNS) - {"signature_identity"}) & columns(database)
    database.dispose()
