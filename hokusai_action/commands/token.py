"""`token create`, `token show` and `token reset`: what the site does to a token, from the command line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hokusai_action.commands.wiring import open_site_database
from hokusai_action.db import outbox
from hokusai_action.db.store import (
    REGISTRATION_COLUMNS,
    count_events,
    get_token,
    insert_token,
    reset_token,
    token_missing,
)
from hokusai_action.domain.statuses import DRAFT
from hokusai_action.domain.tokens import normalise_token_id
from hokusai_action.settings.loader import Settings


def run_token_create(settings: Settings, symbol: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    token_id = normalise_token_id(symbol)
    with open_site_database(settings) as database, database.unit_of_work() as uow:
        token = insert_token(uow, token_id, metadata=dict(metadata or {}))
        uow.commit()
    return token.as_dict()


def run_token_show(settings: Settings, symbol: str) -> dict[str, Any]:
    token_id = normalise_token_id(symbol)
    with open_site_database(settings) as database, database.unit_of_work() as uow:
        token = get_token(uow, token_id)
        if token is None:
            raise token_missing(token_id, database.display_url)
        shown = token.as_dict()
        event_id = token.registered_event_id
        if event_id:
            shown["event_id"] = event_id
            shown["event_deliveries"] = outbox.delivery_rows(uow, event_id)
    return shown


def run_token_reset(settings: Settings, symbol: str) -> dict[str, Any]:
    """Set a token back to draft as the site's reset does; report what was cleared (events are kept)
    and which deliveries of its registrations were cancelled (they are never sent now)."""
    token_id = normalise_token_id(symbol)
    with open_site_database(settings) as database, database.unit_of_work() as uow:
        before = reset_token(uow, token_id, url=database.display_url)
        cancelled = outbox.cancel_undelivered(uow, token_id, reason=outbox.CANCELLED_BY_RESET.format(token=token_id))
        kept = count_events(uow, token_id)
        uow.commit()
    previous = before.as_dict()
    previous.update({f"signature_{key}": value for key, value in (before.signature or {}).items()})
    return {
        "token_id": token_id,
        "status": DRAFT,
        "previous_status": before.model_status,
        "cleared": {column: previous[column] for column in REGISTRATION_COLUMNS if previous.get(column) is not None},
        "events_kept": kept,
        "cancelled": cancelled,
    }


def describe_reset(reset: Mapping[str, Any]) -> list[str]:
    lines = [f"Token {reset['token_id']} reset from {reset['previous_status']} to draft."]
    if reset["cleared"]:
        lines.extend(f"  cleared     {column} (was {value})" for column, value in reset["cleared"].items())
    else:
        lines.append("  cleared     nothing: no registration was recorded")
    lines.extend(
        f"  cancelled   {item['event_id']} -> {item['sink']} (was {item['previous_status']} after "
        f"{item['attempts']} delivery pass(es)): it is never sent now"
        for item in reset["cancelled"]
    )
    lines.append(
        f"  events      {reset['events_kept']} event(s) kept; the next registration is new and gets a new event id"
    )
    return lines
