"""Signing and verifying registrations with OpenSSF ``model-signing`` (one module per outside system).

What is signed (README, "Verifiable registrations"):
- the model files, as a Sigstore bundle over an in-toto statement listing each file's SHA-256. Its file
  set is the artifact digest's: every file under the model directory, links followed inside it, git
  files included (model-signing leaves ``.git*`` out unless told otherwise, our digest does not);
- the registration statement (``registration.json``), signed the same way as a one-file directory.

All cryptography is model-signing's (and ``cryptography``'s for reading keys and certificates); this
module only chooses files, checks the inputs before anything changes, and turns failures into our errors.
Built in ``wiring.py`` and handed to the core, which calls ``check()`` before the claim and ``sign()``
after the upload, before the commit.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hokusai_action.digest.files import ModelFiles
from hokusai_action.errors import InputError, InternalError, ServiceUnavailable
from hokusai_action.settings.table import SIGN_METHODS

METHODS = SIGN_METHODS
SIGNATURE_FOLDER = "hokusai/signature"  # + /<event id>; run artifacts, outside the logged model's tree
MODEL_BUNDLE = "model.sig"
STATEMENT_FILE = "registration.json"
STATEMENT_BUNDLE = "registration.json.sig"
STATEMENT_TYPE = "https://hokusai.dev/registration/v1"
SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # model-signing's (Sigstore's) curves
OIDC_TIMEOUT = 10.0
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"

KEY_MISSING = "--sign {method} needs a private key: pass --signing-key PATH or set HOKUSAI_SIGNING_KEY to the PEM."
KEY_UNREADABLE = "Signing key {where} cannot be read: {reason}."
KEY_NOT_PRIVATE = "Signing key {where} is not a PEM private key ({reason})."
KEY_IS_PUBLIC = (
    "Signing key {where} is a public key; signing needs the private key it belongs to (PEM 'PRIVATE KEY' or "
    "'EC PRIVATE KEY'). The public key is for `hokusai-ml-platform model verify --public-key`."
)
KEY_IS_CERTIFICATE = (
    "Signing key {where} is a certificate; signing needs the private key it certifies (PEM 'PRIVATE KEY' or "
    "'EC PRIVATE KEY'). Certificates go to --signing-certificate-chain."
)
# the labels of a file's PEM blocks: not secret, and they say what was given instead of a private key
_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----")
KEY_ENCRYPTED = "Signing key {where} is encrypted; model-signing is given no password here. Use an unencrypted key."
KEY_WRONG_TYPE = (
    "Signing key {where} is {kind}; model-signing signs with elliptic-curve keys on P-256, P-384 or P-521. "
    "Make one with `openssl ecparam -name prime256v1 -genkey -noout -out signing-key.pem`."
)
CHAIN_MISSING = "--sign certificate needs the signing certificate: pass --signing-certificate-chain PATH (leaf first)."
CHAIN_UNREADABLE = "Certificate chain {path} cannot be read: {reason}."
CHAIN_NOT_PEM = "Certificate chain {path} holds no PEM certificate ({reason})."
CERT_KEY_MISMATCH = (
    "The signing certificate ({subject}) is not the signing key's: its public key differs. Put the key's "
    "certificate first in --signing-certificate-chain."
)
CERT_CANNOT_SIGN = "The signing certificate ({subject}) does not allow digital signatures (KeyUsage / code signing)."
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
SIGNED_SET_DIFFERS = (
    "The signed file set differs from the artifact digest's ({detail}); nothing was committed. This is a bug: "
    "re-run with --debug and report it."
)
SIGNED_DIGEST_DIFFERS = (
    "The signed per-file hashes do not rebuild the artifact digest ({signed} from the bundle, {digest} "
    "registered); nothing was committed. This is a bug: re-run with --debug and report it."
)


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


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def hashing_config() -> Any:
    """model-signing's hashing, set to the artifact digest's file set: SHA-256 per file, links inside the
    model followed (digest.py refuses any other), git files kept."""
    from model_signing import hashing

    return (
        hashing.Config()
        .use_file_serialization(hashing_algorithm="sha256", allow_symlinks=True)
        .set_ignored_paths(paths=[], ignore_git_paths=False)
        .set_allow_symlinks(True)  # hash() applies the Config's flag over the serializer's
    )


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else "no detail")[:300]


# ------------------------------------------------------------------------------ key material


def load_private_key(pem: bytes, where: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:  # "Password was not given but private key is encrypted"
        raise InputError(KEY_ENCRYPTED.format(where=where)) from exc
    except Exception as exc:  # ValueError, UnsupportedAlgorithm: the library's, whatever the bytes were
        labels = {label.decode() for label in _PEM_LABEL.findall(pem)}
        if any(label.endswith("PUBLIC KEY") for label in labels):
            raise InputError(KEY_IS_PUBLIC.format(where=where)) from None
        if any(label.endswith("CERTIFICATE") for label in labels):
            raise InputError(KEY_IS_CERTIFICATE.format(where=where)) from None
        # the reason is the library's: never the key's bytes
        raise InputError(KEY_NOT_PRIVATE.format(where=where, reason=type(exc).__name__)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in SUPPORTED_CURVES:
        kind = f"an EC key on {key.curve.name}" if isinstance(key, ec.EllipticCurvePrivateKey) else _key_kind(key)
        raise InputError(KEY_WRONG_TYPE.format(where=where, kind=kind))
    return key


def _key_kind(key: Any) -> str:
    name = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
    return f"a {name or 'non-EC'} key"


def public_key_fingerprint(public_key: Any) -> str:
    """The identity of a key signer: SHA-256 of its PEM public key, as model-signing's bundle hint."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(
        encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(pem).hexdigest()


