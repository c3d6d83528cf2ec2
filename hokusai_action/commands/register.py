"""What each command does, apart from how its arguments arrive. The click CLI (``cli.py``) and the
GitHub Action entrypoint call these; they import this module only once a command actually runs."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO

from hokusai_action.commands.wiring import (
    build_database,
    build_parts,
    build_progress,
    build_registry,
    build_sinks,
    start_sink_checks,
)
from hokusai_action.domain.metrics import GateFailed
from hokusai_action.domain.statuses import REJECTED
from hokusai_action.domain.tokens import normalise_token_id
from hokusai_action.errors import (
    EXIT_EVENTS_PENDING,
    EXIT_GATE_FAILED,
    EXIT_OK,
    HokusaiError,
    ServiceUnavailable,
)
from hokusai_action.registration.register import (
    RegistrationResult,
    build_request,
    register,
    registered_event_id,
    rejected_result,
)
from hokusai_action.settings.loader import Settings

if TYPE_CHECKING:
    from hokusai_action.db.outbox import RelayReport
    from hokusai_action.db.store import Database
    from hokusai_action.digest.background import BackgroundHash

EVENTS_PENDING = (
    "Registered, but event {event_id} is not delivered yet to: {sinks}. "
    "Re-run the same command or `hokusai-ml-platform events relay` to deliver it."
)


REJECTED_LINE = "the gate refused the model; nothing was uploaded, claimed or changed."

EVENTS_DEAD_LETTERED = (
    "Registered, but {sinks} refused event {event_id} for good, so the delivery was dead-lettered ({errors}). "
    "Fix the cause, then run `hokusai-ml-platform events retry {event_id}` and `hokusai-ml-platform events relay`."
)


@contextlib.contextmanager
def open_site_database(settings: Settings) -> Iterator[Database]:
    """The site database with the registration schema in place; disposed of on the way out."""
    database = build_database(settings)
    try:
        database.require_schema()
        yield database
    finally:
        database.dispose()


def run_register(
    settings: Settings, *, quiet: bool = False, prefetched: BackgroundHash | None = None
) -> tuple[RegistrationResult, int]:
    """Validate, then register; the exit code is 0, 1 when the gate refused the model (the result's
    status is ``rejected`` and ``refusal`` says why), or 5 when an event is still pending.

    Long hashing and uploads show progress on stderr unless ``quiet`` (``hokusai_action.progress``).
    ``prefetched`` is the model's walk and hash the face started before importing this module
    (``digest.prefetch_digest``): the registration takes it over, or it is cancelled here.
    """
    try:
        return _register_with_parts(settings, quiet=quiet, prefetched=prefetched)
    except GateFailed as refusal:
        if refusal.gate is None:
            raise
        # the token id was checked before the gate ran
        token_id = normalise_token_id(settings.token_id)
        return rejected_result(token_id, refusal, dry_run=settings.dry_run), EXIT_GATE_FAILED
    finally:
        if prefetched is not None:
            prefetched.cancel()  # done already when the registration used it; stopped otherwise


def _register_with_parts(
    settings: Settings, *, quiet: bool, prefetched: BackgroundHash | None
) -> tuple[RegistrationResult, int]:
    parts = build_parts(settings)  # builds clients; contacts nothing
    try:
        # each sink's settings are checked read-only while the model is hashed: no added wall time
        sink_checks = start_sink_checks(parts.sinks)
        walk = prefetched.walked if prefetched is not None else None
        request = build_request(settings, registry=parts.registry, walk=walk)  # raises before anything changes
        sink_checks.wait()  # a topic that does not exist: exit 2 before the claim
        parts.warm_up_sinks()
        # MLflow prints "View run at ..." on stdout; stdout belongs to the result (--output json)
        with contextlib.redirect_stdout(sys.stderr):
            result = register(
                request,
                registry=parts.registry,
                database=parts.database,
                sinks=parts.sinks,
                signer=parts.signer,
                progress=build_progress(quiet=quiet),
                prefetched=prefetched,
            )
        if result.events_pending and not result.dry_run and result.event_id:
            result.events_dead_lettered = _dead_letters(parts, result.event_id)
    finally:
        parts.close()
    if result.events_pending and not result.dry_run:
        return result, EXIT_EVENTS_PENDING
    return result, EXIT_OK


def _dead_letters(parts: Any, event_id: str) -> dict[str, str]:
    from hokusai_action.db import outbox

    try:
        with parts.database.unit_of_work() as uow:
            return {sink: error for _, sink, error in outbox.dead_letters(uow, event_id)}
    except HokusaiError:  # the database went away after the commit: the pending line still holds
        return {}


def describe_result(result: RegistrationResult) -> list[str]:
    """Human lines for a result (stdout in text mode, stderr in JSON mode)."""
    gate = result.gate
    op = gate.op
    lines = []
    if result.status == REJECTED:
        lines.append(f"Token {result.token_id} was not registered: {REJECTED_LINE}")
    elif result.dry_run:
        lines.append(f"Dry run: token {result.token_id} would be registered; nothing was changed.")
    elif result.already_registered:
        lines.append(f"Token {result.token_id} is already registered with these bytes; nothing was uploaded.")
    else:
        lines.append(f"Token {result.token_id} registered.")
    lines.append(
        f"  metric      {gate.metric.name} = {gate.value:g} {op} required {gate.required:g} "
        f"({gate.metric.direction}, delta {gate.delta:+g}, {'pass' if gate.passed else 'FAIL'})"
    )
    lines.append(f"  baseline    {gate.baseline:g}" + (f", margin {gate.margin.text}" if gate.margin else ""))
    if gate.champion is not None:
        champion = gate.champion
        held = f"version {champion.version} = {champion.value:g}" if champion.version else "held by no version"
        lines.append(f"  champion    '{champion.alias}' {held}")
    source = (result.metric_source or "not recorded") + (
        f" ({result.metric_source_detail})" if result.metric_source_detail else ""
    )
    lines.append(f"  source      {source}")
    model = _model_line(result)
    if model:
        lines.append(f"  model       {model}")
    if result.artifact_digest:
        lines.append(f"  digest      {result.artifact_digest}")
    if result.event_id:
        state = ", ".join(
            f"{sink}: {_delivery_word(ok, dead=sink in result.events_dead_lettered)}"
            for sink, ok in result.events_delivered.items()
        )
        lines.append(f"  event       {result.event_id} ({state or 'no sinks'})")
    if result.alias:
        lines.append(f"  alias       '{result.alias}' -> version {result.model_version}")
    if result.signature:
        signature = result.signature
        lines.append(f"  signature   {signature['method']} by {signature['identity']} ({signature['bundle_uri']})")
    for note in [*gate.notes(), *result.notes]:
        lines.append(f"  note        {note}")
    return lines + undelivered_lines(result)


def _delivery_word(delivered: bool, *, dead: bool) -> str:
    if delivered:
        return "delivered"
    return "FAILED (dead letter)" if dead else "PENDING"


def _model_line(result: RegistrationResult) -> str | None:
    """Which model version the result names: none when the gate refused it; a dry run of a model not
    registered yet names what a real run would create."""
    if result.status == REJECTED:
        return None
    if result.model_uri:
        return f"{result.model_uri} (run {result.mlflow_run_id})" if result.mlflow_run_id else result.model_uri
    if result.dry_run:
        return f"{result.model_name} (nothing registered: a dry run)"
    return result.model_name


def undelivered_lines(result: RegistrationResult) -> list[str]:
    """What is still undelivered after a registration (exit 5), and what to run about it."""
    if result.dry_run:
        return []
    lines = []
    dead = result.events_dead_lettered
    waiting = [sink for sink in result.events_pending if sink not in dead]
    if waiting:
        lines.append(EVENTS_PENDING.format(event_id=result.event_id, sinks=", ".join(waiting)))
    if dead:
        errors = "; ".join(f"{sink}: {error}" for sink, error in dead.items())
        lines.append(EVENTS_DEAD_LETTERED.format(sinks=", ".join(dead), event_id=result.event_id, errors=errors))
    return lines


def print_result(result: RegistrationResult, *, output: str, stdout: TextIO, stderr: TextIO) -> None:
    """The result on stdout: JSON, or the human lines. A refused model's human report is the one error
    line the face prints (it names the value, the reference and what was required); its JSON result
    carries the whole gate report."""
    for warning in result.warnings:
        print(f"warning: {warning}", file=stderr)
    if output == "json":
        if result.status != REJECTED:
            print("\n".join(describe_result(result)), file=stderr)
        print(json.dumps(result.as_dict(), sort_keys=True), file=stdout)
    elif result.status != REJECTED:
        print("\n".join(describe_result(result)), file=stdout)


# -------------------------------------------------------------------------------- other commands


EMBEDDED_MLFLOW_READY = "MLflow store {uri} is ready."
EMBEDDED_MLFLOW_UPGRADED = (
    "MLflow store {uri} upgraded from revision {before} to {after}; the store as it was is kept in {backup}."
)


def run_db_upgrade(settings: Settings) -> str:
    database = build_database(settings)
    try:
        before, after = database.upgrade()
    finally:
        database.dispose()
    if before == after:
        lines = [f"Database {database.display_url} is up to date (revision {after})."]
    else:
        lines = [f"Database {database.display_url} upgraded from {before or 'empty'} to revision {after}."]
    if settings.uses_embedded_mlflow:
        from hokusai_action.mlflow.store_migration import upgrade_sqlite_store

        # a store an older MLflow left (the tool was upgraded, ./.hokusai kept) is migrated here, the
        # setup step, not inside a registration, and MLflow creates its own tables on the first use of
        # an empty store (about a hundred Alembic migrations, 0.6 s): here too
        upgraded = upgrade_sqlite_store(settings.mlflow_tracking_uri)
        registry = build_registry(settings)
        registry.check_reachable()
        if upgraded is None:
            lines.append(EMBEDDED_MLFLOW_READY.format(uri=registry.display_uri))
        else:
            lines.append(
                EMBEDDED_MLFLOW_UPGRADED.format(
                    uri=registry.display_uri, before=upgraded.before, after=upgraded.after, backup=upgraded.backup
                )
            )
    return "\n".join(lines)


def run_token_create(settings: Settings, symbol: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    from hokusai_action.db.store import insert_token

    token_id = normalise_token_id(symbol)
    with open_site_database(settings) as database, database.unit_of_work() as uow:
        token = insert_token(uow, token_id, metadata=dict(metadata or {}))
        uow.commit()
    return token.as_dict()


def run_token_show(settings: Settings, symbol: str) -> dict[str, Any]:
    from hokusai_action.db import outbox
    from hokusai_action.db.store import get_token, token_missing

    token_id = normalise_token_id(symbol)
    with open_site_database(settings) as database, database.unit_of_work() as uow:
        token = get_token(uow, token_id)
        if token is None:
            raise token_missing(token_id, database.display_url)
        shown = token.as_dict()
        event_id = registered_event_id(token)
        if event_id:
            shown["event_id"] = event_id
            shown["event_deliveries"] = outbox.delivery_rows(uow, event_id)
    return shown


def run_token_reset(settings: Settings, symbol: str) -> dict[str, Any]:
    """Set a token back to draft as the site's reset does; report what was cleared (events are kept)
    and which deliveries of its registrations were cancelled (they are never sent now)."""
    from hokusai_action.db import outbox
    from hokusai_action.db.store import REGISTRATION_COLUMNS, count_events, reset_token

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
        "status": "draft",
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


RETRY_COMMAND = "hokusai-ml-platform events retry {event_id}"
DEAD_LETTER = "dead letter {event_id} -> {sink}: {error} Fix the cause, then run `{retry}`."
SKIPPED_SINK = (
    "sink '{sink}' is not configured in this run: {count} pending deliveries left for a relay that "
    "configures it (HOKUSAI_EVENT_SINKS)"
)
EVENT_NOT_FOUND = "Event {event_id} does not exist in the Hokusai database at {url}."
EVENT_NOT_FOUND_HINT = "Check the id: `hokusai-ml-platform token show SYMBOL` prints a token's event id."
BAD_EVENT_ID = "Event id {event_id!r} is not a UUID."
RETRY_NEEDS_ONE = "Give either an EVENT_ID or --all-failed (not both, not neither)."
RETRY_NOTHING = "Event {event_id} has no dead-lettered delivery; nothing was re-queued."
RETRY_WITHDRAWN = "Event {event_id} was withdrawn: {why}."
RETRY_WITHDRAWN_HINT = (
    "A withdrawn registration's event is never sent again, and nothing was changed. "
    "Register the token again: that sends a new event."
)


def _event_id_argument(event_id: str) -> str:
    import uuid

    from hokusai_action.errors import InputError

    try:
        return str(uuid.UUID(event_id.strip()))
    except (ValueError, AttributeError):
        raise InputError(BAD_EVENT_ID.format(event_id=event_id), hint=EVENT_NOT_FOUND_HINT) from None


# A one-shot relay waits for backoffs that end within this many seconds (a registration whose sink was
# down leaves its delivery backing off for about a second, and the operator who fixed the sink runs
# the relay at once); a longer one is reported with when it ends and how to send it now (--event-id).
ONE_SHOT_BACKOFF_WAIT = 10.0


def run_events_relay(settings: Settings, *, event_id: str | None = None) -> tuple[dict[str, Any], int]:
    """Deliver what is pending; exit 5 while anything in scope is undelivered (dead letters included).

    Without --event-id backoffs are honoured, but those ending within ``ONE_SHOT_BACKOFF_WAIT`` seconds
    are waited out, as long as no delivery of this run failed (the sink is still down then)."""
    import time

    from hokusai_action.db import outbox

    if event_id is not None:
        event_id = _event_id_argument(event_id)
    database = build_database(settings)
    sinks = build_sinks(settings)
    try:
        database.require_schema()
        deadline = time.monotonic() + ONE_SHOT_BACKOFF_WAIT
        report = outbox.deliver_pending(database, sinks, event_id=event_id, lease_seconds=settings.relay_lease)
        while event_id is None and not report.retrying and report.next_due is not None:
            wait = report.next_due[2]
            if time.monotonic() + wait > deadline:
                break
            time.sleep(wait)
            later = outbox.deliver_pending(database, sinks, lease_seconds=settings.relay_lease)
            report = report.then(later)
    finally:
        for sink in sinks.values():
            sink.close()
        database.dispose()
    return relay_summary(report), (EXIT_EVENTS_PENDING if report.pending else EXIT_OK)


def relay_summary(report: RelayReport) -> dict[str, Any]:
    """A relay pass's report as the `events relay` JSON object."""
    return {
        "delivered": [{"event_id": e, "sink": s} for e, s in report.delivered],
        "failed": [
            {"event_id": e, "sink": s, "error": err, "retry": RETRY_COMMAND.format(event_id=e)}
            for e, s, err in report.dead_letters
        ],
        "pending": [{"event_id": e, "sink": s, "error": err} for e, s, err in report.retrying],
        "waiting": report.waiting,
        "next_due": (
            {"event_id": report.next_due[0], "sink": report.next_due[1], "in_seconds": round(report.next_due[2], 1)}
            if report.next_due
            else None
        ),
        "cancelled": [{"event_id": e, "sink": s, "reason": why} for e, s, why in report.cancelled],
        "skipped": [
            {"sink": s, "count": n, "reason": SKIPPED_SINK.format(sink=s, count=n)} for s, n in report.skipped.items()
        ],
    }


