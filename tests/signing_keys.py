"""Keys and a small CA made with ``cryptography`` for the signing tests (nothing is downloaded).

The signing key is the canary one (``CANARIES.signing_key_pem``): a test fails if its PEM shows up in
anything captured. The CA is root -> intermediate -> leaf, the leaf certifying the signing key with
KeyUsage digitalSignature and the code-signing extended key usage, as model-signing's verifier wants.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from tests.canaries import CANARIES
from tests.certificates import certificate_pem, issue_certificate, key_usage, private_key_pem


@dataclass(frozen=True)
class SigningFiles:
    key: Path  # the canary private key (PEM, PKCS8)
    public_key: Path
    other_public_key: Path  # of a key that signed nothing
    rsa_key: Path  # a private key model-signing cannot use
    chain: Path  # leaf (for ``key``) + intermediate
    root: Path  # the trust anchor
    other_root: Path  # a CA that certified nothing here
    other_chain: Path  # a leaf for another key + the intermediate: does not match ``key``


def _pem_public(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _certificate(subject: str, public_key, issuer_name: str, issuer_key, *, ca: bool, start: dt.datetime):
    """A CA, or a leaf certifying a code-signing key, valid 30 days from ``start``."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    signing = [
        (key_usage(digital_signature=True), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False),
    ]
    return issue_certificate(
        subject,
        public_key,
        issuer_name,
        issuer_key,
        ca=ca,
        not_before=start,
        lifetime=dt.timedelta(days=30),
        extensions=() if ca else signing,
    )


def make_signing_files(folder: Path) -> SigningFiles:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    folder.mkdir(parents=True, exist_ok=True)
    key = serialization.load_pem_private_key(CANARIES.signing_key_pem.encode(), password=None)
    other = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    root_key, other_root_key, intermediate_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("Hokusai Test Root", root_key.public_key(), "Hokusai Test Root", root_key, ca=True,
                        start=now - dt.timedelta(days=2))  # fmt: skip
    other_root = _certificate("Other Root", other_root_key.public_key(), "Other Root", other_root_key, ca=True,
                              start=now - dt.timedelta(days=2))  # fmt: skip
    intermediate = _certificate("Hokusai Test Intermediate", intermediate_key.public_key(), "Hokusai Test Root",
                                root_key, ca=True, start=now - dt.timedelta(days=1))  # fmt: skip
    leaf = _certificate("ci-signer@hokusai.test", key.public_key(), "Hokusai Test Intermediate", intermediate_key,
                        ca=False, start=now - dt.timedelta(hours=1))  # fmt: skip
    other_leaf = _certificate("someone-else@hokusai.test", other.public_key(), "Hokusai Test Intermediate",
                              intermediate_key, ca=False, start=now - dt.timedelta(hours=1))  # fmt: skip

    files = SigningFiles(
        key=folder / "signing-key.pem",
        public_key=folder / "signing-key.pub",
        other_public_key=folder / "other-key.pub",
        rsa_key=folder / "rsa-key.pem",
        chain=folder / "chain.pem",
        root=folder / "root.pem",
        other_root=folder / "other-root.pem",
        other_chain=folder / "other-chain.pem",
    )
    files.key.write_bytes(private_key_pem(key))
    files.key.chmod(0o600)
    files.public_key.write_bytes(_pem_public(key))
    files.other_public_key.write_bytes(_pem_public(other))
    files.rsa_key.write_bytes(private_key_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    files.chain.write_bytes(certificate_pem(leaf) + certificate_pem(intermediate))
    files.root.write_bytes(certificate_pem(root))
    files.other_root.write_bytes(certificate_pem(other_root))
    files.other_chain.write_bytes(certificate_pem(other_leaf) + certificate_pem(intermediate))
    return files
