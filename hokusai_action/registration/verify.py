"""`model verify`: what the deploy side runs before serving a registered model.

Handed its parts like the registration (registry, database, an optional signature verifier); it builds
no client. It vouches only for the registration the token holds now: a version the token does not hold
(withdrawn by a reset, superseded, never its own) fails its first check. For the one it holds, it
recomputes the artifact digest of the version's own files (downloaded and hashed as streams, or a local
copy), compares it with the version's tag, the token row and the event, compares what those three
record with each other (and with the signed statement), and verifies the signatures when a key, chain
or identity is given. The first mismatch decides the one error line.

Which source was edited is told by the others: the bytes' digest decides the digest; for every other
field the signed statement decides when signatures are verified, else the two sources that agree.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hokusai_action.db.schema import events
from hokusai_action.db.store import Database, Token, get_token, token_missing
from hokusai_action.digest.files import ModelFiles
from hokusai_action.digest.hashing import inspect_model
from hokusai_action.domain.event import SIGNATURE_KEYS
from hokusai_action.domain.statuses import DONE_STATUSES
from hokusai_action.domain.tags import (
    TAG_BASELINE,
    TAG_DIGEST,
    TAG_METRIC,
    TAG_METRIC_VALUE,
    TAG_SIGNATURE_PREFIX,
    TAG_TOKEN,
    model_name_for,
)
from hokusai_action.domain.tokens import normalise_token_id
from hokusai_action.domain.versions import VERSION_PATTERN, normalise_version
from hokusai_action.errors import HokusaiError, TokenStateError
from hokusai_action.registration.verify_report import VerifyReport, shown
from hokusai_action.signing.bundle import signed_file_digests
from hokusai_action.signing.digests import sha256_file
from hokusai_action.signing.signer import (
    MODEL_BUNDLE,
    STATEMENT_BUNDLE,
    STATEMENT_FILE,
)
from hokusai_action.signing.verifier import SignatureVerifier

if TYPE_CHECKING:
    from hokusai_action.mlflow.registry import MlflowRegistry

NOT_REGISTERED = "Token {token} has no registration to verify (status {status})."
NOT_REGISTERED_HINT = "`model verify` checks the registration a token holds now: register it first."
NOT_HELD_NOW = (
    "token {token} is {status}: it holds no registration now, so version {version} is not one to deploy "
    "(a reset withdrew it, or it was never registered)"
)
OTHER_VERSION_HELD = (
    "token {token} holds version {held} now, not version {version}: only the registration a token holds is verified"
)
STORED_FILES_GONE = "the registered version holds no files (its artifacts are gone from the artifact store)"


def _event_payload(database: Database, event_id: str | None) -> dict[str, Any] | None:
    if not event_id:
        return None
    with database.unit_of_work() as uow:
        row = uow.execute(sa.select(events.c.payload).where(events.c.event_id == event_id)).first()
    return dict(row[0]) if row else None


def _changed_files(model_dir: Path, bundle: Path) -> str:
    """Which files differ from the signed listing (read from the bundle, before its signature is checked)."""
    signed = signed_file_digests(bundle)
    if set(signed) == {"."}:  # a single-file model: the folder holds that one file
        files = [p for p in model_dir.iterdir() if p.is_file()]
        signed = {files[0].name: signed["."]} if len(files) == 1 else signed
    local = {path.relative_to(model_dir).as_posix(): path for path in sorted(model_dir.rglob("*")) if path.is_file()}
    changed = [name for name in sorted(signed) if name in local and sha256_file(local[name]) != signed[name]]
    missing = sorted(set(signed) - set(local))
    extra = sorted(set(local) - set(signed))
    parts = []
    if changed:
        parts.append("bytes changed in " + ", ".join(changed[:5]))
    if missing:
        parts.append("missing " + ", ".join(missing[:5]))
    if extra:
        parts.append("not registered " + ", ".join(extra[:5]))
    return "; ".join(parts)


def held_version(token: Token) -> str | None:
    """The version the token's registration holds now; None while it holds none (draft after a reset,
    registering, failed, archived)."""
    if token.model_status in DONE_STATUSES and token.model_version:
        return normalise_version(str(token.model_version))
    return None


def verify_registration(
    token_id: str,
    *,
    registry: MlflowRegistry,
    database: Database,
    verifier: SignatureVerifier | None = None,
    version: str | None = None,
    model_path: str | None = None,
    workdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Check the registration ``token_id`` holds now. Raises for what is not a mismatch (exit 2/3/4).

    ``version`` asks for a version number: one the token does not hold now (withdrawn by a reset,
    superseded, never its own) is a failed check, never a pass on that version's own records.
    """
    say = progress or (lambda _line: None)
    asked = normalise_version(version) if version is not None else None
    token = _token(database, normalise_token_id(token_id))
    held = held_version(token)
    if asked is None and held is None:
        raise TokenStateError(
            NOT_REGISTERED.format(token=token.token_id, status=token.model_status), hint=NOT_REGISTERED_HINT
        )
    number = asked or held
    assert number is not None
    model_name = token.model_name or model_name_for(token.token_id)
    report = VerifyReport(token.token_id, model_name, number, f"models:/{model_name}/{number}")
    if not report.add("registration", number == held, _holding(token, number, held)):
        return report
    report.event_id = token.registered_event_id
    model_version = registry.get_version(model_name, number)
    if model_version is None:
        report.add("mlflow version", False, f"tokens.model_version is {number}, but MLflow has no such version")
        return report
    scratch = Path(tempfile.mkdtemp(prefix="hokusai-verify-", dir=workdir))
    try:
        model_dir = _model_files(report, registry, model_path, scratch, say)
        if model_dir is not None:
            _check(report, _Records.read(database, token, model_version), registry, verifier, model_dir, scratch, say)
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _token(database: Database, token_id: str) -> Token:
    database.require_schema()
    with database.unit_of_work() as uow:
        token = get_token(uow, token_id)
    if token is None:
        raise token_missing(token_id, database.display_url)
    return token


