"""The digest computed while the model uploads: each file read once, through the descriptor the walk
checked, hashed block by block as an HTTP client or an artifact repository reads it, so the bytes of a
first registration are read from disk only once. The digest is ``hash_model``'s, byte for byte
(``tests/unit/digest/test_streamed_digest.py``); the walk, the file checks and the digest's formula live in
``walk`` and ``files``.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from hokusai_action.digest.files import MODEL_CHANGED_HINT, FileState, ModelFiles, Progress
from hokusai_action.errors import ModelChanged, ServiceUnavailable

MODEL_CHANGED_WHILE_HASHED_STREAM = (
    "The model changed while it was being uploaded: {path} grew or shrank while it was read. No version was created."
)
# the store answered success before the client had read the whole file: it cannot hold all of it
UPLOAD_INCOMPLETE = (
    "The upload of {path} was answered as stored after {sent} of its {size} bytes were sent: the store does not "
    "hold the file. No version was created."
)
UPLOAD_INCOMPLETE_HINT = (
    "Check what sits between this run and MLflow's artifact store (a proxy answering for it), then re-run."
)

STREAM_BLOCK = 1024 * 1024  # per file being sent: a few upload threads stay far below the memory bound
# A big file is read and hashed by a thread of its own, a couple of blocks ahead of the thread that
# sends it: SHA-256 then runs while the socket drains, instead of between two sends while the server
# waits for bytes. Measured on 2 cores against a loopback MLflow server, one 2 GiB file, the PUT alone
# (8 alternating attempts, stored bytes deleted between them): no hash 3.7-4.0 s, hashed in line
# 4.7-4.8 s, hashed ahead 4.3-4.4 s. Small files are not worth a thread's hand-offs; a file hashed
# ahead holds HASH_AHEAD_DEPTH + 1 blocks instead of one.
HASH_AHEAD_FROM = 32 * 1024 * 1024
HASH_AHEAD_DEPTH = 2


class UploadStopped(Exception):
    """The upload was stopped (SIGTERM, Ctrl-C, another file's failure): a reader gives out no more bytes."""


class _HashAhead:
    """An open file read and hashed in order by a thread of its own, a few blocks ahead of its consumer.

    A block is handed over after it was hashed, and filled again only after the consumer gave it back
    by asking for the next one (after sending it): what is sent is exactly what was hashed. A read
    error is raised in the consumer, at the block where it happened.
    """

    def __init__(self, handle: io.FileIO, hasher: Any, block_size: int) -> None:
        self._free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
        self._filled: queue.SimpleQueue[tuple[bytearray, int] | BaseException] = queue.SimpleQueue()
        for _ in range(HASH_AHEAD_DEPTH + 1):
            self._free.put(bytearray(block_size))
        self._held: bytearray | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._read_and_hash, args=(handle, hasher), name="hokusai-hash-ahead", daemon=True
        )
        self._thread.start()

    def _read_and_hash(self, handle: io.FileIO, hasher: Any) -> None:
        try:
            while (block := self._free.get()) is not None:
                read = handle.readinto(block)
                if read:
                    hasher.update(memoryview(block)[:read])  # releases the GIL: the sender sends meanwhile
                self._filled.put((block, read))
                if not read:
                    return
        except BaseException as exc:  # raised in the consumer
            self._filled.put(exc)

    def next(self) -> tuple[memoryview, int]:
        """The next block, hashed already, and how many of its bytes were read (0: the end of the file).
        The block handed out before is taken back: its bytes must have been used by now."""
        if self._failure is not None:  # the thread has ended on it: nothing more will come
            raise self._failure
        if self._held is not None:
            self._free.put(self._held)
            self._held = None
        item = self._filled.get()
        if isinstance(item, BaseException):
            self._failure = item
            raise item
        block, read = item
        self._held = block
        return memoryview(block), read

    def close(self) -> None:
        """Stop the thread (at once if it waits for a block; after its read if it reads) and wait for it:
        it must be done with the file before the file is closed or rewound."""
        self._free.put(None)
        self._thread.join()


