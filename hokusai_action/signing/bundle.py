"""Reading a Sigstore bundle (decoded, not verified: ``SignatureVerifier`` verifies), and the checks
that a model bundle signs exactly the bytes the artifact digest covers.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hokusai_action.digest.files import ModelFiles
from hokusai_action.errors import InternalError

SIGNED_SET_DIFFERS = (
    "The signed file set differs from the artifact digest's ({detail}); nothing was committed. This is a bug: "
    "re-run with --debug and report it."
)
SIGNED_DIGEST_DIFFERS = (
    "The signed per-file hashes do not rebuild the artifact digest ({signed} from the bundle, {digest} "
    "registered); nothing was committed. This is a bug: re-run with --debug and report it."
)


def bundle_statement(bundle_path: Path) -> dict[str, Any]:
    """The in-toto statement inside a bundle, decoded but NOT verified: enough to name a file that
    changed, trusted only once ``SignatureVerifier.verify`` has passed."""
    bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
    envelope = bundle.get("dsseEnvelope") or bundle.get("dsse_envelope") or {}
    return json.loads(base64.b64decode(envelope["payload"]))


def signed_file_digests(bundle_path: Path) -> dict[str, str]:
    """file -> sha256 hex, as listed in a model bundle's statement (decoded, not verified)."""
    statement = bundle_statement(bundle_path)
    resources = (statement.get("predicate") or {}).get("resources") or []
    return {item["name"]: item["digest"] for item in resources if item.get("algorithm") == "sha256"}


def bundle_identity(bundle_path: Path) -> str | None:
    """The signer named by a bundle's leaf certificate (keyless: the SAN Fulcio certified)."""
    from cryptography import x509

    try:
        bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
        material = bundle.get("verificationMaterial") or {}
        raw = (material.get("certificate") or {}).get("rawBytes") or (
            (material.get("x509CertificateChain") or {}).get("certificates") or [{}]
        )[0].get("rawBytes")
        if not raw:
            return None
        certificate = x509.load_der_x509_certificate(base64.b64decode(raw))
        with contextlib.suppress(x509.ExtensionNotFound):
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            for value in [
                *names.get_values_for_type(x509.UniformResourceIdentifier),
                *names.get_values_for_type(x509.RFC822Name),
            ]:
                return str(value)
        return certificate.subject.rfc4514_string()
    except (OSError, ValueError, KeyError):
        return None


def digest_view(model: ModelFiles, folder: Path) -> Path:
    """What model-signing hashes: the digest's files, each under its digest name, as a link to the file
    the digest read. model-signing walks with ``glob("**/*")``, which does not enter linked folders
    (``digest.walk`` follows them inside the model), so it is handed this tree instead of the model folder:
    its file set is the digest's by construction, and each file's bytes are read through the link."""
    if not model.is_dir:
        return model.real_root or model.root  # one file: model-signing lists it as "."
    view = folder / (model.root.name or "model")
    for relative in model.files:
        target = view / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.abspath(model.path_of(relative)), target)
    return view


def check_signed_set(bundle: Path, model_root: Path, model_files: Sequence[str]) -> None:
    """The signed file set must be the digest's: the two are one claim about one set of bytes."""
    signed = set(signed_file_digests(bundle))
    if model_root.is_file():
        expected = {model_root.name}
        signed = {Path(name).name or model_root.name for name in signed} if len(signed) == 1 else signed
    else:
        expected = set(model_files)
    if signed != expected:
        extra, missing = sorted(signed - expected)[:3], sorted(expected - signed)[:3]
        raise InternalError(SIGNED_SET_DIFFERS.format(detail=f"only signed: {extra}, only in the digest: {missing}"))


def digest_from_signed_hashes(bundle: Path, model: ModelFiles) -> str:
    """The artifact digest rebuilt from the bundle's per-file SHA-256s and the sizes ``model`` hashed, by
    ``digest.files``' own record formula (path, size, content SHA-256 per file, in the digest's order)."""
    from hokusai_action.digest.files import _record

    signed = signed_file_digests(bundle)
    if not model.is_dir and set(signed) == {"."}:  # a single-file model is listed as "."
        signed = {model.files[0]: signed["."]}
    manifest = hashlib.sha256()
    for relative, state in zip(model.files, model.states, strict=True):
        manifest.update(_record(relative, state.size, signed.get(relative, "(not signed)")))
    return "sha256:" + manifest.hexdigest()


def check_signed_digest(bundle: Path, model: ModelFiles) -> None:
    """The bytes model-signing hashed must be the ones the digest covers: a file rewritten since it was
    hashed is the user's (exit 2, ``ensure_unchanged``); any other difference is ours."""
    rebuilt = digest_from_signed_hashes(bundle, model)
    if rebuilt != model.digest:
        model.ensure_unchanged()
        raise InternalError(SIGNED_DIGEST_DIFFERS.format(signed=rebuilt, digest=model.digest))
