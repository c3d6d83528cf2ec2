"""The artifact digest: the idempotency key of a registration, so it must track bytes and names only."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tracemalloc
import uuid
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hokusai_action.digest import inspect_model
from hokusai_action.errors import InputError
from hokusai_action.events.model import CloudEventRecord, event_id_for

pytestmark = [pytest.mark.unit]

DIGEST_FORM = re.compile(r"^sha256:[0-9a-f]{64}$")


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


def digest_of(root: Path, files: dict[str, bytes]) -> str:
    return inspect_model(write_tree(root, files)).digest


FILES = {"weights.bin": os.urandom(4096), "config/params.json": b'{"lr": 0.1}', "z/last.txt": b"z"}


def test_the_digest_is_a_sha256_over_the_files(tmp_path: Path) -> None:
    model = inspect_model(write_tree(tmp_path / "m", FILES))
    assert DIGEST_FORM.match(model.digest)
    assert model.files == ("config/params.json", "weights.bin", "z/last.txt")
    assert model.total_bytes == sum(len(b) for b in FILES.values())
    assert model.is_dir
    assert model.root == tmp_path / "m"


def test_same_bytes_give_the_same_digest_whatever_the_order_times_and_modes(tmp_path: Path) -> None:
    first = digest_of(tmp_path / "a", FILES)
    second = write_tree(tmp_path / "b", dict(reversed(list(FILES.items()))))
    for index, path in enumerate(sorted(second.rglob("*"))):
        if path.is_file():
            os.utime(path, (1_000_000 + index, 2_000_000 + index))
            path.chmod(0o600)
    assert inspect_model(second).digest == first
    # and the same folder hashed twice, or through a different spelling of its path
    assert inspect_model(tmp_path / "a").digest == first
    (tmp_path / "x").mkdir()
    assert inspect_model(f"{tmp_path}/x/../a").digest == first


def test_renaming_a_file_changes_the_digest(tmp_path: Path) -> None:
    renamed = {("weights2.bin" if k == "weights.bin" else k): v for k, v in FILES.items()}
    assert digest_of(tmp_path / "a", FILES) != digest_of(tmp_path / "b", renamed)


def test_moving_a_file_into_another_folder_changes_the_digest(tmp_path: Path) -> None:
    moved = {("config/weights.bin" if k == "weights.bin" else k): v for k, v in FILES.items()}
    assert digest_of(tmp_path / "a", FILES) != digest_of(tmp_path / "b", moved)


def test_moving_bytes_between_files_changes_the_digest(tmp_path: Path) -> None:
    # the concatenation of all bytes is the same; only the split differs
    first = digest_of(tmp_path / "a", {"a.bin": b"abc", "b.bin": b"def"})
    second = digest_of(tmp_path / "b", {"a.bin": b"abcd", "b.bin": b"ef"})
    assert first != second


def test_adding_an_empty_file_changes_the_digest(tmp_path: Path) -> None:
    assert digest_of(tmp_path / "a", FILES) != digest_of(tmp_path / "b", {**FILES, "EMPTY": b""})


def test_changing_one_byte_changes_the_digest(tmp_path: Path) -> None:
    changed = {**FILES, "z/last.txt": b"y"}
    assert digest_of(tmp_path / "a", FILES) != digest_of(tmp_path / "b", changed)


def test_a_single_file_model(tmp_path: Path) -> None:
    content = os.urandom(10_000)
    path = tmp_path / "model.pkl"
    path.write_bytes(content)
    model = inspect_model(path)
    assert not model.is_dir
    assert not model.is_mlflow_model
    assert model.files == ("model.pkl",)
    assert model.total_bytes == 10_000
    assert DIGEST_FORM.match(model.digest)
    # the manifest covers the file's name as well as its bytes
    renamed = tmp_path / "other.pkl"
    renamed.write_bytes(content)
    assert inspect_model(renamed).digest != model.digest


def test_a_single_file_digests_like_a_folder_holding_only_it(tmp_path: Path) -> None:
    # the registry uploads a single file as a folder holding it, so both upload the same tree
    content = os.urandom(1000)
    (tmp_path / "model.pkl").write_bytes(content)
    folder = write_tree(tmp_path / "folder", {"model.pkl": content})
    assert inspect_model(tmp_path / "model.pkl").digest == inspect_model(folder).digest


def test_the_digest_is_a_manifest_of_path_size_and_content_hashes(tmp_path: Path) -> None:
    # pinned so a change of algorithm (which would re-register every model) is deliberate
    files = {"b.txt": b"bee", "a/x.bin": b"\x00\x01"}
    manifest = "".join(
        f"{name}\0{len(data)}\0{hashlib.sha256(data).hexdigest()}\n" for name, data in sorted(files.items())
    )
    expected = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    assert digest_of(tmp_path / "m", files) == expected


def test_an_mlflow_model_dir_is_recognised_by_its_mlmodel_file(tmp_path: Path) -> None:
    plain = inspect_model(write_tree(tmp_path / "plain", FILES))
    mlflow_model = inspect_model(write_tree(tmp_path / "mlflow", {**FILES, "MLmodel": b"flavors: {}\n"}))
    nested = inspect_model(write_tree(tmp_path / "nested", {**FILES, "sub/MLmodel": b"flavors: {}\n"}))
    assert not plain.is_mlflow_model
    assert mlflow_model.is_mlflow_model
    assert not nested.is_mlflow_model  # only an MLmodel at the top makes the folder an MLflow model


def test_an_empty_directory_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "only" / "folders").mkdir(parents=True)
    with pytest.raises(InputError) as raised:
        inspect_model(empty)
    assert str(raised.value) == (
        f"Model directory {empty} holds no files. Point --model-path at the trained model's folder or file."
    )
    assert raised.value.exit_code == 2


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "checkpoints" / "final"
    with pytest.raises(InputError) as raised:
        inspect_model(missing)
    assert str(raised.value) == (
        f"Model path {missing} does not exist. Check --model-path (relative paths start at {Path.cwd()})."
    )


def test_a_dangling_symlink_as_the_model_path_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "model"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(InputError, match=r"^Model path .*model does not exist\. Check --model-path"):
        inspect_model(link)


def test_a_dangling_symlink_inside_the_model_is_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "m", FILES)
    (root / "broken.bin").symlink_to(tmp_path / "gone")
    with pytest.raises(InputError) as raised:
        inspect_model(root)
    assert str(raised.value) == f"Model path {root / 'broken.bin'} is not a regular file or directory."


def test_a_symlinked_file_is_hashed_by_its_content(tmp_path: Path) -> None:
    real = write_tree(tmp_path / "real", FILES)
    linked = write_tree(tmp_path / "linked", {k: v for k, v in FILES.items() if k != "weights.bin"})
    (linked / "weights.bin").symlink_to(real / "weights.bin")
    assert inspect_model(linked).digest == inspect_model(real).digest


def test_a_fifo_as_the_model_path_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError) as raised:
        inspect_model(fifo)
    assert str(raised.value) == f"Model path {fifo} is not a regular file or directory."


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "m", FILES)
    secret = root / "weights.bin"
    secret.chmod(0)
    try:
        with pytest.raises(InputError) as raised:
            inspect_model(root)
    finally:
        secret.chmod(0o600)
    assert str(raised.value) == (
        f"Model path {secret} cannot be read: Permission denied. Fix its permissions or point --model-path elsewhere."
    )


def test_a_50_mb_file_is_hashed_in_small_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    with path.open("wb") as handle:
        for _ in range(50):
            handle.write(block)
    expected = hashlib.sha256()
    for _ in range(50):
        expected.update(block)
    del block

    tracemalloc.start()
    try:
        model = inspect_model(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while hashing 50 MB"
    assert model.total_bytes == 50 * 1024 * 1024
    manifest = f"big.bin\0{50 * 1024 * 1024}\0{expected.hexdigest()}\n"
    assert model.digest == "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


# ---------------------------------------------------------------------- the event keyed on the digest
# (events/model.py: the brief gives it no file of its own; its id is a function of token and digest)

TOKEN = "XRAY"
DIGEST = "sha256:" + "ab" * 32
REQUIRED_CLOUDEVENTS_ATTRIBUTES = ("id", "source", "specversion", "type")  # CloudEvents 1.0, "Required"


def make_event(**overrides: object) -> CloudEventRecord:
    fields = {
        "id": event_id_for(TOKEN, DIGEST),
        "source": "hokusai-ml-platform",
        "time": "2026-01-02T03:04:05Z",
        "subject": TOKEN,
        "data": {
            "token_id": TOKEN,
            "mlflow_run_id": "0f" * 16,
            "model_name": f"hokusai-{TOKEN}",
            "model_version": "3",
            "model_uri": f"models:/hokusai-{TOKEN}/3",
            "metric_name": "auroc",
            "metric_value": 0.91,
            "baseline_value": 0.82,
            "artifact_digest": DIGEST,
            "git": {"sha": "0123abc", "ref": "refs/heads/main", "repository": "hokusai/example"},
            "registered_at": "2026-01-02T03:04:05Z",
            "note": "naïve ✓",
        },
    }
    fields.update(overrides)
    return CloudEventRecord(**fields)


def test_event_id_is_deterministic_per_registration() -> None:
    first = event_id_for(TOKEN, DIGEST)
    assert first == event_id_for(TOKEN, DIGEST)
    assert uuid.UUID(first).version == 5


def test_event_id_differs_by_token_and_by_digest() -> None:
    ids = {
        event_id_for(TOKEN, DIGEST),
        event_id_for("YRAY", DIGEST),
        event_id_for(TOKEN, "sha256:" + "cd" * 32),
        event_id_for("YRAY", "sha256:" + "cd" * 32),
    }
    assert len(ids) == 4


@given(
    tokens=st.tuples(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20)),
    digests=st.tuples(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80)),
)
def test_event_ids_collide_only_for_the_same_registration(tokens, digests) -> None:
    # a ':' inside a token could make two different pairs spell one key; token ids cannot hold one
    assume(":" not in tokens[0] + tokens[1])
    same = tokens[0] == tokens[1] and digests[0] == digests[1]
    assert (event_id_for(tokens[0], digests[0]) == event_id_for(tokens[1], digests[1])) is same


def test_structured_has_every_required_cloudevents_attribute() -> None:
    envelope = make_event().structured()
    for attribute in REQUIRED_CLOUDEVENTS_ATTRIBUTES:
        assert isinstance(envelope[attribute], str) and envelope[attribute]
    assert envelope["specversion"] == "1.0"
    assert envelope["type"] == "token_ready_for_deploy"
    assert envelope["subject"] == TOKEN
    assert envelope["datacontenttype"] == "application/json"
    assert envelope["time"] == "2026-01-02T03:04:05Z"
    assert envelope["data"]["artifact_digest"] == DIGEST
    assert set(make_event().attributes()) == set(envelope) - {"data"}


def test_structured_round_trips() -> None:
    event = make_event()
    assert CloudEventRecord.from_structured(event.structured()) == event
    assert CloudEventRecord.from_structured(json.loads(event.structured_bytes())) == event


def test_data_bytes_is_compact_sorted_utf8_json() -> None:
    event = make_event()
    body = event.data_bytes()
    assert json.loads(body.decode("utf-8")) == event.data
    assert b", " not in body and b": " not in body
    assert list(json.loads(body)) == sorted(event.data)
    assert body == json.dumps(event.data, sort_keys=True, separators=(",", ":")).encode("utf-8")


def test_a_cloudevents_library_reads_the_structured_form() -> None:
    from cloudevents.core.bindings.http import HTTPMessage, from_structured_event

    event = make_event()
    parsed = from_structured_event(
        HTTPMessage(headers={"content-type": "application/cloudevents+json"}, body=event.structured_bytes())
    )
    attributes = parsed.get_attributes()
    assert attributes["id"] == event.id
    assert attributes["type"] == "token_ready_for_deploy"
    assert attributes["subject"] == TOKEN
    assert parsed.get_data() == event.data
