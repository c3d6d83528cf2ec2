"""``token create``, ``token show`` and ``token reset``."""

from __future__ import annotations

import json
from typing import Any

import click

from hokusai_action.cli.options import CONTEXT, database_command, emit, settings_from_flags
from hokusai_action.errors import InputError

METADATA_NOT_JSON = "--metadata is not valid JSON: {error}."
METADATA_NOT_OBJECT = '--metadata must be a JSON object, e.g. \'{"owner": "me"}\'.'


@click.group(context_settings=CONTEXT)
def token() -> None:
    """Create, inspect and reset tokens (the site creates them in production).

    \b
    Example:
      hokusai-ml-platform token create XRAY && hokusai-ml-platform token show XRAY
    """


@token.command("create", context_settings=CONTEXT)
@click.argument("symbol")
@click.option("--metadata", help="JSON object stored in the token's metadata column.")
@database_command
def token_create(symbol: str, metadata: str | None, output: str, **flags: Any) -> None:
    """Create a draft token SYMBOL (for local use and tests).

    \b
    Example:
      hokusai-ml-platform token create XRAY --metadata '{"owner": "radiology"}'
    """
    from hokusai_action.commands.token import run_token_create

    parsed = _metadata(metadata) if metadata else None
    created = run_token_create(settings_from_flags(**flags), symbol, parsed)
    emit(created, output, f"Token {created['token_id']} created (draft).")


def _metadata(text: str) -> dict[str, Any]:
    """``--metadata`` as the JSON object it must be."""
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise InputError(METADATA_NOT_JSON.format(error=exc)) from exc
    if not isinstance(parsed, dict):
        raise InputError(METADATA_NOT_OBJECT)
    return parsed


@token.command("show", context_settings=CONTEXT)
@click.argument("symbol")
@database_command
def token_show(symbol: str, output: str, **flags: Any) -> None:
    """Show a token's status, registration and event delivery.

    \b
    Example:
      hokusai-ml-platform token show XRAY --output json
    """
    from hokusai_action.commands.token import run_token_show

    shown = run_token_show(settings_from_flags(**flags), symbol)
    lines = [f"{key:18} {value}" for key, value in shown.items() if key != "event_deliveries"]
    lines += [f"{'delivery':18} {_delivery_line(delivery)}" for delivery in shown.get("event_deliveries", [])]
    emit(shown, output, "\n".join(lines))


def _delivery_line(delivery: dict[str, Any]) -> str:
    """One delivery row in words: a pass is one try by the registration or a relay, which a sink may
    make of several attempts of its own (a webhook's "after 5/5 attempts" in the last error)."""
    status = delivery["status"]
    if status == "cancelled":
        return f"{delivery['sink']}: cancelled, never sent ({delivery.get('cancel_reason')})"
    shown = "failed (a dead letter)" if status == "failed" else status
    line = f"{delivery['sink']}: {shown} after {delivery['attempts']} delivery pass(es)"
    if status == "pending" and delivery.get("next_attempt_at"):
        line += f"; next pass from {delivery['next_attempt_at']}"
    if delivery.get("last_error"):
        line += f" (last error: {delivery['last_error']})"
    return line


@token.command("reset", context_settings=CONTEXT)
@click.argument("symbol")
@database_command
def token_reset(symbol: str, output: str, **flags: Any) -> None:
    """Set token SYMBOL back to draft, as the site's reset does, and print what was cleared.

    Clears the registration (MLflow run, metric and baseline, model name/version/URI, digest,
    claim, event id) and keeps the event history. The registration is withdrawn: every delivery of
    the token's events not yet made (pending or dead-lettered) is cancelled, with the reason, and
    listed; no relay sends it and `events retry` refuses it. The next registration is a new one: the
    same bytes reuse their MLflow version and send a new event (a new id, even after the site prunes
    old events). Refused (exit 3), changing nothing, while a run holds the token's claim or a relay is
    sending one of its events (a sent event cannot be called back: reset once it has arrived).

    \b
    Example:
      hokusai-ml-platform token reset XRAY --output json
    """
    from hokusai_action.commands.token import describe_reset, run_token_reset

    reset = run_token_reset(settings_from_flags(**flags), symbol)
    emit(reset, output, "\n".join(describe_reset(reset)))