class StopRequest:
    """Set by SIGTERM/SIGINT in a following relay: the flag stops the pass between deliveries, and a
    byte written to a pipe wakes the relay's wait at once (a signal handler may only do that much)."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self.signal: int | None = None

    def request(self, signum: int | None = None) -> None:
        self.signal = signum
        self._flag.set()
        with contextlib.suppress(OSError):  # the pipe is full: it is readable already
            os.write(self._write, b"!")

    def __call__(self) -> bool:
        return self._flag.is_set()

    @property
    def wake_fd(self) -> int:
        return self._read


def run_events_follow(
    settings: Settings,
    *,
    interval: float,
    stop: StopRequest,
    on_pass: Callable[[dict[str, Any]], None],
    on_error: Callable[[HokusaiError, float], None],
    max_seconds: float | None = None,
    event_id: str | None = None,
) -> int:
    """`events relay --follow`: pass over the pending deliveries, wait, repeat, until ``stop`` is set
    (exit 0) or ``max_seconds`` have passed (exit 0, or 5 when what a pass would leave is not empty).

    The wait ends early on a NOTIFY (PostgreSQL, ``outbox.Notifications``), and otherwise lasts
    --interval while listening, or a polling backoff that starts short after activity and grows to
    --interval (SQLite); never past the moment a backed-off row falls due. A pass that cannot reach
    the database is reported and retried after --interval: an outage ends a pass, not the relay.
    """
    import time

    from hokusai_action.db import outbox

    if event_id is not None:
        event_id = _event_id_argument(event_id)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    database = build_database(settings)
    sinks = build_sinks(settings)
    notifications = outbox.Notifications(database)
    backoff = outbox.IdleBackoff(interval)
    previous: dict[str, Any] | None = None
    try:
        while not stop():
            notifications.start()  # before the pass: whatever commits after it wakes the wait
            try:
                database.require_schema()
                report = outbox.deliver_pending(
                    database, sinks, event_id=event_id, stop=stop, lease_seconds=settings.relay_lease
                )
                delay = interval if notifications.listening else backoff.after_pass(active=bool(report.delivered))
                due = outbox.seconds_until_due(database, sinks, event_id=event_id)
            except HokusaiError as exc:
                on_error(exc, interval)
                previous, delay, due = None, interval, None
            else:
                summary = relay_summary(report)
                if relay_moved_something(summary, previous):
                    on_pass(summary)
                previous = summary
            if due is not None:
                delay = min(delay, due)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                delay = min(delay, left)
            if stop():
                break
            notifications.wait(delay, wake_fd=stop.wake_fd)
        if stop():
            return EXIT_OK  # stopped on request: what is left waits for the next relay
        left = outbox.outstanding(database, sinks, event_id=event_id)
        return EXIT_EVENTS_PENDING if left.pending else EXIT_OK
    finally:
        notifications.close()
        for sink in sinks.values():
            sink.close()
        database.dispose()


def relay_moved_something(summary: Mapping[str, Any], previous: Mapping[str, Any] | None) -> bool:
    """Whether a --follow pass is worth a report: it delivered something, or what is stuck changed."""
    if summary["delivered"] or summary["cancelled"] or previous is None:
        return True

    def stuck(report: Mapping[str, Any]) -> tuple[Any, ...]:
        return (
            sorted((f["event_id"], f["sink"]) for f in report["failed"]),
            sorted((p["event_id"], p["sink"]) for p in report["pending"]),
            sorted((s["sink"], s["count"]) for s in report["skipped"]),
        )

    return stuck(summary) != stuck(previous)


def describe_relay(summary: Mapping[str, Any]) -> list[str]:
    lines = [
        f"delivered {len(summary['delivered'])}, pending {len(summary['pending']) + summary['waiting']}, "
        f"dead letters {len(summary['failed'])}, skipped {sum(s['count'] for s in summary['skipped'])}"
        + (f", cancelled {len(summary['cancelled'])}" if summary["cancelled"] else "")
    ]
    lines += [f"  pending {p['event_id']} -> {p['sink']}: {p['error']}" for p in summary["pending"]]
    due = summary["next_due"]
    if summary["waiting"] and due:
        lines.append(
            f"  waiting {summary['waiting']} deliveries: the next backoff ends in {due['in_seconds']:.0f} s "
            f"({due['event_id']} -> {due['sink']}); `hokusai-ml-platform events relay --event-id {due['event_id']}` "
            "sends it now"
        )
    elif summary["waiting"]:
        lines.append(f"  waiting {summary['waiting']} deliveries: held by another relay")
    lines += [f"  skipped {s['reason']}" for s in summary["skipped"]]
    lines += [f"  cancelled {c['event_id']} -> {c['sink']}: {c['reason']}" for c in summary["cancelled"]]
    lines += [
        "  " + DEAD_LETTER.format(event_id=f["event_id"], sink=f["sink"], error=f["error"], retry=f["retry"])
        for f in summary["failed"]
    ]
    return lines


def run_events_retry(
    settings: Settings, *, event_id: str | None = None, all_failed: bool = False
) -> tuple[dict[str, Any], int]:
    """Put dead letters back to pending (one event's, or all); exit 2 for an unknown event id."""
    from hokusai_action.db import outbox
    from hokusai_action.errors import InputError

    if (event_id is None) == (not all_failed):
        raise InputError(RETRY_NEEDS_ONE)
    if event_id is not None:
        event_id = _event_id_argument(event_id)
    with open_site_database(settings) as database:
        if event_id is not None:
            with database.unit_of_work() as uow:
                if not outbox.event_exists(uow, event_id):
                    raise InputError(
                        EVENT_NOT_FOUND.format(event_id=event_id, url=database.display_url), hint=EVENT_NOT_FOUND_HINT
                    )
                _refuse_withdrawn(uow, event_id)
        requeued, cancelled = outbox.requeue_failed(database, event_id=event_id)
    summary = {
        "requeued": [{"event_id": e, "sink": s, "last_error": err} for e, s, err in requeued],
        "cancelled": [{"event_id": e, "sink": s, "reason": why} for e, s, why in cancelled],
    }
    return summary, EXIT_OK


def _refuse_withdrawn(uow: Any, event_id: str) -> None:
    """Exit 3 for an event whose registration its token no longer holds, when it has a dead letter
    (kept as it is) or cancelled deliveries: none of them is ever sent again."""
    from hokusai_action.db import outbox
    from hokusai_action.errors import TokenStateError

    rows = outbox.delivery_rows(uow, event_id)
    failed = [row for row in rows if row["status"] == outbox.FAILED]
    cancelled = [row for row in rows if row["status"] == outbox.CANCELLED]
    why = None
    if failed:
        token_id, token = outbox.holder_of(uow, event_id)
        why = outbox.withdrawal_reason(token_id or "?", token, event_id)
    elif cancelled:
        sinks = ", ".join(row["sink"] for row in cancelled)
        why = f"its {sinks} deliveries were cancelled ({cancelled[0]['cancel_reason']})"
    if why is not None:
        raise TokenStateError(RETRY_WITHDRAWN.format(event_id=event_id, why=why), hint=RETRY_WITHDRAWN_HINT)


def describe_retry(summary: Mapping[str, Any], *, event_id: str | None) -> list[str]:
    requeued, cancelled = summary["requeued"], summary["cancelled"]
    lines = []
    if not requeued:
        lines.append(RETRY_NOTHING.format(event_id=event_id) if event_id else "No dead letters; nothing was re-queued.")
    else:
        lines.append(f"re-queued {len(requeued)} deliveries; run `hokusai-ml-platform events relay` to send them:")
        lines += [f"  {r['event_id']} -> {r['sink']} (was: {r['last_error']})" for r in requeued]
    lines += [f"  cancelled {c['event_id']} -> {c['sink']}: {c['reason']}" for c in cancelled]
    return lines


def run_verify(
    settings: Settings,
    *,
    token_id: str,
    version: str | None = None,
    model_path: str | None = None,
    public_key: str | None = None,
    certificate_chain: tuple[str, ...] = (),
    identity: str | None = None,
    issuer: str | None = None,
    progress: Any = None,
) -> tuple[Any, int]:
    """`model verify`: the report, and exit 0 (verified) or 1 (the first mismatch is ``report.error``)."""
    from hokusai_action.errors import EXIT_GATE_FAILED
    from hokusai_action.registration.verify import verify_registration
    from hokusai_action.signing.verifier import SignatureVerifier

    verifier = None
    if public_key or certificate_chain or identity or issuer:
        verifier = SignatureVerifier(
            public_key=public_key, certificate_chain=certificate_chain, identity=identity, issuer=issuer
        )  # a key that cannot be read: exit 2 before anything is downloaded
    registry = build_registry(settings)
    with open_site_database(settings) as database, contextlib.redirect_stdout(sys.stderr):
        report = verify_registration(
            token_id,
            registry=registry,
            database=database,
            verifier=verifier,
            version=version,
            model_path=model_path,
            progress=progress,
        )
    return report, (EXIT_OK if report.verified else EXIT_GATE_FAILED)


def describe_verify(report: Any) -> list[str]:
    state = "verified" if report.verified else "NOT verified"
    lines = [f"{report.model_uri} of token {report.token_id}: {state}"]
    lines += [f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}" for check in report.checks]
    return lines


DOCTOR_SECONDS = 4.0  # each check's own bound on a service's answer; the checks run side by side
DOCTOR_BACKSTOP_SECONDS = DOCTOR_SECONDS + 6.0  # a check still running then is reported, not awaited
DOCTOR_NO_ANSWER = "no answer within {seconds:g} s"
DOCTOR_MLFLOW_HINT = "Check MLFLOW_TRACKING_URI (or --mlflow-tracking-uri) and that the server is up and reachable."
DOCTOR_STUCK_HINT = "Something on the way hangs (a proxy, DNS, a firewall dropping packets): check the settings named."


@dataclass(frozen=True)
class DoctorCheck:
    """One line of `doctor`: ``exit_code`` is what the failure would make `model register` exit with."""

    name: str
    ok: bool
    detail: str
    hint: str | None = None
    kind: str | None = None
    exit_code: int = EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}


