"""Verifying signature bundles with model-signing (``model verify``): a public key, a certificate
chain, or a Sigstore identity and its issuer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hokusai_action.errors import InputError, ServiceUnavailable
from hokusai_action.signing.digests import hashing_config
from hokusai_action.signing.keys import describe, load_certificates
from hokusai_action.signing.signer import KEYLESS_FAILED_HINT

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
            assert self.identity and self.issuer, "without a key or a chain, an identity and its issuer"
            try:  # Sigstore's trust root comes over the network (TUF): an outage is exit 4, not "invalid"
                config = config.use_sigstore_verifier(identity=self.identity, oidc_issuer=self.issuer)
            except Exception as exc:
                raise ServiceUnavailable(
                    SIGSTORE_UNREACHABLE.format(kind=type(exc).__name__, detail=describe(exc)),
                    hint=KEYLESS_FAILED_HINT,
                ) from exc
        config.verify(folder, bundle)
