"""`model verify`: check the registration a token holds now, with the parts ``wiring`` builds, and
describe the report."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

from hokusai_action.commands.wiring import build_registry, open_site_database
from hokusai_action.errors import EXIT_GATE_FAILED, EXIT_OK
from hokusai_action.registration.verify import verify_registration
from hokusai_action.registration.verify_report import VerifyReport
from hokusai_action.settings.loader import Settings
from hokusai_action.signing.verifier import SignatureVerifier


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
    progress: Callable[[str], None] | None = None,
) -> tuple[VerifyReport, int]:
    """`model verify`: the report, and exit 0 (verified) or 1 (the first mismatch is ``report.error``)."""
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


def describe_verify(report: VerifyReport) -> list[str]:
    state = "verified" if report.verified else "NOT verified"
    lines = [f"{report.model_uri} of token {report.token_id}: {state}"]
    lines += [f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}" for check in report.checks]
    return lines
