"""The signed statement of a registration (docs/deploy/verify.md): this token's model,
these bytes, beat this baseline. Signed after the upload (the statement names the version) and before
the commit; the bundles go beside the model and their hashes on the version and in the event.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from hokusai_action import __version__
from hokusai_action.domain.tags import TAG_SIGNATURE_PREFIX
from hokusai_action.domain.versions import RegisteredVersion
from hokusai_action.registration.event import event_time
from hokusai_action.registration.parts import Registry
from hokusai_action.registration.request import MeasuredRequest

if TYPE_CHECKING:
    from hokusai_action.signing.signer import ModelSigner


def registration_statement(
    request: MeasuredRequest, version: RegisteredVersion, registered_at: str, digest: str
) -> dict[str, Any]:
    """The signed claim: this token's model, these bytes, beat this baseline."""
    from hokusai_action.signing.signer import STATEMENT_TYPE

    measured = request.measured
    predictions = re.search(r"sha256:([0-9a-f]{64})", measured.detail or "")
    if measured.source != "predictions":
        predictions = None
    return {
        "_type": STATEMENT_TYPE,
        "token_id": request.token_id,
        "model_name": version.model_name,
        "model_version": version.version,
        "model_uri": version.model_uri,
        "mlflow_run_id": version.run_id,
        "artifact_digest": digest,
        "gate": request.gate.as_dict(),
        "metric_provenance": {
            "source": measured.source,
            "path": measured.source_path,
            "detail": measured.detail,
            "predictions_sha256": predictions.group(1) if predictions else None,
        },
        "git": request.git.as_dict(),
        "ci_run_url": request.ci_run_url,
        "registered_at": registered_at,
        "tool_version": __version__,
    }


def sign_registration(
    request: MeasuredRequest,
    version: RegisteredVersion,
    registered_at: dt.datetime,
    *,
    signer: ModelSigner | None,
    registry: Registry,
    event_id: str,
) -> dict[str, str] | None:
    """Sign the model files and the statement, put the bundles beside the model (the run's artifacts,
    in a folder of this registration's own: a reused version's run keeps every registration's bundles)
    and their hashes on the version; return the event's ``data.signature`` (None when unsigned)."""
    if signer is None:
        return None
    from hokusai_action.signing.signer import SIGNATURE_FOLDER

    digest = request.model.digest  # the uploaded bytes' digest, known once the upload is done
    statement = registration_statement(request, version, event_time(registered_at), digest)
    signed = signer.sign(request.model, statement)
    try:
        request.model.ensure_unchanged()  # what was signed is what was hashed and uploaded
        bundle_uri = registry.upload_signature(version.run_id, signed.folder, f"{SIGNATURE_FOLDER}/{event_id}")
        record = signed.record(bundle_uri)
        registry.set_version_tags(
            version.model_name, version.version, {f"{TAG_SIGNATURE_PREFIX}{k}": v for k, v in record.items()}
        )
    finally:
        signed.cleanup()
    return record
