"""``hash_model``: the artifact digest of a walked model, every file read once before anything else.

A re-run needs the digest first (it decides what happens), so its files are read here; a first
registration hashes them while they upload instead (``streamed``), to the same digest. Either way a
file is read in fixed-size blocks into reused buffers, never whole into memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading

from hokusai_action.digest.files import MODEL_CHANGED_HINT, FileState, ModelFiles, Progress
from hokusai_action.digest.walk import scan_model
from hokusai_action.errors import ModelChanged

# 1 MiB reads into one reused buffer: hashlib releases the GIL and runs at its own speed (measured here:
# 1, 4 and 8 MiB reads hash a cached 1 GiB file in the same 0.6 s), and the whole model costs one
# buffer of memory, whatever its size or file count
CHUNK_SIZE = 1024 * 1024
# A big file is read by a second thread while the first hashes what was read: the copy out of the page
# cache (about a tenth of SHA-256's time) then overlaps the hash on another core instead of adding to
# it. A few buffers in flight bound the memory (``PIPELINE_DEPTH`` x ``PIPELINE_BLOCK``); small files
# are not worth a thread's hand-offs.
PIPELINE_FROM = 32 * 1024 * 1024
PIPELINE_BLOCK = 2 * 1024 * 1024
PIPELINE_DEPTH = 3

MODEL_CHANGED_WHILE_HASHED = "The model changed while it was being hashed: {path} grew or shrank. Nothing was uploaded."


class HashCancelled(Exception):
    """A hash stopped through its ``cancelled`` event: it turned out not to be needed."""


def inspect_model(model_path: str | os.PathLike[str]) -> ModelFiles:
    """Check the model path is a readable, non-empty file or directory and compute its digest."""
    return hash_model(scan_model(model_path))


def hash_model(
    model: ModelFiles, progress: Progress | None = None, *, cancelled: threading.Event | None = None
) -> ModelFiles:
    """``model`` with its digest: every file read once, in ``CHUNK_SIZE`` reads into one reused buffer.

    Setting ``cancelled`` stops it at its next read with ``HashCancelled``.
    """
    records: list[tuple[int, str]] = []
    states: list[FileState] = []
    buffer = memoryview(bytearray(min(CHUNK_SIZE, max(model.total_bytes, 1))))
    for index, relative in enumerate(model.files):
        handle, state = model.open(index, streaming=False)
        with handle:
            if state.size >= PIPELINE_FROM:
                file_digest, size = _hash_read_ahead(handle, progress, cancelled)
            else:
                file_digest, size = _hash_in_line(handle, buffer, progress, cancelled)
        if size != state.size:  # written while we read it: the digest describes no state the file was ever in
            shown = model.shown(relative)
            raise ModelChanged(MODEL_CHANGED_WHILE_HASHED.format(path=shown), hint=MODEL_CHANGED_HINT)
        if progress is not None:
            progress.file_done()
        states.append(state)
        records.append((size, file_digest))
    return model.with_digest(records, states)


def _hash_in_line(
    handle: io.FileIO, buffer: memoryview, progress: Progress | None, cancelled: threading.Event | None
) -> tuple[str, int]:
    """SHA-256 and size of the open file ``handle``, read into ``buffer`` and hashed by this thread."""
    hasher = hashlib.sha256()
    size = 0
    while read := handle.readinto(buffer):
        if cancelled is not None and cancelled.is_set():
            raise HashCancelled
        hasher.update(buffer[:read])
        size += read
        if progress is not None:
            progress.advance(read)
    return hasher.hexdigest(), size


def _hash_read_ahead(
    handle: io.FileIO, progress: Progress | None, cancelled: threading.Event | None
) -> tuple[str, int]:
    """SHA-256 and size of the open file ``handle``, read ahead by a second thread (``PIPELINE_FROM``).

    The reader fills free buffers and hands them over in order; this thread hashes each and gives it
    back. Both release the GIL for their work (``readinto``, ``update``), so they run on two cores. A
    read error reaches the caller as it would from a plain loop; whatever ends the hash (an error, a
    cancel) stops the reader before the file is closed.
    """
    free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
    filled: queue.SimpleQueue[tuple[bytearray, int] | BaseException] = queue.SimpleQueue()
    for _ in range(PIPELINE_DEPTH):
        free.put(bytearray(PIPELINE_BLOCK))

    def read_ahead() -> None:
        try:
            while (block := free.get()) is not None:
                read = handle.readinto(block)
                filled.put((block, read))
                if not read:
                    return
        except BaseException as exc:  # handed to the hashing thread, raised there
            filled.put(exc)

    reader = threading.Thread(target=read_ahead, name="hokusai-read-ahead", daemon=True)
    reader.start()
    hasher = hashlib.sha256()
    size = 0
    try:
        while True:
            item = filled.get()
            if isinstance(item, BaseException):
                raise item
            block, read = item
            if not read:
                return hasher.hexdigest(), size
            if cancelled is not None and cancelled.is_set():
                raise HashCancelled
            hasher.update(memoryview(block)[:read])
            size += read
            if progress is not None:
                progress.advance(read)
            free.put(block)
    finally:
        free.put(None)  # the reader stops at its next hand-over (at once if it waits for a buffer)
        reader.join()
