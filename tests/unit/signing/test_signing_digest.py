"""The signed per-file SHA-256s and the artifact digest are one claim about one set of bytes: ``sign()``
rebuilds the digest from the bundle's listing (and the sizes hashed) and refuses to hand back a bundle
that signs other bytes. Real model-signing, in process, with a key made by ``cryptography``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hokusai_action.digest.hashing import inspect_model
from hokusai_action.errors import InternalError
from hokusai_action.signing.signer import ModelSigner
from tests.signing_keys import make_signing_files

pytestmark = [pytest.mark.unit]


@pytest.fixture
def signer(tmp_path) -> ModelSigner:
    keys = make_signing_files(tmp_path / "keys")
    signer = ModelSigner("key", key_path=str(keys.key))
    signer.check()
    return signer


@pytest.fixture(params=["dir", "file"])
def model(request, tmp_path):
    if request.param == "file":
        single = tmp_path / "model.bin"
        single.write_bytes(b"m" * 3000)
        return inspect_model(single)
    root = tmp_path / "model"
    (root / "config").mkdir(parents=True)
    (root / "weights.bin").write_bytes(b"w" * 5000)
    (root / "config" / "params.json").write_bytes(b"{}")
    return inspect_model(root)


def test_a_bundle_whose_file_hashes_rebuild_the_digest_is_returned(signer, model):
    signed = signer.sign(model, {"artifact_digest": model.digest})
    try:
        assert (signed.folder / "model.sig").is_file()
    finally:
        signed.cleanup()


def test_a_bundle_that_signs_other_bytes_than_the_digest_is_refused(signer, model):
    other = replace(model, digest="sha256:" + "0" * 64)  # a digest of other bytes than those on disk

    with pytest.raises(InternalError, match="do not rebuild the artifact digest"):
        signer.sign(other, {"artifact_digest": other.digest})
