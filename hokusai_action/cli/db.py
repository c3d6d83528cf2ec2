"""``db upgrade``."""

from __future__ import annotations

from typing import Any

import click

from hokusai_action.cli.boundary import handles_errors
from hokusai_action.cli.options import CONTEXT, config_option, database_option, settings_from_flags


@click.group(context_settings=CONTEXT)
def db() -> None:
    """Manage the Hokusai database schema.

    \b
    Example:
      HOKUSAI_DATABASE_URL=postgresql+psycopg2://hokusai@db/hokusai hokusai-ml-platform db upgrade
    """


@db.command("upgrade", context_settings=CONTEXT)
@config_option
@database_option
@handles_errors
def db_upgrade(**flags: Any) -> None:
    """Create or migrate the tokens and events tables to the newest revision (idempotent).

    \b
    Example:
      hokusai-ml-platform db upgrade
    """
    from hokusai_action.commands.db_upgrade import run_db_upgrade

    click.echo(run_db_upgrade(settings_from_flags(**flags)))
