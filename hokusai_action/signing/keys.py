"""Key material for signing: the private key, the certificate chain, and the private folder
model-signing reads copies of them from. Everything is checked before the claim (exit 2), and no
message ever holds a key's bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hokusai_action.errors import InputError

SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # model-signing's (Sigstore's) curves

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


def describe(exc: BaseException) -> str:
    """The first line of a library's error, short enough for one line of output."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else "no detail")[:300]


def read_private_key(*, method: str, key_pem: str | None, key_path: str | None) -> tuple[bytes, Any]:
    """The PEM bytes and the key of ``--sign key`` or ``certificate``: ``HOKUSAI_SIGNING_KEY`` first,
    else the file at ``key_path``."""
    if key_pem:
        where, data = "from HOKUSAI_SIGNING_KEY", key_pem.encode("utf-8")
    elif key_path:
        where = key_path
        try:
            data = Path(key_path).read_bytes()
        except OSError as exc:
            raise InputError(KEY_UNREADABLE.format(where=where, reason=exc.strerror or exc)) from exc
    else:
        raise InputError(KEY_MISSING.format(method=method))
    return data, load_private_key(data, where)


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
            raise InputError(CHAIN_NOT_PEM.format(path=path, reason=describe(exc))) from None
    return found


def signing_certificate(paths: Sequence[str], public_key: Any) -> tuple[Any, list[Any]]:
    """The leaf certificate of the chain at ``paths`` (leaf first) and the rest of the chain; the leaf
    must certify ``public_key`` and allow digital signatures."""
    if not paths:
        raise InputError(CHAIN_MISSING)
    certificates = load_certificates(paths)
    if not certificates:
        raise InputError(CHAIN_NOT_PEM.format(path=", ".join(paths), reason="empty"))
    leaf, *chain = certificates
    subject = leaf.subject.rfc4514_string() or "no subject"
    if leaf.public_key() != public_key:
        raise InputError(CERT_KEY_MISMATCH.format(subject=subject))
    if not _can_sign(leaf):
        raise InputError(CERT_CANNOT_SIGN.format(subject=subject))
    return leaf, chain


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


def write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path
