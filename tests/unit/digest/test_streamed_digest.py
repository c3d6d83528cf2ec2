"""The digest computed while the files are uploaded must be the digest of ``hash_model``, byte for byte.

Existing registrations keep their digest: a first registration hashes as it uploads (``StreamedDigest``),
a re-run hashes first (``hash_model``), and both must name the same bytes the same way.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hokusai_action.digest.hashing import hash_model, inspect_model
from hokusai_action.digest.streamed import STREAM_BLOCK, StreamedDigest
from hokusai_action.digest.walk import scan_model
from hokusai_action.errors import ModelChanged
from tests.helpers import write_tree

pytestmark = [pytest.mark.unit]


def stream(path: Path, *, piece: int | None = 16384, workers: int = 4, shuffle: bool = True) -> str:
    """Send every file as an HTTP client would: in pieces, several at a time, in any order."""
    streamed = StreamedDigest(scan_model(path))
    order = list(range(len(streamed.model.files)))
    if shuffle:
        random.shuffle(order)

    def send(index: int) -> int:
        with streamed.open(index) as reader:
            sent = 0
            while chunk := reader.read(piece if piece else -1):
                sent += len(chunk)
                if not piece:
                    break
            streamed.done(index, reader)
            return sent

    with ThreadPoolExecutor(workers) as pool:
        sent = sum(pool.map(send, order))
    hashed = streamed.finish()
    assert sent == hashed.total_bytes == streamed.model.total_bytes
    return hashed.digest


def fail_a_read(monkeypatch: pytest.MonkeyPatch, module, *, number: int) -> None:
    """Files opened through ``module._open_listed`` fail their ``number``-th read (counted over all of
    them) with EIO, once; every other read succeeds."""
    real_open = module._open_listed
    reads = 0

    class FailingFile(io.FileIO):
        def readinto(self, buffer) -> int:  # type: ignore[override]
            nonlocal reads
            reads += 1
            if reads == number:
                raise OSError(5, "Input/output error")
            return super().readinto(buffer)

    def open_failing(path: str, identity: tuple[int, int]):
        handle, state = real_open(path, identity)
        handle.close()
        return FailingFile(path, "rb"), state

    monkeypatch.setattr(module, "_open_listed", open_failing)


SHAPES = {
    "one small file": {"model.pkl": b"weights"},
    "one empty file": {"empty.bin": b""},
    "exactly one block": {"w.bin": os.urandom(STREAM_BLOCK)},
    "a block and a byte": {"w.bin": os.urandom(STREAM_BLOCK + 1), "a.txt": b"a"},
    "nested folders": {"a/b/c/d.bin": os.urandom(3000), "a/b.bin": os.urandom(10), "z": b"", "MLmodel": b"f: {}"},
    "many small": {f"shard-{i:03d}.bin": os.urandom(i * 7) for i in range(120)},
    "unicode and spaces": {"é t/ü ber.bin": os.urandom(99), "名前.txt": b"x"},
}


# every shape with every read size, except one-byte reads of the block-sized files: a million one-byte
# reads prove nothing the other sizes do not
READS = [
    (shape, piece)
    for shape in sorted(SHAPES)
    for piece in (1, 16384, 5 * 1024 * 1024, None)
    if not (piece == 1 and shape in ("exactly one block", "a block and a byte"))
]


@pytest.mark.parametrize(("shape", "piece"), READS)
def test_streamed_digest_is_the_hashed_digest(tmp_path: Path, shape: str, piece: int | None) -> None:
    root = write_tree(tmp_path / "m", SHAPES[shape])
    assert stream(root, piece=piece) == inspect_model(root).digest


def test_a_single_file_model_streams_to_the_same_digest(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(os.urandom(STREAM_BLOCK * 2 + 17))
    assert stream(path) == inspect_model(path).digest


def test_links_inside_the_model_stream_to_the_same_digest(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "m", {"real/w.bin": os.urandom(5000), "c.json": b"{}"})
    (root / "latest.bin").symlink_to("real/w.bin")
    (root / "alias").symlink_to("real", target_is_directory=True)
    assert stream(root) == inspect_model(root).digest


@settings(max_examples=25, deadline=None)
@given(
    files=st.dictionaries(
        st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6}){0,2}", fullmatch=True), st.binary(max_size=3000), min_size=1, max_size=8
    ),
    piece=st.integers(min_value=1, max_value=5000),
)
def test_any_tree_streams_to_its_hashed_digest(tmp_path_factory, files: dict[str, bytes], piece: int) -> None:
    paths = set(files)
    # a name cannot be both a file and a folder
    files = {p: c for p, c in files.items() if not any(o.startswith(p + "/") for o in paths)}
    root = write_tree(tmp_path_factory.mktemp("tree"), files)
    assert stream(root, piece=piece) == hash_model(scan_model(root)).digest


def test_a_retry_that_starts_over_hashes_the_bytes_once(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "m", {"w.bin": os.urandom(STREAM_BLOCK + 500)})
    streamed = StreamedDigest(scan_model(root))
    with streamed.open(0) as reader:
        assert len(reader) == STREAM_BLOCK + 500
        reader.read(70000)
        assert reader.tell() == 70000
        assert reader.seek(0) == 0  # urllib3 rewinds the body before it retries
        body = reader.read()
        streamed.done(0, reader)
    assert len(body) == STREAM_BLOCK + 500
    assert streamed.finish().digest == inspect_model(root).digest


def test_a_reader_never_resends_from_the_middle(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "m", {"w.bin": os.urandom(4000)})
    with StreamedDigest(scan_model(root)).open(0) as reader:
        reader.read(100)
        with pytest.raises(io.UnsupportedOperation):
            reader.seek(50)


def test_a_file_that_grows_while_it_is_sent_stops_the_upload(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "m", {"w.bin": os.urandom(3000)})
    streamed = StreamedDigest(scan_model(root))
    with streamed.open(0) as reader:
        with (root / "w.bin").open("ab") as handle:
            handle.write(b"more")
        with pytest.raises(ModelChanged, match=r"w\.bin grew or shrank while it was read") as raised:
            reader.read()
        assert reader.failure is raised.value  # kept: an HTTP client wraps what its body raises


def test_a_file_that_shrinks_while_it_is_sent_stops_the_upload(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "m", {"w.bin": os.urandom(3000)})
    streamed = StreamedDigest(scan_model(root))
    with streamed.open(0) as reader:
        os.truncate(root / "w.bin", 1000)
        with pytest.raises(ModelChanged):
            reader.read()


@pytest.mark.parametrize("change", ["link", "deleted", "replaced"])
def test_a_file_changed_after_the_walk_is_never_read(tmp_path: Path, change: str) -> None:
    root = write_tree(tmp_path / "m", {"a.bin": b"a", "w.bin": os.urandom(300)})
    secret = tmp_path / "secret"
    secret.write_bytes(b"SECRET")
    streamed = StreamedDigest(scan_model(root))
    if change == "deleted":
        (root / "w.bin").unlink()
    else:  # kept aside, so that its inode number cannot be handed to the new file
        (root / "w.bin").rename(tmp_path / "w.old")
    if change == "link":
        (root / "w.bin").symlink_to(secret)
    elif change == "replaced":
        (root / "w.bin").write_bytes(b"SECRET")
    with pytest.raises(ModelChanged, match=r"The model changed while it was being uploaded: .*w.bin") as raised:
        streamed.open(1)
    assert "No version was created" in str(raised.value)


class PausingProgress:
    """A hash's progress that counts the reads, says when the first came, and pauses the hash after each."""

    def __init__(self, pause: Callable[[], object]) -> None:
        self.reads = 0
        self.first_read = threading.Event()
        self._pause = pause

    def advance(self, nbytes: int) -> None:
        self.reads += 1
        self.first_read.set()
        self._pause()

    def file_done(self) -> None:
        return None