@dataclass(frozen=True)
class DoctorReport:
    checks: list[DoctorCheck]

    @property
    def failed(self) -> list[DoctorCheck]:
        return [check for check in self.checks if not check.ok]

    @property
    def exit_code(self) -> int:
        return max((check.exit_code for check in self.failed), default=EXIT_OK)

    @property
    def worst(self) -> DoctorCheck | None:
        """The first failed check with the report's exit code: the one the error line names."""
        return next((check for check in self.failed if check.exit_code == self.exit_code), None)

    def as_dict(self) -> dict[str, Any]:
        """`doctor --output json`: the checks, and on failure the error object of the worst one."""
        data: dict[str, Any] = {"ok": not self.failed, "checks": [check.as_dict() for check in self.checks]}
        worst = self.worst
        if worst is not None:
            data["error"] = {
                "exit_code": worst.exit_code,
                "kind": worst.kind,
                "message": f"{worst.name}: {worst.detail}",
                "hint": worst.hint,
            }
        return data


def run_doctor(settings: Settings) -> DoctorReport:
    """Check the settings and reach each service read-only, each within ``DOCTOR_SECONDS`` and all side
    by side. A check fails wherever `model register` would fail, with that exit code and what to do."""
    bounded = replace(
        settings,
        mlflow_timeout=min(settings.mlflow_timeout, DOCTOR_SECONDS),
        database_timeout=min(settings.database_timeout, DOCTOR_SECONDS),
        pubsub_timeout=min(settings.pubsub_timeout, DOCTOR_SECONDS),
        webhook_timeout=min(settings.webhook_timeout, DOCTOR_SECONDS),
    )
    artifact_location: list[str] = []  # the experiment's, once MLflow answered
    checks = _side_by_side(
        {
            "database": lambda: _doctor_database(bounded),
            "mlflow": lambda: _doctor_mlflow(bounded, artifact_location),
            "events": lambda: _doctor_sinks(bounded),
        }
    )
    checks += _google_identities(settings, artifact_location)
    return DoctorReport(checks)


