"""A test CA, a certificate for 127.0.0.1 and a client certificate, made with ``cryptography`` (nothing
downloaded), for a TLS front (``tests/upload_proxy.py``) before the real MLflow server."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.certificates import certificate_pem, issue_certificate, private_key_pem


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
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = dt.datetime.now(dt.UTC)
    valid = {"not_before": now - dt.timedelta(minutes=5), "lifetime": dt.timedelta(days=1, minutes=5)}

    def pem(cert, key=None) -> bytes:
        return certificate_pem(cert) + (private_key_pem(key) if key is not None else b"")

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = issue_certificate("hokusai test CA", ca_key.public_key(), "hokusai test CA", ca_key, ca=True, **valid)

    def leaf(subject: str, *extensions: Any) -> tuple[Any, Any]:
        """A certificate the CA issued to ``subject`` with the (non-critical) ``extensions``, and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        extra = [(extension, False) for extension in extensions]
        cert = issue_certificate(
            subject, key.public_key(), "hokusai test CA", ca_key, ca=False, extensions=extra, **valid
        )
        return cert, key

    server_cert, server_key = leaf(
        "127.0.0.1",
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
    )
    client_cert, client_key = leaf("hokusai test client", x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]))
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(ca=folder / "ca.pem", server=folder / "server.pem", client=folder / "client.pem")
    files.ca.write_bytes(pem(ca_cert))
    files.server.write_bytes(pem(server_cert, server_key))
    files.client.write_bytes(pem(client_cert, client_key))
    return files