def test_a_background_hash_gives_the_digest_or_stops_when_cancelled(tmp_path: Path) -> None:
    from hokusai_action.digest.background import BackgroundHash

    root = write_tree(tmp_path / "m", {f"w{i}.bin": os.urandom(STREAM_BLOCK) for i in range(4)})
    assert BackgroundHash(scan_model(root)).result().digest == inspect_model(root).digest

    slow = PausingProgress(pause=lambda: time.sleep(0.05))
    many = write_tree(tmp_path / "many", {f"w{i:02d}.bin": os.urandom(1000) for i in range(40)})
    background = BackgroundHash(scan_model(many), slow)
    assert slow.first_read.wait(10)
    background.cancel()
    assert slow.reads <= 3  # stopped at the next read, not after reading all 40 files


def test_a_background_hash_raises_in_the_caller(tmp_path: Path) -> None:
    from hokusai_action.digest.background import BackgroundHash

    root = write_tree(tmp_path / "m", {"w.bin": b"abc"})
    model = scan_model(root)
    (root / "w.bin").rename(tmp_path / "aside")
    (root / "w.bin").symlink_to(tmp_path / "aside")
    with pytest.raises(ModelChanged):
        BackgroundHash(model).result()


def test_a_file_answered_as_stored_before_it_was_all_sent_is_refused(tmp_path: Path) -> None:
    """A proxy that answers for the store before taking the whole body: the rest is never hashed as sent."""
    from hokusai_action.errors import ServiceUnavailable

    streamed = StreamedDigest(scan_model(write_tree(tmp_path / "m", {"weights.bin": os.urandom(3 * STREAM_BLOCK)})))
    with streamed.open(0) as reader:
        reader.read(STREAM_BLOCK)  # the client stopped here: the answer came first
        with pytest.raises(ServiceUnavailable) as raised:
            streamed.done(0, reader)
    assert raised.value.exit_code == 4
    assert f"after {STREAM_BLOCK} of its {3 * STREAM_BLOCK} bytes" in str(raised.value)
    with pytest.raises(AssertionError):  # never recorded: no digest for this model
        streamed.finish()