class HashingReader:
    """A listed file as a read-only stream that hashes and counts every byte as it is read.

    Handed to an HTTP client (``requests``/``urllib3`` read it in small pieces) or an artifact
    repository's ``log_artifact_from_stream``. It reads the file in ``STREAM_BLOCK`` blocks through
    the descriptor opened (and identity-checked) by ``StreamedDigest.open``, hashes each block once
    and hands it out in the pieces asked for. What was hashed is exactly what was sent.

    ``len()`` is the size listed at open (the Content-Length); a file that grows or shrinks while it
    is read raises ``ModelChanged`` instead of sending a body of another length. ``seek(0)`` starts
    over (a retry re-sends the file: the hash starts over with it); no other seek is possible, so a
    client can never resend a body from the middle.

    Once ``stopped`` is set, the next read raises ``UploadStopped``: the client gives up the request at
    once instead of sending the rest of a big file nobody will register.
    """

    def __init__(
        self,
        handle: io.FileIO,
        state: FileState,
        shown: Path,
        progress: Progress | None,
        stopped: threading.Event | None = None,
    ) -> None:
        self._handle = handle
        self._stopped = stopped
        self.state = state
        self._shown = shown
        self._progress = progress
        # a big file is read and hashed by a thread of its own (``_HashAhead``), started at the first read;
        # a small one is read into one buffer of its own and hashed here
        self._hash_ahead = state.size >= HASH_AHEAD_FROM
        self._ahead: _HashAhead | None = None
        self._at_end = False
        self._view = memoryview(bytearray(0 if self._hash_ahead else min(STREAM_BLOCK, max(state.size, 1))))
        self._start = self._end = 0  # the unread part of the current block
        self._hasher = hashlib.sha256()
        self._position = 0  # bytes handed out
        self._read = 0  # bytes read from the file (and hashed)
        self.failure: ModelChanged | None = None  # kept: HTTP clients wrap what a body raises

    def __len__(self) -> int:
        return self.state.size

    @property
    def name(self) -> str:  # some clients guess a content type from it
        return self._shown.name

    @property
    def shown(self) -> Path:
        """The file as the user knows it (for messages)."""
        return self._shown

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._position + offset if whence == io.SEEK_CUR else -1
        if whence == io.SEEK_END:
            target = self.state.size + offset
        # seek(0) starts over even at position 0: a thread hashing ahead may have read on (or met an
        # error) before a byte was handed out
        if target == self._position and not (target == 0 and (self._read or self._ahead is not None)):
            return target
        if target != 0:
            raise io.UnsupportedOperation("a hashing reader can only start over (seek(0))")
        self._stop_ahead()  # done with the file before it is rewound
        os.lseek(self._handle.fileno(), 0, os.SEEK_SET)
        if self._progress is not None and self._read:
            self._progress.advance(-self._read)
        self._hasher = hashlib.sha256()
        self._start = self._end = self._position = self._read = 0
        self._at_end = False
        return 0

    def _fill(self) -> bool:
        """Read the next block; False at the end of the file (checked against the listed size)."""
        if self._stopped is not None and self._stopped.is_set():
            raise UploadStopped(str(self._shown))
        if self.failure is not None:  # a file seen changing gives out nothing more, a retry included
            raise self.failure
        if self._at_end and self._ahead is not None:  # its thread has ended: the end stays the end
            return False
        if self._hash_ahead:
            if self._ahead is None:
                self._ahead = _HashAhead(self._handle, self._hasher, STREAM_BLOCK)
            self._view, read = self._ahead.next()  # hashed already
        else:
            read = self._handle.readinto(self._view)
        if not read:
            self._at_end = True
            if self._read != self.state.size:
                self._changed()
            return False
        self._read += read
        if self._read > self.state.size:
            self._changed()
        if self._ahead is None:
            self._hasher.update(self._view[:read])
        self._start, self._end = 0, read
        if self._progress is not None:
            self._progress.advance(read)
        return True

    def _changed(self) -> None:
        self.failure = ModelChanged(MODEL_CHANGED_WHILE_HASHED_STREAM.format(path=self._shown), hint=MODEL_CHANGED_HINT)
        raise self.failure

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            pieces = []
            while piece := self.read(STREAM_BLOCK):
                pieces.append(piece)
            return b"".join(pieces)
        if self._start == self._end and not self._fill():
            return b""
        taken = min(size, self._end - self._start)
        piece = bytes(self._view[self._start : self._start + taken])
        self._start += taken
        self._position += taken
        return piece

    def take_block(self) -> memoryview:
        """The next bytes, up to a block, without a copy: a view of the buffer, valid until the next
        call (for a client that sends it at once). Empty at the end of the file."""
        if self._start == self._end and not self._fill():
            return self._view[:0]
        piece = self._view[self._start : self._end]
        self._position += self._end - self._start
        self._start = self._end
        return piece

    def readinto(self, target: Any) -> int:
        piece = self.read(len(target))
        target[: len(piece)] = piece
        return len(piece)

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (a retry's backoff), or raise ``UploadStopped`` as soon as the upload stops."""
        if self._stopped is None:
            time.sleep(seconds)
        elif self._stopped.wait(seconds):
            raise UploadStopped(str(self._shown))

    def finish(self) -> str:
        """Read what the client left unread (nothing, for a complete send) and return the file's sha256."""
        while self._fill():
            self._position = self._read
        return self._hasher.hexdigest()

    def _stop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def close(self) -> None:
        self._stop_ahead()  # done with the file before it is closed
        self._handle.close()

    def __enter__(self) -> HashingReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class StreamedDigest:
    """The digest of ``model`` built while its files are uploaded, in any order, from several threads.

    ``open(index)`` gives a ``HashingReader`` over the listed inode; ``done(index, reader)`` records the
    file once it is sent; ``finish()`` returns ``model`` hashed: the same digest ``hash_model`` gives
    (same records, in the listed order), and the states to check before the version is created.
    """

    def __init__(self, model: ModelFiles, progress: Progress | None = None) -> None:
        self.model = model
        self._progress = progress
        self._lock = threading.Lock()
        self._records: list[tuple[int, str] | None] = [None] * len(model.files)
        self._states: list[FileState | None] = [None] * len(model.files)
        self._stopped = threading.Event()

    def stop(self) -> None:
        """Make every reader of this upload raise ``UploadStopped`` at its next block (any thread)."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def open(self, index: int) -> HashingReader:
        """Raises ``ModelChanged`` when file ``index`` is no longer the one listed: nothing of it is read."""
        handle, state = self.model.open(index, streaming=True)
        shown = self.model.shown(self.model.files[index])
        return HashingReader(handle, state, shown, self._progress, self._stopped)

    def done(self, index: int, reader: HashingReader) -> None:
        """Record file ``index`` as stored. The client must have read all of it: a store that answered
        before it took the whole body (a proxy answering for it) does not hold the file, and hashing
        the rest here would give a digest of bytes never sent (``ServiceUnavailable``, exit 4)."""
        if reader.tell() != len(reader):
            raise ServiceUnavailable(
                UPLOAD_INCOMPLETE.format(path=reader.shown, sent=reader.tell(), size=len(reader)),
                hint=UPLOAD_INCOMPLETE_HINT,
            )
        file_digest = reader.finish()
        with self._lock:
            self._records[index] = (reader.state.size, file_digest)
            self._states[index] = reader.state
        if self._progress is not None:
            self._progress.file_done()

    def finish(self) -> ModelFiles:
        records: list[tuple[int, str]] = []
        for relative, record in zip(self.model.files, self._records, strict=True):
            if record is None:
                raise AssertionError(f"{relative} was not uploaded")  # a bug: every file is sent first
            records.append(record)
        states = tuple(state for state in self._states if state is not None)
        return self.model.with_digest(records, states)
