"""`model register` (the CLI) and the GitHub Action: validate, register with the parts ``wiring``
builds, and say what happened (the exit code, the human lines, the JSON result)."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING, TextIO

from hokusai_action.commands.wiring import Parts, build_parts, build_progress, start_sink_checks
from hokusai_action.db import outbox
from hokusai_action.domain.metrics import GateFailed
from hokusai_action.domain.statuses import REJECTED
from hokusai_action.domain.tokens import normalise_token_id
from hokusai_action.errors import EXIT_EVENTS_PENDING, EXIT_GATE_FAILED, EXIT_OK, HokusaiError
from hokusai_action.registration.register import register
from hokusai_action.registration.request import build_request
from hokusai_action.registration.result import RegistrationResult, rejected_result
from hokusai_action.settings.loader import Settings

if TYPE_CHECKING:
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
    with build_parts(settings) as parts:  # builds clients; contacts nothing
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
    if result.events_pending and not result.dry_run:
        return result, EXIT_EVENTS_PENDING
    return result, EXIT_OK


def _dead_letters(parts: Parts, event_id: str) -> dict[str, str]:
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
