"""X.509 certificates for the tests, made with ``cryptography`` (nothing downloaded): one builder for the
TLS front's CA (``tests/tls_files.py``) and the signing tests' CA (``tests/signing_keys.py``).

A CA certificate carries what verifiers ask of an issuer (basic constraints, certificate and CRL
signing, a subject key id); a leaf carries its issuer's key id and what its use needs, given by the
caller (a server name, an extended key usage).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any


def common_name(text: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def issue_certificate(
    subject: str,
    public_key: Any,
    issuer: str,
    issuer_key: Any,
    *,
    ca: bool,
    not_before: dt.datetime,
    lifetime: dt.timedelta,
    extensions: Iterable[tuple[Any, bool]] = (),
) -> Any:
    """``subject``'s certificate for ``public_key``, signed by ``issuer_key`` (SHA-256); ``extensions``
    are (extension, critical) pairs added to what a CA or a leaf always has."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    builder = (
        x509.CertificateBuilder()
        .subject_name(common_name(subject))
        .issuer_name(common_name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def key_usage(**allowed: bool) -> Any:
    """``KeyUsage`` with only the named uses allowed (e.g. ``digital_signature=True``)."""
    from cryptography import x509

    uses = (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
        "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    )  # fmt: skip
    return x509.KeyUsage(**{use: allowed.get(use, False) for use in uses})


def certificate_pem(certificate: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return certificate.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
