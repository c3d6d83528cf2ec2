"""``doctor``: check the settings and reach each service read-only."""

from __future__ import annotations

import json
from typing import Any

import click

from hokusai_action.cli.boundary import fail, handles_errors
from hokusai_action.cli.options import CONTEXT, config_option, database_option, output_option, settings_from_flags

DOCTOR_FAILED = "doctor found {count} problem{s}: {name}: {detail}"


@click.command(context_settings=CONTEXT)
@config_option
@click.option("--mlflow-tracking-uri", help="MLflow server or store to check.")
@database_option
@click.option("--event-sinks", help="Comma list of pubsub, webhook, database.")
@output_option
@handles_errors
def doctor(output: str, **flags: Any) -> None:
    """Check the settings and reach each service read-only: the database and its schema, MLflow, each
    event sink (a webhook gets a HEAD request, never an event) and the Google identities in use.

    Each check waits a few seconds at most, all side by side. A check fails wherever `model register`
    would fail, saying what to do, and doctor then exits with the code register would (2 settings,
    4 a service unreachable; the worst of them). With --output json: {"ok": ..., "checks": [{"check",
    "ok", "detail", "hint"}, ...]}, plus the error object of the worst failure.

    \b
    Example:
      hokusai-ml-platform doctor --output json
    """
    from hokusai_action.commands.doctor import run_doctor

    report = run_doctor(settings_from_flags(**flags))
    lines = []
    for check in report.checks:
        lines.append(f"{'ok  ' if check.ok else 'FAIL'} {check.name:9} {check.detail}")
        if not check.ok and check.hint:
            lines.append(f"{'':15}{check.hint}")
    if output == "json":
        click.echo("\n".join(lines), err=True)
        click.echo(json.dumps(report.as_dict(), sort_keys=True))
    else:
        click.echo("\n".join(lines))
    worst = report.worst
    if worst is not None:
        others = [check.name for check in report.failed if check is not worst]
        count = len(report.failed)
        line = DOCTOR_FAILED.format(count=count, s="" if count == 1 else "s", name=worst.name, detail=worst.detail)
        line += (f" {worst.hint}" if worst.hint else "") + (f" Also failed: {', '.join(others)}." if others else "")
        fail(line, report.exit_code)