def _holding(token: Token, asked: str, held: str | None) -> str:
    if held is None:
        return NOT_HELD_NOW.format(token=token.token_id, status=token.model_status, version=asked)
    if asked != held:
        return OTHER_VERSION_HELD.format(token=token.token_id, held=held, version=asked)
    return f"token {token.token_id} is {token.model_status} with version {held}"


@dataclass(frozen=True)
class _Records:
    """What the registration recorded: the version's tags, the token row and its event's data."""

    token: Token
    version: Any  # MLflow's ModelVersion
    tags: Mapping[str, str]
    data: Mapping[str, Any] | None  # None: the site pruned the event row

    @classmethod
    def read(cls, database: Database, token: Token, version: Any) -> _Records:
        event = _event_payload(database, token.registered_event_id)
        data = dict(event.get("data") or {}) if event is not None else None
        return cls(token, version, dict(version.tags or {}), data)


def _model_files(
    report: VerifyReport, registry: MlflowRegistry, model_path: str | None, scratch: Path, say: Callable[[str], None]
) -> Path | None:
    """The files to check: the local copy given, else the version's own files, downloaded."""
    if model_path:
        say(f"hashing the local copy {model_path}")
        return Path(model_path)
    say(f"downloading {report.model_uri} (streamed to {scratch})")
    model_dir = registry.download_version(report.model_name, report.model_version, scratch / "model")
    if not model_dir.is_dir() or not any(path.is_file() for path in model_dir.rglob("*")):
        report.add("model bytes", False, STORED_FILES_GONE)
        return None
    return model_dir


def _check(
    report: VerifyReport,
    records: _Records,
    registry: MlflowRegistry,
    verifier: SignatureVerifier | None,
    model_dir: Path,
    scratch: Path,
    say: Callable[[str], None],
) -> None:
    """The bytes against the records, the records with each other, and the signatures given a key."""
    model = inspect_model(model_dir)
    report.artifact_digest = model.digest
    say(f"recomputed {model.digest} over {len(model.files)} file(s), {model.total_bytes} bytes")
    if records.data is None:  # the site deletes old events: the tag and the row still must agree
        report.add("event", True, "event row not found (pruned)")
    signature = _recorded_signature(records.tags, records.token.signature, records.data)
    report.signature = signature
    bundles = _download_bundles(registry, signature, scratch)
    _check_bytes(report, records, model, model_dir, bundles)
    statement = None
    if verifier is not None:
        statement = _verify_signatures(report, verifier, signature, bundles, model_dir, scratch)
    _compare_records(report, records, statement)
    if signature is None:
        report.add("signature", verifier is None, "unsigned: the registration carries no signature")
    elif verifier is None:
        report.add("signature", True, f"signed ({signature.get('method')}), not verified: no key given")


