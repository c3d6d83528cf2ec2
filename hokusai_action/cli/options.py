"""What the commands share: click's context, the options several commands take, the settings they
load and how a result is printed. Only click and the package's pure modules: ``--help`` imports this."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from hokusai_action.cli.boundary import handles_errors

if TYPE_CHECKING:
    from hokusai_action.settings.loader import Settings

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class FiniteFloatRange(click.FloatRange):
    """click's ``FloatRange`` without NaN and the infinities: ``float("nan")`` fails every comparison,
    so ``nan`` passes any range (``--interval nan`` polled in a busy loop, ``--max-seconds nan`` never
    ended). Every float option of the command line takes this type."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


output_option = click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help=(
        'json: exactly one JSON object on stdout on every exit: the result (exit 0, 1, 5), or {"error": '
        '{"exit_code", "kind", "message", "hint"}} (exit 2, 3, 4, 70); human text goes to stderr.'
    ),
)
config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False),
    help="Path of hokusai.yaml (default ./hokusai.yaml when present).",
)
database_option = click.option(
    "--database-url",
    envvar=None,
    help="SQLAlchemy URL of the Hokusai database (prefer HOKUSAI_DATABASE_URL).",
)
tracking_uri_option = click.option(
    "--mlflow-tracking-uri", help="MLflow server or store (default: MLFLOW_TRACKING_URI, then .hokusai/)."
)


def database_command(command: Callable[..., Any]) -> Callable[..., Any]:
    """What a command on the site database takes after its own arguments: --config, --database-url,
    --output; and the failure boundary (--debug)."""
    return config_option(database_option(output_option(handles_errors(command))))


def settings_from_flags(**flags: Any) -> Settings:
    """The settings of a command from its flags (and the environment and ``hokusai.yaml``), with the
    vendors' own output quieted and redacted before any of them is imported."""
    from hokusai_action.settings.loader import load_settings
    from hokusai_action.vendors import quiet_vendor_logs

    quiet_vendor_logs()
    return load_settings(flags)


def emit(data: Any, output: str, text: str) -> None:
    """A command's result: ``data`` as one JSON object under ``--output json``, else ``text``."""
    if output == "json":
        click.echo(json.dumps(data, sort_keys=True, default=str))
    else:
        click.echo(text)