def load_certificates(paths: Sequence[str | os.PathLike[str]]) -> list[Any]:
    from cryptography import x509

    found: list[Any] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(CHAIN_UNREADABLE.format(path=path, reason=exc.strerror or exc)) from exc
        try:
            found.extend(x509.load_pem_x509_certificates(data))
        except ValueError as exc:
            raise InputError(CHAIN_NOT_PEM.format(path=path, reason=_describe(exc))) from None
    return found


def _can_sign(certificate: Any) -> bool:
    from cryptography import x509
    from cryptography.x509 import oid

    with contextlib.suppress(x509.ExtensionNotFound):
        if certificate.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    with contextlib.suppress(x509.ExtensionNotFound):
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        return oid.ExtendedKeyUsageOID.CODE_SIGNING in usage
    return False


@contextlib.contextmanager
def private_folder() -> Iterator[Path]:
    """A 0700 temporary folder, removed on the way out (key copies never outlive a signing)."""
    folder = Path(tempfile.mkdtemp(prefix="hokusai-sign-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


# ----------------------------------------------------------------------------------- signer


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
            self._check_key()
        if self.method == "certificate":
            self._check_certificate()
        if self.method == "sigstore" and not (self._identity_token or self._oidc_request_url):
            raise InputError(KEYLESS_NO_TOKEN)
        if self.method == "sigstore":
            self.identity = _token_identity(self._identity_token) if self._identity_token else None

    def _check_key(self) -> None:
        if self._key_pem:
            where, data = "from HOKUSAI_SIGNING_KEY", self._key_pem.encode("utf-8")
        elif self._key_path:
            where = self._key_path
            try:
                data = Path(self._key_path).read_bytes()
            except OSError as exc:
                raise InputError(KEY_UNREADABLE.format(where=where, reason=exc.strerror or exc)) from exc
        else:
            raise InputError(KEY_MISSING.format(method=self.method))
        key = load_private_key(data, where)
        self._key_bytes = data
        self._public_key = key.public_key()
        self.identity = public_key_fingerprint(self._public_key)

    def _check_certificate(self) -> None:
        if not self._chain_paths:
            raise InputError(CHAIN_MISSING)
        certificates = load_certificates(self._chain_paths)
        if not certificates:
            raise InputError(CHAIN_NOT_PEM.format(path=", ".join(self._chain_paths), reason="empty"))
        leaf, *chain = certificates
        subject = leaf.subject.rfc4514_string() or "no subject"
        if leaf.public_key() != self._public_key:
            raise InputError(CERT_KEY_MISMATCH.format(subject=subject))
        if not _can_sign(leaf):
            raise InputError(CERT_CANNOT_SIGN.format(subject=subject))
        self._leaf, self._chain = leaf, chain
        self.identity = subject

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
                signed_root = _digest_view(model, secrets / "view")
                self._run(config, signed_root, model_bundle, "model files")
                _check_signed_set(model_bundle, signed_root, model.files)
                _check_signed_digest(model_bundle, model)
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
            key_path = _write_private(secrets / "key.pem", self._key_bytes)
            if self.method == "key":
                return config.use_elliptic_key_signer(private_key=key_path)
            from cryptography.hazmat.primitives import serialization

            leaf = _write_private(secrets / "leaf.pem", self._leaf.public_bytes(serialization.Encoding.PEM))
            chain = [
                _write_private(secrets / f"chain-{n}.pem", cert.public_bytes(serialization.Encoding.PEM))
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
                KEYLESS_FAILED.format(kind=type(exc).__name__, detail=_describe(exc)), hint=KEYLESS_FAILED_HINT
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
                    KEYLESS_FAILED.format(kind=type(exc).__name__, detail=_describe(exc)), hint=KEYLESS_FAILED_HINT
                ) from exc
            raise InputError(SIGNING_FAILED.format(what=what, kind=type(exc).__name__, detail=_describe(exc))) from exc


def statement_bytes(statement: Mapping[str, Any]) -> bytes:
    return (json.dumps(dict(statement), sort_keys=True, indent=2) + "\n").encode("utf-8")


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


# ------------------------------------------------------------------------------ bundle reading


def bundle_statement(bundle_path: Path) -> dict[str, Any]:
    """The in-toto statement inside a bundle, decoded but NOT verified (names a changed file; trust it
    only after ``verify_bundle``)."""
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


def _digest_view(model: ModelFiles, folder: Path) -> Path:
    """What model-signing hashes: the digest's files, each under its digest name, as a link to the file
    the digest read. model-signing walks with ``glob("**/*")``, which does not enter linked folders
    (digest.py follows them inside the model), so it is handed this tree instead of the model folder:
    its file set is the digest's by construction, and each file's bytes are read through the link."""
    if not model.is_dir:
        return model.real_root or model.root  # one file: model-signing lists it as "."
    view = folder / (model.root.name or "model")
    for relative in model.files:
        target = view / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.abspath(model.path_of(relative)), target)
    return view


def _check_signed_set(bundle: Path, model_root: Path, model_files: Sequence[str]) -> None:
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
    digest.py's own record formula (path, size, content SHA-256 per file, in the digest's order)."""
    from hokusai_action.digest.files import _record

    signed = signed_file_digests(bundle)
    if not model.is_dir and set(signed) == {"."}:  # a single-file model is listed as "."
        signed = {model.files[0]: signed["."]}
    manifest = hashlib.sha256()
    for relative, state in zip(model.files, model.states, strict=True):
        manifest.update(_record(relative, state.size, signed.get(relative, "(not signed)")))
    return "sha256:" + manifest.hexdigest()


def _check_signed_digest(bundle: Path, model: ModelFiles) -> None:
    """The bytes model-signing hashed must be the ones the digest covers: a file rewritten since it was
    hashed is the user's (exit 2, ``ensure_unchanged``); any other difference is ours."""
    rebuilt = digest_from_signed_hashes(bundle, model)
    if rebuilt != model.digest:
        model.ensure_unchanged()
        raise InternalError(SIGNED_DIGEST_DIFFERS.format(signed=rebuilt, digest=model.digest))