def _download_bundles(registry: MlflowRegistry, signature: Mapping[str, Any] | None, scratch: Path) -> Path | None:
    if not signature or not signature.get("bundle_uri"):
        return None
    try:
        return registry.download(signature["bundle_uri"], scratch / "signature")
    except HokusaiError:  # reported as a check: a signed registration without its bundles
        return None


def _check_bytes(
    report: VerifyReport, records: _Records, model: ModelFiles, model_dir: Path, bundles: Path | None
) -> None:
    in_database: dict[str, Any] = {"tokens.artifact_digest": records.token.artifact_digest}
    if records.data is not None:
        in_database["event data.artifact_digest"] = records.data.get("artifact_digest")
    tag = records.tags.get(TAG_DIGEST)
    recorded = {"version tag " + TAG_DIGEST: tag, **in_database}
    bytes_changed = _bytes_changed(model.digest, tag, recorded, in_database)
    if bytes_changed:
        where = _changed_files(model_dir, bundles / MODEL_BUNDLE) if bundles else ""
        report.add("model bytes", False, f"{where + '; ' if where else ''}{bytes_changed}")
        return
    report.add("model bytes", True, f"{model.digest} recomputed from {len(model.files)} file(s)")
    report.compare("artifact digest", recorded, ("the model bytes hash to", model.digest))


def _bytes_changed(
    digest: str, tag: str | None, recorded: Mapping[str, Any], in_database: Mapping[str, Any]
) -> str | None:
    """Why the bytes are not the registered ones, or None when they are.

    The token row and the event (the site's records) decide: the bytes pass when they hash to what
    those hold. A version tag that agrees with changed bytes was edited to match them (whoever can
    replace the artifacts can edit the version's tags). Only when the row and the event disagree with
    each other does the majority of all three decide.
    """
    values = list(in_database.values())
    if all(value == values[0] for value in values):
        trusted = values[0]
    else:
        votes = list(recorded.values())
        if sum(value == digest for value in votes) * 2 > len(votes):
            return None
        trusted = None
    if trusted == digest:
        return None
    registered = ", ".join(f"{name} {shown(value)}" for name, value in in_database.items())
    edited = " (the version tag was edited to match)" if tag == digest else ""
    return f"model bytes changed{edited}: the bytes hash to {digest}; registered: {registered}"


