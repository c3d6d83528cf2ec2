"""The ``token_ready_for_deploy`` event as a CloudEvents 1.0 record.

This module is pure data: no client, no I/O. Sinks receive a ``CloudEventRecord`` and choose their
own wire form (Pub/Sub: binary mode; webhook: structured mode; database: the ``events`` row).
Spec: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

EVENT_TYPE = "token_ready_for_deploy"
SPEC_VERSION = "1.0"
DATA_CONTENT_TYPE = "application/json"
# data.signature of a signed registration (null when unsigned); the same names as the version tags
# (hokusai.signature.<key>) and the token row's columns (signature_<key>). Consumers parse these keys.
SIGNATURE_KEYS = (
    "method",  # key, certificate or sigstore
    "identity",  # the signer: key fingerprint, certificate subject or OIDC identity
    "model_bundle_sha256",  # sha256 of the model files' Sigstore bundle
    "statement_sha256",  # sha256 of registration.json
    "statement_bundle_sha256",  # sha256 of registration.json's bundle
    "bundle_uri",  # where the three live (runs:/<run>/hokusai/signature/<event id>)
)

# A fixed namespace makes the event id a pure function of the registration, so every delivery of
# one registration (first run, re-run, relay) carries the same id and consumers can dedupe on it.
_EVENT_NAMESPACE = uuid.UUID("6f1c8a52-2b51-4c8e-9f0e-8d0b7f4c2a11")


def event_id_for(token_id: str, artifact_digest: str, registration: int = 0) -> str:
    """The deterministic event id of registering ``artifact_digest`` for ``token_id``.

    ``registration`` counts the events the token had before this registration: a token reset to draft
    and registered again (even with the same bytes) is a new registration and gets a new id, while a
    re-run of one registration keeps it. ``0`` gives the id used before resets were possible.
    """
    name = f"{EVENT_TYPE}:{token_id}:{artifact_digest}"
    if registration:
        name += f":{registration}"
    return str(uuid.uuid5(_EVENT_NAMESPACE, name))


@dataclass(frozen=True)
class CloudEventRecord:
    id: str
    source: str
    time: str  # RFC 3339, UTC
    subject: str
    data: dict[str, Any] = field(default_factory=dict)
    type: str = EVENT_TYPE
    specversion: str = SPEC_VERSION
    datacontenttype: str = DATA_CONTENT_TYPE

    def attributes(self) -> dict[str, str]:
        """Context attributes, without ``data`` (binary mode carries these as headers/attributes)."""
        return {
            "id": self.id,
            "source": self.source,
            "specversion": self.specversion,
            "type": self.type,
            "time": self.time,
            "subject": self.subject,
            "datacontenttype": self.datacontenttype,
        }

    def structured(self) -> dict[str, Any]:
        """The structured-mode JSON envelope (``application/cloudevents+json``)."""
        return {**self.attributes(), "data": self.data}

    def data_bytes(self) -> bytes:
        """``data`` encoded as compact, key-sorted UTF-8 JSON (binary-mode body)."""
        return json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def structured_bytes(self) -> bytes:
        return json.dumps(self.structured(), sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_structured(cls, envelope: dict[str, Any]) -> CloudEventRecord:
        return cls(
            id=envelope["id"],
            source=envelope["source"],
            time=envelope["time"],
            subject=envelope["subject"],
            data=dict(envelope.get("data") or {}),
            type=envelope.get("type", EVENT_TYPE),
            specversion=envelope.get("specversion", SPEC_VERSION),
            datacontenttype=envelope.get("datacontenttype", DATA_CONTENT_TYPE),
        )