def _side_by_side(calls: Mapping[str, Callable[[], str | DoctorCheck]]) -> list[DoctorCheck]:
    """Run each check in a thread of its own; a check still running after the backstop is a failure.

    A check returns its detail (ok) or its own DoctorCheck; a HokusaiError is its failure; anything
    else is re-raised here, for the face to report as any command's bug or outage."""
    import time

    outcomes: dict[str, tuple[str | DoctorCheck | None, BaseException | None]] = {}
    lock = threading.Lock()

    def run(name: str, call: Callable[[], str | DoctorCheck]) -> None:
        try:
            outcome: tuple[str | DoctorCheck | None, BaseException | None] = (call(), None)
        except Exception as exc:  # collected below: a thread must not die with it unseen
            outcome = (None, exc)
        with lock:
            outcomes[name] = outcome

    threads = [threading.Thread(target=run, args=item, name=f"doctor-{item[0]}", daemon=True) for item in calls.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DOCTOR_BACKSTOP_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    checks = []
    with lock:
        done = dict(outcomes)
    for name in calls:
        if name not in done:
            no_answer = DOCTOR_NO_ANSWER.format(seconds=DOCTOR_BACKSTOP_SECONDS)
            checks.append(_failed(name, ServiceUnavailable(no_answer, hint=DOCTOR_STUCK_HINT)))
            continue
        detail, error = done[name]
        if isinstance(detail, DoctorCheck):
            checks.append(replace(detail, name=name))
        elif error is None:
            checks.append(DoctorCheck(name, True, detail or ""))
        elif isinstance(error, HokusaiError):
            checks.append(_failed(name, error))
        else:
            raise error
    return checks


def _failed(name: str, error: HokusaiError) -> DoctorCheck:
    return DoctorCheck(name, False, error.message, hint=error.hint, kind=error.kind, exit_code=error.exit_code)


def _doctor_database(settings: Settings) -> str:
    database = build_database(settings)
    try:
        revision = database.revision()
        database.require_schema()  # missing or behind: register exits 2 saying to run db upgrade
        return f"{database.display_url} reachable, schema revision {revision}"
    finally:
        database.dispose()


def _doctor_mlflow(settings: Settings, artifact_location: list[str]) -> str:
    registry = build_registry(settings)
    registry.unreachable_hint = DOCTOR_MLFLOW_HINT  # doctor waits its own few seconds and uploads nothing
    experiment = registry.check_reachable()
    exists = f"experiment id {experiment}" if experiment else "experiment will be created on first run"
    if experiment:
        artifact_location.extend(_artifact_location(registry, experiment))
    return f"{registry.display_uri} reachable, {settings.mlflow_experiment}: {exists}"


def _doctor_sinks(settings: Settings) -> str | DoctorCheck:
    """Each sink's own check, side by side: Pub/Sub's preflight (the registration's), a webhook's probe
    (a HEAD request: nothing is delivered); the database sink is the events table itself."""
    sinks = build_sinks(settings)  # a webhook URL or secret that cannot work fails here (exit 2)
    try:
        probes: dict[str, Callable[[], str | DoctorCheck]] = {}
        for name, sink in sinks.items():
            if getattr(sink, "preflight", None) is not None:
                probes[name] = sink.preflight  # type: ignore[attr-defined]
            elif getattr(sink, "probe", None) is not None:
                probes[name] = functools.partial(sink.probe, settings.webhook_timeout)  # type: ignore[attr-defined]
        checked = {check.name: check for check in _side_by_side(probes)}
    finally:
        for sink in sinks.values():
            sink.close()
    failed = [check for check in checked.values() if not check.ok]
    if failed:  # every failed sink's detail; the worst one's exit code, kind and hint
        report = DoctorReport(failed)
        worst = report.worst
        assert worst is not None
        detail = " ".join(check.detail for check in [worst, *(check for check in failed if check is not worst)])
        return replace(worst, detail=detail)
    return ", ".join(f"{name} ({checked[name].detail})" if name in checked else name for name in sinks)


def _artifact_location(registry: Any, experiment_id: str) -> list[str]:
    """Where the experiment's artifacts go (``gs://...`` when this machine writes them to GCS itself)."""
    try:
        location = registry.artifact_location(experiment_id)
    except ServiceUnavailable:  # the mlflow check above already reported the server
        return []
    return [location] if location else []


def _google_identities(settings: Settings, artifact_location: list[str]) -> list[DoctorCheck]:
    """Which identity each Google client this configuration uses would authenticate as (no network call).

    GCS: when artifacts go to ``gs://`` from this machine (a server with ``--no-serve-artifacts`` and a
    ``gs://`` default root), or ``STORAGE_EMULATOR_HOST`` is set. A server that proxies artifacts uses
    its own identity, not ours. Pub/Sub: when the ``pubsub`` sink is configured.
    """
    from hokusai_action.signing import google_identity

    environ = os.environ
    services = []
    writes_gcs = any(location.startswith("gs://") for location in artifact_location)
    if writes_gcs or environ.get(google_identity.EMULATOR_VARIABLES["gcs"]):
        services.append("gcs")
    if "pubsub" in settings.event_sinks:
        services.append("pubsub")
    checks = []
    for service in services:
        try:
            identity = google_identity.identity_for(service, environ).describe()
            checks.append(DoctorCheck(f"{service} auth", True, identity))
        except HokusaiError as exc:
            checks.append(_failed(f"{service} auth", exc))
    return checks
