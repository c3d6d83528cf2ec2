"""``events relay`` (once, or following the database) and ``events retry``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from hokusai_action.cli.boundary import handles_errors
from hokusai_action.cli.options import (
    CONTEXT,
    FiniteFloatRange,
    config_option,
    database_command,
    database_option,
    emit,
    output_option,
    settings_from_flags,
)
from hokusai_action.errors import InputError

if TYPE_CHECKING:
    from hokusai_action.errors import HokusaiError
    from hokusai_action.settings.loader import Settings

MAX_SECONDS_WITHOUT_FOLLOW = "--max-seconds bounds a relay that follows (--follow); a single pass ends by itself."


@click.group(context_settings=CONTEXT)
def events() -> None:
    """Deliver token_ready_for_deploy events.

    \b
    Example:
      HOKUSAI_EVENT_SINKS=pubsub,database hokusai-ml-platform events relay
    """


@events.command("relay", context_settings=CONTEXT)
@click.option("--event-id", help="Deliver only this event (default: every pending one).")
@click.option(
    "--follow",
    is_flag=True,
    help="Keep delivering as events arrive (LISTEN on PostgreSQL, polling on SQLite) until SIGTERM/Ctrl-C.",
)
@click.option(
    "--interval",
    type=FiniteFloatRange(min=0.1, max=3600),
    default=5.0,
    show_default=True,
    help="With --follow: the longest wait between passes (the safety poll under LISTEN; the polling cap).",
)
@click.option(
    "--max-seconds",
    type=FiniteFloatRange(min=0, min_open=True, max=86400 * 366),
    help="With --follow: stop after this many seconds; exit 0, or 5 if deliveries are left.",
)
@config_option
@database_option
@click.option("--event-sinks", help="Comma list of pubsub, webhook, database (default: database).")
@output_option
@handles_errors
def events_relay(
    event_id: str | None, follow: bool, interval: float, max_seconds: float | None, output: str, **flags: Any
) -> None:
    """Deliver pending events to the configured sinks; exit 5 while any is still pending or dead-lettered.

    A delivery that failed permanently (webhook 4xx, Pub/Sub topic missing or forbidden) is a dead
    letter: it is skipped and named until `events retry` re-queues it. An event whose registration
    its token no longer holds (the token was reset) is never sent: its delivery is cancelled, with the
    reason, and listed.

    A delivery that failed transiently is retried after a backoff (about 1 s, doubling up to 10 min).
    A single pass waits out backoffs that end within 10 s (the sink was just fixed) and names the
    next one due after that, with when; --event-id sends that event at once, whatever its backoff.

    With --follow the relay runs as a service: on PostgreSQL it LISTENs for the NOTIFY each
    registration's commit sends and delivers at once (and passes over the table every --interval,
    since a NOTIFY sent while it was not listening is lost); on SQLite it polls, every 0.1 s after
    a delivery, doubling while idle up to --interval. It prints a report line only when a pass moved
    or found something. SIGTERM or Ctrl-C stops it cleanly: each delivery in hand is finished and
    recorded, the rest handed back to other relays, exit 0. --max-seconds N stops it after N seconds
    with the exit code of a single pass (0, or 5 if anything is still pending or dead-lettered).
    Any number of relays, on any machines, can follow one database: each delivery is leased by one,
    which renews the lease while it sends (a killed relay's deliveries wait HOKUSAI_RELAY_LEASE, 120 s).

    \b
    Example:
      hokusai-ml-platform events relay --event-id 0b6f3c1e-...
      HOKUSAI_EVENT_SINKS=webhook,database hokusai-ml-platform events relay --follow
      hokusai-ml-platform events relay --follow --max-seconds 60   # in a CI job
    """
    from hokusai_action.commands.events import describe_relay, run_events_relay

    if max_seconds is not None and not follow:
        raise InputError(MAX_SECONDS_WITHOUT_FOLLOW)
    settings = settings_from_flags(**flags)
    if not follow:
        summary, code = run_events_relay(settings, event_id=event_id)
        emit(summary, output, "\n".join(describe_relay(summary)))
        sys.exit(code)
    sys.exit(_follow(settings, event_id=event_id, interval=interval, max_seconds=max_seconds, output=output))


def _follow(
    settings: Settings, *, event_id: str | None, interval: float, max_seconds: float | None, output: str
) -> int:
    """Run the following relay with SIGTERM and SIGINT turned into a clean stop (exit 0)."""
    import signal

    from hokusai_action.commands.events import StopRequest, describe_relay, run_events_follow
    from hokusai_action.failure import error_line

    stop = StopRequest()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: stop.request(number))

    def on_error(exc: HokusaiError, retry_in: float) -> None:
        # a database outage ends one pass, not the relay: it tries again
        click.echo(f"{error_line(exc.one_line())} (trying again in {retry_in:g} s)", err=True)

    def on_pass(summary: dict[str, Any]) -> None:
        emit(summary, output, "\n".join(describe_relay(summary)))

    code = run_events_follow(
        settings,
        interval=interval,
        stop=stop,
        on_pass=on_pass,
        on_error=on_error,
        max_seconds=max_seconds,
        event_id=event_id,
    )
    if stop():
        click.echo(f"relay stopped by {signal.Signals(stop.signal or signal.SIGTERM).name}", err=True)
    return code


@events.command("retry", context_settings=CONTEXT)
@click.argument("event_id", required=False)
@click.option("--all-failed", is_flag=True, help="Re-queue every dead-lettered delivery.")
@database_command
def events_retry(event_id: str | None, all_failed: bool, output: str, **flags: Any) -> None:
    """Put dead-lettered deliveries (failed permanently) back to pending, after fixing the cause.

    Then `events relay` delivers them, with the same event id. An event whose registration was
    withdrawn (its token was reset: its deliveries are cancelled) is refused with exit 3 and nothing
    changes; --all-failed cancels the dead letters of withdrawn registrations instead of re-queuing them.

    \b
    Example:
      hokusai-ml-platform events retry 0b6f3c1e-... && hokusai-ml-platform events relay
      hokusai-ml-platform events retry --all-failed
    """
    from hokusai_action.commands.events import describe_retry, run_events_retry

    summary, code = run_events_retry(settings_from_flags(**flags), event_id=event_id, all_failed=all_failed)
    emit(summary, output, "\n".join(describe_retry(summary, event_id=event_id)))
    sys.exit(code)
