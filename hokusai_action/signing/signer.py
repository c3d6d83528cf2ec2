"""Signing a registration with OpenSSF ``model-signing``: ``ModelSigner`` and what it produces.

What is signed (docs/deploy/verify.md):
- the model files, as a Sigstore bundle over an in-toto statement listing each file's SHA-256. Its file
  set is the artifact digest's: every file under the model directory, links followed inside it, git
  files included (model-signing leaves ``.git*`` out unless told otherwise, our digest does not);
- the registration statement (``registration.json``), signed the same way as a one-file directory.

All cryptography is model-signing's (and ``cryptography``'s for reading keys and certificates); this
package only chooses files, checks the inputs before anything changes, and turns failures into our
errors: the key material in ``keys``, what is hashed in ``digests``, reading and checking bundles in
``bundle``, and ``model verify``'s side in ``verifier``. Built in ``commands.wiring`` and handed to the core,
which calls ``check()`` before the claim and ``sign()`` after the upload, before the commit.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hokusai_action.digest.files import ModelFiles
from hokusai_action.errors import InputError, ServiceUnavailable
from hokusai_action.settings.table import SIGN_METHODS
from hokusai_action.signing.bundle import bundle_identity, check_signed_digest, check_signed_set, digest_view
from hokusai_action.signing.digests import hashing_config, sha256_file, statement_bytes
from hokusai_action.signing.keys import (
    describe,
    private_folder,
    public_key_fingerprint,
    read_private_key,
    signing_certificate,
    write_private,
)

METHODS = SIGN_METHODS
SIGNATURE_FOLDER = "hokusai/signature"  # + /<event id>; run artifacts, outside the logged model's tree
MODEL_BUNDLE = "model.sig"
STATEMENT_FILE = "registration.json"
STATEMENT_BUNDLE = "registration.json.sig"
STATEMENT_TYPE = "https://hokusai.dev/registration/v1"
OIDC_TIMEOUT = 10.0

KEYLESS_NO_TOKEN = (
    "--sign sigstore (keyless) needs an OIDC identity: in GitHub Actions grant `permissions: id-token: write` "
    "(ACTIONS_ID_TOKEN_REQUEST_URL is then set), or set SIGSTORE_ID_TOKEN."
)
KEYLESS_FAILED = (
    "Keyless signing with Sigstore failed ({kind}: {detail}). Nothing was committed; the claim was released."
)
KEYLESS_FAILED_HINT = "Check that Sigstore (Fulcio, Rekor) and the OIDC issuer are reachable, then re-run."
SIGNING_FAILED = "Signing the {what} failed ({kind}: {detail})."
UNKNOWN_METHOD = "Unknown signing method '{method}'. Choose one of: {methods}."


@dataclass(frozen=True)
class SignedRegistration:
    """What a signing produced: the bundle files (in a temporary folder) and what is recorded about them."""

    method: str
    identity: str
    folder: Path  # holds MODEL_BUNDLE, STATEMENT_FILE, STATEMENT_BUNDLE
    model_bundle_sha256: str
    statement_sha256: str
    statement_bundle_sha256: str

    def record(self, bundle_uri: str) -> dict[str, str]:
        """The ``data.signature`` object of the event (the same keys as the tags and the row)."""
        return {
            "method": self.method,
            "identity": self.identity,
            "model_bundle_sha256": self.model_bundle_sha256,
            "statement_sha256": self.statement_sha256,
            "statement_bundle_sha256": self.statement_bundle_sha256,
            "bundle_uri": bundle_uri,
        }

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class ModelSigner:
    """Signs a registration with the configured method. Construction reads nothing; ``check()`` reads
    and validates the key, certificate or identity (exit 2, before the claim)."""

    def __init__(
        self,
        method: str,
        *,
        key_path: str | None = None,
        key_pem: str | None = None,
        certificate_chain: Sequence[str] = (),
        identity_token: str | None = None,
        oidc_request_url: str | None = None,
        oidc_request_token: str | None = None,
        oidc_issuer: str | None = None,
    ) -> None:
        if method not in METHODS[1:]:
            raise InputError(UNKNOWN_METHOD.format(method=method, methods=", ".join(METHODS)))
        self.method = method
        self._key_path = key_path
        self._key_pem = key_pem
        self._chain_paths = tuple(certificate_chain)
        self._identity_token = identity_token
        self._oidc_request_url = oidc_request_url
        self._oidc_request_token = oidc_request_token
        self._oidc_issuer = oidc_issuer
        self._key_bytes: bytes | None = None
        self._leaf: Any = None
        self._chain: list[Any] = []
        self.identity: str | None = None

    def __repr__(self) -> str:  # never the key
        return f"ModelSigner(method={self.method!r}, identity={self.identity!r})"

    # ---------------------------------------------------------------------------- validation

    def check(self) -> None:
        """Read and validate everything the method needs; raise ``InputError`` (exit 2) otherwise."""
        if self.method in ("key", "certificate"):
            self._key_bytes, key = read_private_key(method=self.method, key_pem=self._key_pem, key_path=self._key_path)
            self._public_key = key.public_key()
            self.identity = public_key_fingerprint(self._public_key)
        if self.method == "certificate":
            self._leaf, self._chain = signing_certificate(self._chain_paths, self._public_key)
            self.identity = self._leaf.subject.rfc4514_string() or "no subject"
        if self.method == "sigstore" and not (self._identity_token or self._oidc_request_url):
            raise InputError(KEYLESS_NO_TOKEN)
        if self.method == "sigstore":
            self.identity = _token_identity(self._identity_token) if self._identity_token else None

    # ------------------------------------------------------------------------------- signing

    def sign(self, model: ModelFiles, statement: Mapping[str, Any]) -> SignedRegistration:
        """Sign ``model``'s files (the digest's file set) and ``statement``; return the bundles (a temp folder).

        Keyless failures (the OIDC token, Fulcio, Rekor) raise ``ServiceUnavailable`` (exit 4).
        """
        out = Path(tempfile.mkdtemp(prefix="hokusai-signature-"))
        try:
            with private_folder() as secrets:
                config = self._config(secrets)
                model_bundle = out / MODEL_BUNDLE
                signed_root = digest_view(model, secrets / "view")
                self._run(config, signed_root, model_bundle, "model files")
                check_signed_set(model_bundle, signed_root, model.files)
                check_signed_digest(model_bundle, model)
                statement_dir = out / "statement"
                statement_dir.mkdir()
                statement_path = statement_dir / STATEMENT_FILE
                statement_path.write_bytes(statement_bytes(statement))
                self._run(config, statement_dir, out / STATEMENT_BUNDLE, "registration statement")
            (out / STATEMENT_FILE).write_bytes(statement_path.read_bytes())
            shutil.rmtree(statement_dir)
            if self.method == "sigstore" and self.identity is None:
                self.identity = bundle_identity(out / MODEL_BUNDLE) or "unknown"
            return SignedRegistration(
                method=self.method,
                identity=self.identity or "unknown",
                folder=out,
                model_bundle_sha256=sha256_file(out / MODEL_BUNDLE),
                statement_sha256=sha256_file(out / STATEMENT_FILE),
                statement_bundle_sha256=sha256_file(out / STATEMENT_BUNDLE),
            )
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise

    def _config(self, secrets: Path) -> Any:
        from model_signing import signing

        config = signing.Config().set_hashing_config(hashing_config())
        if self.method in ("key", "certificate"):
            assert self._key_bytes is not None, "check() first"
            key_path = write_private(secrets / "key.pem", self._key_bytes)
            if self.method == "key":
                return config.use_elliptic_key_signer(private_key=key_path)
            from cryptography.hazmat.primitives import serialization

            leaf = write_private(secrets / "leaf.pem", self._leaf.public_bytes(serialization.Encoding.PEM))
            chain = [
                write_private(secrets / f"chain-{n}.pem", cert.public_bytes(serialization.Encoding.PEM))
                for n, cert in enumerate(self._chain)
            ]
            return config.use_certificate_signer(
                private_key=key_path, signing_certificate=leaf, certificate_chain=chain
            )
        # keyless: every step from here reaches the network (GitHub's token endpoint, Sigstore)
        try:
            token = self._identity_token or self._fetch_github_token()
            if self.identity is None:
                self.identity = _token_identity(token)
            return config.use_sigstore_signer(
                identity_token=token, use_ambient_credentials=False, oidc_issuer=self._oidc_issuer
            )
        except Exception as exc:
            raise ServiceUnavailable(
                KEYLESS_FAILED.format(kind=type(exc).__name__, detail=describe(exc)), hint=KEYLESS_FAILED_HINT
            ) from exc

    def _fetch_github_token(self) -> str:
        """GitHub's OIDC token for the audience ``sigstore`` (the runner's documented request)."""
        assert self._oidc_request_url
        separator = "&" if urllib.parse.urlsplit(self._oidc_request_url).query else "?"
        if urllib.parse.urlsplit(self._oidc_request_url).scheme not in ("https", "http"):
            raise ValueError("ACTIONS_ID_TOKEN_REQUEST_URL is not an http(s) URL")
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            f"{self._oidc_request_url}{separator}audience=sigstore",
            headers={"Authorization": f"bearer {self._oidc_request_token or ''}", "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=OIDC_TIMEOUT) as response:  # noqa: S310 - the runner's URL
            return str(json.loads(response.read())["value"])

    def _run(self, config: Any, folder: Path, bundle: Path, what: str) -> None:
        try:
            config.sign(folder, bundle)
        except Exception as exc:
            if self.method == "sigstore":
                raise ServiceUnavailable(
                    KEYLESS_FAILED.format(kind=type(exc).__name__, detail=describe(exc)), hint=KEYLESS_FAILED_HINT
                ) from exc
            raise InputError(SIGNING_FAILED.format(what=what, kind=type(exc).__name__, detail=describe(exc))) from exc


def _token_identity(token: str) -> str | None:
    """The identity Fulcio will certify, read (not verified) from the token's claims: for GitHub the
    workflow ref (``https://github.com/<job_workflow_ref>``), otherwise the email or subject."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    if claims.get("job_workflow_ref"):
        return f"https://github.com/{claims['job_workflow_ref']}"
    return claims.get("email") or claims.get("sub")