# ---------------------------------------------------------------------------------- verifier


VERIFY_BAD_KEY = "Public key {path} cannot be used: {reason}."
SIGSTORE_UNREACHABLE = "Sigstore's trust root could not be fetched to verify a keyless signature ({kind}: {detail})."
VERIFY_ONE_WAY = "Give one way to verify signatures, not {given}."
VERIFY_IDENTITY_NEEDS_ISSUER = "--identity needs --issuer (e.g. https://token.actions.githubusercontent.com)."
VERIFY_ISSUER_NEEDS_IDENTITY = "--issuer needs --identity (the signer's identity the certificate must name)."


class SignatureVerifier:
    """Verifies bundles with model-signing: a public key, a certificate chain, or a Sigstore identity."""

    def __init__(
        self,
        *,
        public_key: str | None = None,
        certificate_chain: Sequence[str] = (),
        identity: str | None = None,
        issuer: str | None = None,
    ) -> None:
        given = [name for name, value in (("--public-key", public_key), ("--certificate-chain", certificate_chain),
                                          ("--identity", identity)) if value]  # fmt: skip
        if len(given) > 1:
            raise InputError(VERIFY_ONE_WAY.format(given=" and ".join(given)))
        if identity and not issuer:
            raise InputError(VERIFY_IDENTITY_NEEDS_ISSUER)
        if issuer and not identity:
            raise InputError(VERIFY_ISSUER_NEEDS_IDENTITY)
        self.public_key, self.certificate_chain = public_key, tuple(certificate_chain)
        self.identity, self.issuer = identity, issuer
        if public_key:
            from cryptography.hazmat.primitives import serialization

            try:
                serialization.load_pem_public_key(Path(public_key).read_bytes())
            except OSError as exc:
                raise InputError(VERIFY_BAD_KEY.format(path=public_key, reason=exc.strerror or exc)) from exc
            except ValueError as exc:
                raise InputError(VERIFY_BAD_KEY.format(path=public_key, reason="not a PEM public key")) from exc
        if certificate_chain:
            load_certificates(certificate_chain)  # unreadable / not PEM: exit 2 now

    @property
    def method(self) -> str:
        return "key" if self.public_key else ("certificate" if self.certificate_chain else "sigstore")

    def verify(self, folder: Path, bundle: Path) -> None:
        """Raise ``ValueError`` (or the library's error) when ``bundle`` does not sign ``folder``."""
        from model_signing import verifying

        config = verifying.Config().set_hashing_config(hashing_config())
        if self.public_key:
            config = config.use_elliptic_key_verifier(public_key=self.public_key)
        elif self.certificate_chain:
            config = config.use_certificate_verifier(certificate_chain=list(self.certificate_chain))
        else:
            try:  # Sigstore's trust root comes over the network (TUF): an outage is exit 4, not "invalid"
                config = config.use_sigstore_verifier(identity=self.identity, oidc_issuer=self.issuer)
            except Exception as exc:
                raise ServiceUnavailable(
                    SIGSTORE_UNREACHABLE.format(kind=type(exc).__name__, detail=_describe(exc)),
                    hint=KEYLESS_FAILED_HINT,
                ) from exc
        config.verify(folder, bundle)
