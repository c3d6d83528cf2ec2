"""What the revisions after 0001 share: the record of what each revision added to a site table
(``hokusai_schema_origin``, whose shape 0001 fixed), and dropping a column of ``tokens``.

A database upgraded before 0001 recorded origins has no such table: there is then nothing to record
in, and a downgrade finds no record (each revision says what it takes as its own then).
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

ORIGIN_TABLE = "hokusai_schema_origin"


def _origin() -> sa.TableClause:
    return sa.table(
        ORIGIN_TABLE,
        sa.column("table_name", sa.String),
        sa.column("created", sa.Boolean),
        sa.column("added_columns", sa.Text),
    )


def _origin_recorded() -> bool:
    return sa.inspect(op.get_bind()).has_table(ORIGIN_TABLE)


def record_added(row: str, added: list[str]) -> None:
    """Record under ``row`` (``<revision>:<table>``) the columns a revision added to a table it did not create."""
    if _origin_recorded():
        op.bulk_insert(_origin(), [{"table_name": row, "created": False, "added_columns": json.dumps(added)}])


def recorded_added(row: str) -> list[str] | None:
    """The columns recorded under ``row``; None without a record."""
    if not _origin_recorded():
        return None
    found = (
        op.get_bind()
        .execute(sa.text(f"SELECT added_columns FROM {ORIGIN_TABLE} WHERE table_name = :row"), {"row": row})
        .scalar()
    )
    return json.loads(found) if found is not None else None


def forget_added(row: str) -> None:
    """Remove ``row``'s record, once its revision is undone."""
    if _origin_recorded():
        op.execute(sa.text(f"DELETE FROM {ORIGIN_TABLE} WHERE table_name = :row").bindparams(row=row))


def drop_token_column(name: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        # a batch rebuild of ``tokens`` would drop a table that ``events`` references
        op.execute(f'ALTER TABLE tokens DROP COLUMN "{name}"')
    else:
        op.drop_column("tokens", name)
