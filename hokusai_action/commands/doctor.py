"""`doctor`: check the settings and reach each service read-only, side by side, each within a few
seconds; a check fails wherever `model register` would, with that exit code and what to do."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from hokusai_action.commands.wiring import build_registry, event_sinks, site_database
from hokusai_action.domain.sinks import EventSink
from hokusai_action.errors import EXIT_OK, HokusaiError, ServiceUnavailable
from hokusai_action.settings.loader import Settings

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


def _side_by_side(calls: Mapping[str, Callable[[], str | DoctorCheck | None]]) -> list[DoctorCheck]:
    """Run each check in a thread of its own; a check still running after the backstop is a failure.

    A check returns its detail (ok), its own DoctorCheck, or None (nothing to check: no line); a
    HokusaiError is its failure; anything else is re-raised here, for the face to report as any
    command's bug or outage."""
    outcomes: dict[str, tuple[str | DoctorCheck | None, BaseException | None]] = {}
    lock = threading.Lock()

    def run(name: str, call: Callable[[], str | DoctorCheck | None]) -> None:
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
            if detail is not None:
                checks.append(DoctorCheck(name, True, detail))
        elif isinstance(error, HokusaiError):
            checks.append(_failed(name, error))
        else:
            raise error
    return checks


def _failed(name: str, error: HokusaiError) -> DoctorCheck:
    return DoctorCheck(name, False, error.message, hint=error.hint, kind=error.kind, exit_code=error.exit_code)


def _doctor_database(settings: Settings) -> str:
    with site_database(settings) as database:
        revision = database.revision()
        database.require_schema()  # missing or behind: register exits 2 saying to run db upgrade
        return f"{database.display_url} reachable, schema revision {revision}"


def _doctor_mlflow(settings: Settings, artifact_location: list[str]) -> str:
    registry = build_registry(settings)
    registry.unreachable_hint = DOCTOR_MLFLOW_HINT  # doctor waits its own few seconds and uploads nothing
    experiment = registry.check_reachable()
    exists = f"experiment id {experiment}" if experiment else "experiment will be created on first run"
    if experiment:
        artifact_location.extend(_artifact_location(registry, experiment))
    return f"{registry.display_uri} reachable, {settings.mlflow_experiment}: {exists}"


def _doctor_sinks(settings: Settings) -> str | DoctorCheck:
    """Each sink's own check, side by side (``_sink_check``); the database sink is the events table
    itself, with nothing to check."""
    # a webhook URL or secret that cannot work fails here (exit 2)
    with event_sinks(settings) as sinks:
        probes = {name: functools.partial(_sink_check, sink, settings.webhook_timeout) for name, sink in sinks.items()}
        checked = {check.name: check for check in _side_by_side(probes)}
    failed = [check for check in checked.values() if not check.ok]
    if failed:  # every failed sink's detail; the worst one's exit code, kind and hint
        report = DoctorReport(failed)
        worst = report.worst
        assert worst is not None
        detail = " ".join(check.detail for check in [worst, *(check for check in failed if check is not worst)])
        return replace(worst, detail=detail)
    return ", ".join(f"{name} ({checked[name].detail})" if name in checked else name for name in sinks)


def _sink_check(sink: EventSink, timeout: float) -> str | None:
    """The registration's preflight where the sink has one (Pub/Sub), else its probe (a webhook's HEAD
    request: nothing is delivered); None: nothing to check."""
    detail = sink.preflight()
    return detail if detail is not None else sink.probe(timeout)


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