def test_a_stopped_upload_gives_out_no_more_bytes(tmp_path: Path) -> None:
    from hokusai_action.digest.streamed import UploadStopped

    streamed = StreamedDigest(scan_model(write_tree(tmp_path / "m", {"weights.bin": os.urandom(3 * STREAM_BLOCK)})))
    with streamed.open(0) as reader:
        assert len(reader.read(STREAM_BLOCK)) == STREAM_BLOCK
        streamed.stop()  # SIGTERM in the main thread, while this one sends
        with pytest.raises(UploadStopped):
            reader.read(STREAM_BLOCK)


# ------------------------------------------------------------------ big files read ahead by a second thread


@pytest.fixture
def read_ahead_from_small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of 64 KiB and up are read ahead, in 16 KiB blocks: the two-thread path on small test files."""
    from hokusai_action.digest import hashing as digest

    monkeypatch.setattr(digest, "PIPELINE_FROM", 64 * 1024)
    monkeypatch.setattr(digest, "PIPELINE_BLOCK", 16 * 1024)


@pytest.mark.parametrize(
    "sizes",
    [[64 * 1024], [64 * 1024 + 1, 5, 0], [16 * 1024 * 7, 64 * 1024 - 1, 200 * 1024 + 3]],
    ids=["exactly-the-threshold", "a-byte-over-and-small-ones", "blocks-and-odd-tails"],
)
def test_files_read_ahead_hash_as_a_plain_loop_does(
    tmp_path: Path, read_ahead_from_small_files: None, sizes: list[int]
) -> None:
    files = {f"f{i}.bin": os.urandom(size) for i, size in enumerate(sizes)}
    root = write_tree(tmp_path / "m", files)
    expected = hashlib.sha256()
    for name in sorted(files):
        expected.update(f"{name}\0{len(files[name])}\0{hashlib.sha256(files[name]).hexdigest()}\n".encode())
    assert inspect_model(root).digest == "sha256:" + expected.hexdigest()
    assert inspect_model(root).digest == stream(root)


def test_a_file_growing_while_it_is_read_ahead_is_refused(
    tmp_path: Path, read_ahead_from_small_files: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hokusai_action.digest import files as digest

    root = write_tree(tmp_path / "m", {"weights.bin": os.urandom(256 * 1024)})
    real_fstat = os.fstat

    def fstat_then_write(fd: int) -> os.stat_result:
        state = real_fstat(fd)
        with (root / "weights.bin").open("ab") as handle:
            handle.write(os.urandom(100))
        return state

    monkeypatch.setattr(digest.os, "fstat", fstat_then_write)
    with pytest.raises(ModelChanged, match="grew or shrank"):
        inspect_model(root)


def test_a_read_error_while_reading_ahead_reaches_the_caller_and_stops_the_reader(
    tmp_path: Path, read_ahead_from_small_files: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hokusai_action.digest import files as digest

    root = write_tree(tmp_path / "m", {"weights.bin": os.urandom(256 * 1024)})
    model = scan_model(root)
    fail_a_read(monkeypatch, digest, number=3)
    with pytest.raises(OSError, match="Input/output error"):
        hash_model(model)
    assert not [thread for thread in threading.enumerate() if thread.name == "hokusai-read-ahead"]


def test_a_background_hash_reading_ahead_stops_when_cancelled(
    tmp_path: Path, read_ahead_from_small_files: None
) -> None:
    from hokusai_action.digest.background import BackgroundHash

    release = threading.Event()
    gate = PausingProgress(pause=lambda: release.wait(10))
    root = write_tree(tmp_path / "m", {"weights.bin": os.urandom(1024 * 1024)})  # 64 blocks of 16 KiB
    background = BackgroundHash(scan_model(root), gate)
    assert gate.first_read.wait(10)
    canceller = threading.Thread(target=background.cancel)
    canceller.start()
    release.set()
    canceller.join(10)
    assert not canceller.is_alive()
    assert gate.reads <= 2  # stopped at the next block, not after all 64
    assert not [thread for thread in threading.enumerate() if thread.name == "hokusai-read-ahead"]


def test_progress_attached_to_a_running_hash_gets_what_was_hashed_before_it(tmp_path: Path) -> None:
    from hokusai_action.digest.background import BackgroundHash

    class Counter:
        def __init__(self) -> None:
            self.nbytes = 0
            self.files = 0
            self.lock = threading.Lock()

        def advance(self, nbytes: int) -> None:
            with self.lock:
                self.nbytes += nbytes

        def file_done(self) -> None:
            with self.lock:
                self.files += 1

    root = write_tree(tmp_path / "m", {f"w{i:02d}.bin": os.urandom(30_000) for i in range(25)})
    model = scan_model(root)
    background = BackgroundHash(model)  # started with nobody to report to, as the command does
    counter = Counter()
    background.attach(counter)
    background.result()
    assert (counter.nbytes, counter.files) == (model.total_bytes, 25)


def test_a_prefetch_walks_the_model_in_its_thread_and_hands_the_walks_error_to_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's own checks (token id, metric, baseline) come first and at once: a prefetch only
    starts a thread; a 100,000-file walk, or one that hangs on a dead mount, happens there."""
    from hokusai_action.digest import background as digest
    from hokusai_action.errors import InputError

    walkers: list[str] = []
    real_scan = digest.scan_model

    def recording_scan(path):
        walkers.append(threading.current_thread().name)
        return real_scan(path)

    root = write_tree(tmp_path / "m", {"w.bin": os.urandom(3000)})
    expected = inspect_model(root).digest
    monkeypatch.setattr(digest, "scan_model", recording_scan)
    monkeypatch.setattr(digest, "usable_cores", lambda: 2)  # whatever this machine has
    prefetched = digest.prefetch_digest(root)
    assert prefetched is not None
    assert prefetched.walked().files == ("w.bin",)
    assert prefetched.result().digest == expected
    assert walkers == ["hokusai-hash"]

    missing = digest.prefetch_digest(tmp_path / "nowhere")  # no error here: the caller's walk reports it
    assert missing is not None
    with pytest.raises(InputError, match="does not exist"):
        missing.walked()
    missing.cancel()


