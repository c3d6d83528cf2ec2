"""A test CA, a certificate for 127.0.0.1 and a client certificate, made with ``cryptography`` (nothing
downloaded), for a TLS front (``tests/upload_proxy.py``) before the real MLflow server."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the trust anchor (PEM)
    server: Path  # certificate + key for 127.0.0.1 (PEM)
    client: Path  # certificate + key the client presents (PEM), signed by ``ca``

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=self.ca)
        return context


def make_tls_files(folder: Path) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def certificate(subject, key, issuer, issuer_key, *, ca: bool, extensions=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def pem(cert, key=None) -> bytes:
        out = cert.public_bytes(serialization.Encoding.PEM)
        if key is not None:
            out += key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        return out

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate(name("hokusai test CA"), ca_key, name("hokusai test CA"), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = certificate(
        name("127.0.0.1"),
        server_key,
        ca_cert.subject,
        ca_key,
        ca=False,
        extensions=[
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        ],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = certificate(
        name("hokusai test client"),
        client_key,
        ca_cert.subject,
        ca_key,
        ca=False,
        extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])],
    )
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(ca=folder / "ca.pem", server=folder / "server.pem", client=folder / "client.pem")
    files.ca.write_bytes(pem(ca_cert))
    files.server.write_bytes(pem(server_cert, server_key))
    files.client.write_bytes(pem(client_cert, client_key))
    return files
