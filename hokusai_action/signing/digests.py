"""What a signature covers, hashed: a bundle's or the statement's SHA-256, the registration
statement's bytes, and model-signing's hashing set to the artifact digest's file set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def statement_bytes(statement: Mapping[str, Any]) -> bytes:
    """The registration statement as it is signed and stored: sorted keys, one trailing newline."""
    return (json.dumps(dict(statement), sort_keys=True, indent=2) + "\n").encode("utf-8")


def hashing_config() -> Any:
    """model-signing's hashing, set to the artifact digest's file set: SHA-256 per file, links inside the
    model followed (``digest.walk`` refuses any other), git files kept."""
    from model_signing import hashing

    return (
        hashing.Config()
        .use_file_serialization(hashing_algorithm="sha256", allow_symlinks=True)
        .set_ignored_paths(paths=[], ignore_git_paths=False)
        .set_allow_symlinks(True)  # hash() applies the Config's flag over the serializer's
    )