@pytest.mark.parametrize(("cores", "prefetches"), [({0}, False), ({0, 1}, True), ({3, 5, 7}, True)])
def test_a_prefetch_starts_only_where_it_can_run_beside_the_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: set[int], prefetches: bool
) -> None:
    """On one core (a pinned container, ``taskset``) the hash could only take turns with the imports:
    a re-run gains nothing, and a first registration, which hashes while it uploads, would pay for it."""
    from hokusai_action.digest import background as digest

    monkeypatch.setattr(digest.os, "sched_getaffinity", lambda pid: cores, raising=False)
    prefetched = digest.prefetch_digest(write_tree(tmp_path / "m", {"w.bin": b"weights"}))
    assert (prefetched is not None) == prefetches
    if prefetched is not None:
        prefetched.cancel()


# ------------------------------------------------------------ big files hashed ahead of the thread sending them


@pytest.fixture
def hash_ahead_from_small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of 64 KiB and up are hashed ahead of their sender, in 16 KiB blocks, on small test files."""
    from hokusai_action.digest import streamed

    monkeypatch.setattr(streamed, "HASH_AHEAD_FROM", 64 * 1024, raising=False)  # absent before it existed
    monkeypatch.setattr(streamed, "STREAM_BLOCK", 16 * 1024)


def hash_ahead_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "hokusai-hash-ahead"]


def test_a_big_file_is_hashed_by_another_thread_than_the_one_sending_it(
    tmp_path: Path, hash_ahead_from_small_files: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender only sends: SHA-256 runs while the socket drains, not between two sends (issue 9)."""
    from hokusai_action.digest import streamed as streamed_module

    hashed_in: set[str] = set()
    real_sha256 = hashlib.sha256

    class RecordingHash:
        def __init__(self) -> None:
            self._hash = real_sha256()

        def update(self, data) -> None:
            hashed_in.add(threading.current_thread().name)
            self._hash.update(data)

        def hexdigest(self) -> str:
            return self._hash.hexdigest()

    monkeypatch.setattr(streamed_module.hashlib, "sha256", RecordingHash)
    content = os.urandom(200 * 1024 + 3)
    root = write_tree(tmp_path / "m", {"big.bin": content, "small.bin": b"tiny"})
    model = scan_model(root)
    digest = StreamedDigest(model)
    sent = bytearray()
    for index, name in enumerate(model.files):
        with digest.open(index) as reader:
            while block := reader.take_block():
                if name == "big.bin":
                    sent += block
            digest.done(index, reader)
    monkeypatch.undo()

    assert bytes(sent) == content
    assert digest.finish().digest == hash_model(scan_model(root)).digest
    assert hashed_in == {"hokusai-hash-ahead", threading.current_thread().name}  # big ahead, small in line
    assert not hash_ahead_threads()