def _recorded_signature(
    tags: Mapping[str, str], row: Mapping[str, Any] | None, data: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    from_tags = {key: tags[TAG_SIGNATURE_PREFIX + key] for key in SIGNATURE_KEYS if TAG_SIGNATURE_PREFIX + key in tags}
    for candidate in (row, (data or {}).get("signature"), from_tags or None):
        if candidate:
            return dict(candidate)
    return None


# (check, version tag, tokens column, event data key, where the signed statement says it)
_RECORDED_FIELDS: tuple[tuple[str, str | None, str, str, tuple[str, ...]], ...] = (
    ("token id", TAG_TOKEN, "token_id", "token_id", ("token_id",)),
    ("model version", None, "model_version", "model_version", ("model_version",)),
    ("run id", None, "mlflow_run_id", "mlflow_run_id", ("mlflow_run_id",)),
    ("metric", TAG_METRIC, "metric_name", "metric_name", ("gate", "name")),
    ("metric value", TAG_METRIC_VALUE, "metric_value", "metric_value", ("gate", "value")),
    ("baseline", TAG_BASELINE, "baseline_value", "baseline_value", ("gate", "baseline")),
)


def _compare_records(report: VerifyReport, records: _Records, statement: Mapping[str, Any] | None) -> None:
    """Each field the registration recorded, across the version, the token row and the event; with a
    verified signature the signed statement decides, else the records that agree."""
    own = {
        "model version": ("MLflow version", records.version.version),
        "run id": ("MLflow version run", records.version.run_id),
    }
    for check, tag, column, key, signed_at in _RECORDED_FIELDS:
        found: dict[str, Any] = {}
        if check in own:
            found[own[check][0]] = own[check][1]
        if tag is not None:
            found[f"version tag {tag}"] = records.tags.get(tag)
        found[f"tokens.{column}"] = getattr(records.token, column)
        if records.data is not None:
            found[f"event data.{key}"] = records.data.get(key)
        if check == "model version":
            found = {name: _as_version(value) for name, value in found.items()}
        reference = None
        if statement:
            said = _dig(statement, signed_at)
            reference = ("the signed statement says", _as_version(said) if check == "model version" else said)
        report.compare(check, found, reference)
    _compare_signature_records(report, records)


def _compare_signature_records(report: VerifyReport, records: _Records) -> None:
    row_signature = records.token.signature or {}
    event_signature = (records.data.get("signature") or {}) if records.data is not None else None
    for key in SIGNATURE_KEYS:
        found = {f"version tag {TAG_SIGNATURE_PREFIX}{key}": records.tags.get(TAG_SIGNATURE_PREFIX + key)}
        found[f"tokens.signature_{key}"] = row_signature.get(key)
        if event_signature is not None:
            found[f"event data.signature.{key}"] = event_signature.get(key)
        if any(value is not None for value in found.values()):
            report.compare(f"signature {key}", found, None)


def _dig(mapping: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = mapping
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _as_version(value: Any) -> Any:
    """A recorded version as MLflow's number ("02" and 2 are version 2); anything else as it is, so a
    value that is not a version number shows up as the one that disagrees."""
    text = str(value) if value is not None else None
    return str(int(text)) if text is not None and VERSION_PATTERN.fullmatch(text) else value


def _verify_signatures(
    report: VerifyReport,
    verifier: SignatureVerifier,
    signature: Mapping[str, Any] | None,
    bundles: Path | None,
    model_dir: Path,
    scratch: Path,
) -> dict[str, Any] | None:
    """Verify both bundles; return the signed statement (trusted) or None."""
    if signature is None:
        report.add(
            "signature", False, f"unsigned: the registration carries no signature to check with {verifier.method}"
        )
        return None
    if bundles is None:
        report.add("signature bundles", False, f"cannot download the bundles from {signature.get('bundle_uri')}")
        return None
    if not _bundles_as_recorded(report, signature, bundles):
        return None
    if not _model_signature_valid(report, verifier, signature, bundles, model_dir):
        return None
    return _signed_statement(report, verifier, bundles, scratch)


def _bundles_as_recorded(report: VerifyReport, signature: Mapping[str, Any], bundles: Path) -> bool:
    """Each downloaded bundle file hashes to what the registration recorded."""
    for name, key in (
        (MODEL_BUNDLE, "model_bundle_sha256"),
        (STATEMENT_FILE, "statement_sha256"),
        (STATEMENT_BUNDLE, "statement_bundle_sha256"),
    ):
        path = bundles / name
        actual = sha256_file(path) if path.is_file() else None
        if not report.add(
            f"bundle {name}",
            actual == signature.get(key),
            f"sha256 {actual or '(missing)'}"
            + ("" if actual == signature.get(key) else f", recorded {signature.get(key)}"),
        ):
            return False
    return True


def _model_signature_valid(
    report: VerifyReport, verifier: SignatureVerifier, signature: Mapping[str, Any], bundles: Path, model_dir: Path
) -> bool:
    target = model_dir
    if set(signed_file_digests(bundles / MODEL_BUNDLE)) == {"."}:
        files = [p for p in model_dir.iterdir() if p.is_file()]
        target = files[0] if len(files) == 1 else model_dir
    try:
        verifier.verify(target, bundles / MODEL_BUNDLE)
    except HokusaiError:
        raise  # Sigstore unreachable (exit 4): not a verdict on the signature
    except Exception as exc:  # the library's ValueError / InvalidSignature / OpenSSL errors
        where = _changed_files(model_dir, bundles / MODEL_BUNDLE)
        return report.add("model signature", False, f"signature invalid ({where or _reason(exc)})")
    return report.add("model signature", True, f"valid ({verifier.method}), signed by {signature.get('identity')}")


def _signed_statement(
    report: VerifyReport, verifier: SignatureVerifier, bundles: Path, scratch: Path
) -> dict[str, Any] | None:
    """The statement, once its signature is valid and it signs the bytes the report recomputed."""
    statement_dir = scratch / "statement"
    statement_dir.mkdir()
    shutil.copyfile(bundles / STATEMENT_FILE, statement_dir / STATEMENT_FILE)
    try:
        verifier.verify(statement_dir, bundles / STATEMENT_BUNDLE)
    except HokusaiError:
        raise
    except Exception as exc:
        report.add("statement signature", False, f"signature invalid ({_reason(exc)})")
        return None
    statement = json.loads((statement_dir / STATEMENT_FILE).read_text(encoding="utf-8"))
    report.add("statement signature", True, f"valid ({verifier.method})")
    if not report.add(
        "signed artifact digest",
        statement.get("artifact_digest") == report.artifact_digest,
        f"the statement signs {statement.get('artifact_digest')}, the bytes are {report.artifact_digest}",
    ):
        return None
    return statement


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
