"""Steps of the schema's migrations and what they leave, for the migration tests."""

from __future__ import annotations

import sqlalchemy as sa

from hokusai_action.db.store import Database


def columns(database: Database, table: str = "tokens") -> set[str]:
    return {column["name"] for column in sa.inspect(database.engine).get_columns(table)}


def migrate(database: Database, how: str, target: str) -> None:
    """Run alembic's ``upgrade`` or ``downgrade`` (``how``) to revision ``target``."""
    from alembic import command

    with database.engine.begin() as connection:
        getattr(command, how)(database._alembic_config(connection), target)