@pytest.mark.parametrize("piece", [1000, 16 * 1024, None])
def test_files_hashed_ahead_stream_to_the_hashed_digest(
    tmp_path: Path, hash_ahead_from_small_files: None, piece: int | None
) -> None:
    files = {"a.bin": os.urandom(64 * 1024), "b.bin": os.urandom(64 * 1024 - 1), "c/d.bin": os.urandom(300_001)}
    root = write_tree(tmp_path / "m", files)
    assert stream(root, piece=piece) == inspect_model(root).digest
    assert not hash_ahead_threads()


def test_a_retry_of_a_file_hashed_ahead_starts_over_with_a_fresh_hash(
    tmp_path: Path, hash_ahead_from_small_files: None
) -> None:
    content = os.urandom(100 * 1024 + 7)
    root = write_tree(tmp_path / "m", {"w.bin": content})
    streamed = StreamedDigest(scan_model(root))
    with streamed.open(0) as reader:
        first = b""
        while len(first) < 70000:  # a few blocks in, then the client retries
            first += reader.read(70000 - len(first))
        assert first == content[:70000]
        assert reader.seek(0) == 0
        assert reader.read() == content
        streamed.done(0, reader)
    assert streamed.finish().digest == inspect_model(root).digest
    assert not hash_ahead_threads()


@pytest.mark.parametrize("change", ["grows", "shrinks"])
def test_a_file_hashed_ahead_that_changes_size_stops_the_upload(
    tmp_path: Path, hash_ahead_from_small_files: None, change: str
) -> None:
    root = write_tree(tmp_path / "m", {"w.bin": os.urandom(100 * 1024)})
    streamed = StreamedDigest(scan_model(root))
    with streamed.open(0) as reader:
        if change == "grows":
            with (root / "w.bin").open("ab") as handle:
                handle.write(b"more")
        else:
            os.truncate(root / "w.bin", 1000)
        with pytest.raises(ModelChanged, match=r"w\.bin grew or shrank while it was read") as raised:
            reader.read()
        assert reader.failure is raised.value
    assert not hash_ahead_threads()


def test_a_stopped_upload_of_a_file_hashed_ahead_gives_out_no_more_bytes_and_leaves_no_thread(
    tmp_path: Path, hash_ahead_from_small_files: None
) -> None:
    from hokusai_action.digest.streamed import UploadStopped

    streamed = StreamedDigest(scan_model(write_tree(tmp_path / "m", {"w.bin": os.urandom(400 * 1024)})))
    with streamed.open(0) as reader:
        assert len(reader.take_block()) == 16 * 1024
        streamed.stop()
        with pytest.raises(UploadStopped):
            reader.take_block()
    assert not hash_ahead_threads()


def test_a_read_error_of_a_file_hashed_ahead_reaches_the_sender(
    tmp_path: Path, hash_ahead_from_small_files: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hokusai_action.digest import files

    root = write_tree(tmp_path / "m", {"w.bin": os.urandom(256 * 1024)})
    fail_a_read(monkeypatch, files, number=3)
    streamed = StreamedDigest(scan_model(root))
    with streamed.open(0) as reader, pytest.raises(OSError, match="Input/output error"):
        while reader.take_block():
            pass
    assert not hash_ahead_threads()


def test_a_block_hashed_ahead_is_not_refilled_while_its_sender_still_sends_it(
    tmp_path: Path, hash_ahead_from_small_files: None
) -> None:
    """``take_block`` gives a view of the buffer without a copy: the thread hashing ahead must not
    read the next bytes into it until the sender asks for the next block (a slow socket here)."""
    content = os.urandom(400 * 1024)
    streamed = StreamedDigest(scan_model(write_tree(tmp_path / "m", {"w.bin": content})))
    changed, offset = 0, 0
    with streamed.open(0) as reader:
        while block := reader.take_block():
            time.sleep(0.002)  # the socket drains; the hash thread runs meanwhile
            changed += bytes(block) != content[offset : offset + len(block)]
            offset += len(block)
        streamed.done(0, reader)
    assert offset == len(content)
    assert changed == 0
    assert streamed.finish().digest == inspect_model(tmp_path / "m").digest


@pytest.mark.parametrize("size", [0, 1000])
def test_a_file_hashed_ahead_seen_changed_stays_changed(
    tmp_path: Path, hash_ahead_from_small_files: None, size: int
) -> None:
    """Once a reader has seen its file change, it gives out no digest and no more bytes, a retry's
    ``seek(0)`` included (as a file hashed in line does)."""
    root = write_tree(tmp_path / "m", {"w.bin": os.urandom(100 * 1024)})
    streamed = StreamedDigest(scan_model(root))
    with streamed.open(0) as reader:
        os.truncate(root / "w.bin", size)
        with pytest.raises(ModelChanged):
            reader.read()
        with pytest.raises(ModelChanged):
            reader.read()
        reader.seek(0)
        with pytest.raises(ModelChanged):
            reader.read()
        with pytest.raises(ModelChanged):
            reader.finish()
    assert not hash_ahead_threads()


def test_a_retry_after_a_read_error_on_the_first_block_hashed_ahead_reads_the_file_again(
    tmp_path: Path, hash_ahead_from_small_files: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload's client retries an ``OSError`` with ``seek(0)``: a passing read error (EIO on the
    first block) must not be raised again from the thread that met it."""
    from hokusai_action.digest import files

    content = os.urandom(256 * 1024)
    root = write_tree(tmp_path / "m", {"w.bin": content})
    fail_a_read(monkeypatch, files, number=1)
    streamed = StreamedDigest(scan_model(root))
    with streamed.open(0) as reader:
        with pytest.raises(OSError, match="Input/output error"):
            reader.take_block()
        assert reader.seek(0) == 0
        assert reader.read() == content
        streamed.done(0, reader)
    assert streamed.finish().digest == inspect_model(root).digest
    assert not hash_ahead_threads()
