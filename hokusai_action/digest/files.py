"""The artifact digest: one SHA-256 over a model's files, streamed, never read whole into memory.

The digest is the idempotency key of a registration: the same token with the same bytes is the same
registration. It covers each file's relative path, size and content, so renaming a file or moving
bytes between files changes it, and it does not depend on timestamps, permissions or walk order.

What is hashed is exactly what is uploaded: symbolic links are followed only inside the model
directory (DESIGN.md, "Model files"), and each file's size, times and inode are recorded so that a
file rewritten before the version exists is noticed (``ModelFiles.ensure_unchanged``).

Each file is hashed through the very inode the walk checked: it is opened without following a final
link and its (device, inode) must be the walk's, so a file swapped for a link to a secret (or a folder
for a link to ``/``) between the walk and the hash is refused, never read.

Two ways to the same digest: ``hash_model`` reads the files before anything else (a re-run, where the
digest decides what happens), and ``streamed.StreamedDigest`` hashes each file while it is uploaded (a first
registration: the bytes are read once). ``scan_model`` is the walk both start from.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import queue
import stat
import threading
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple, Protocol

from hokusai_action.errors import InputError, ModelChanged

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

PATH_MISSING = "Model path {path} does not exist. Check --model-path (relative paths start at {cwd})."
PATH_UNREADABLE = "Model path {path} cannot be read: {reason}. Fix its permissions or point --model-path elsewhere."
PATH_EMPTY = "Model directory {path} holds no files. Point --model-path at the trained model's folder or file."
PATH_SPECIAL = "Model path {path} is not a regular file or directory."
LINK_TARGET_HINT = "It is a symbolic link to {target}. Point the link at a file inside the model, or remove it."
LINK_DANGLING_HINT = "It is a symbolic link to {target}, which does not exist (or loops). Remove the link."
LINK_OUTSIDE = (
    "Model path {path} is a symbolic link to {target}, outside the model directory {root}: it would upload "
    "whatever that is."
)
LINK_OUTSIDE_HINT = "Copy the file or folder into the model directory, or remove the link."
# MLflow's artifact paths are URL paths, on its client and its server: '#' ends one, '?' starts a query,
# '%XX' is decoded (more than once). Such a file would be stored under another name (or over another
# file) while the digest names it, so the registration would describe bytes the store does not hold.
# A round trip (register, download, compare: tests/e2e/test_upload_http.py, MLflow 3.17) through the
# proxied `mlflow server` and the embedded store found two more: a control character (a tab or CR is
# dropped, a newline fails the upload, others come back percent-encoded or not at all), and a file or
# folder name that starts with a space (URL parsing strips it). C1 controls came back, but a control
# character is refused whole: echoed in a message, it would drive the terminal that shows it.
NAME_NOT_STORABLE = "Model file {path} has a name MLflow cannot store as it is: it {why}."
NAME_NOT_STORABLE_HINT = (
    "Rename it (letters, digits, '.', '-', '_', spaces inside a name and folders are fine), then re-run."
)
_URL_SPECIAL = ("#", "?", "%")
LINK_LOOP = "Model path {path} is a symbolic link to the folder {target}, which leads back to itself (a loop)."
LINK_LOOP_HINT = "Remove the link, or replace it with a copy of the folder."
MODEL_CHANGED = "The model changed while it was being uploaded: {path} is not what was hashed. No version was created."
MODEL_CHANGED_HINT = "Re-run once the training job has finished writing the model."
MODEL_CHANGED_WHILE_HASHED = "The model changed while it was being hashed: {path} grew or shrank. Nothing was uploaded."
MODEL_SWAPPED = (
    "The model changed while it was being read: {path} is no longer the file that was listed (replaced, or "
    "reached through a folder that was swapped). Nothing was uploaded."
)
MODEL_SWAPPED_FOR_LINK = (
    "The model changed while it was being read: {path} was replaced by a symbolic link. Nothing was uploaded."
)
# hashed while it is uploaded (a first registration): a file that is not what the walk listed stops the
# upload before its bytes leave the machine, and no version is created
MODEL_CHANGED_WHILE_STREAMED = (
    "The model changed while it was being uploaded: {path} is not the file that was listed ({why}). "
    "No version was created."
)
# not following a final link, and never waiting on a FIFO swapped in for a file
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class FileState:
    """A file as it was when hashed. Any difference later means it was rewritten, replaced or relinked.

    ``ctime_ns`` catches a rewrite that kept the size and put the old mtime back (``cp -p``,
    ``rsync -t``): the kernel sets it on every change and it cannot be set from user space.
    """

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, result: os.stat_result) -> FileState:
        return cls(result.st_size, result.st_mtime_ns, result.st_ctime_ns, result.st_ino, result.st_dev)


@dataclass(frozen=True)
class ModelFiles:
    root: Path  # as the user gave it (shown in messages)
    is_dir: bool
    files: tuple[str, ...]  # relative POSIX paths, sorted
    total_bytes: int
    digest: str  # "sha256:<hex>"
    real_root: Path | None = None  # ``root`` with every link resolved: what "inside the model" means
    # per file, in the order of ``files``: as read when hashed (as listed by the walk before that)
    states: tuple[FileState, ...] = ()
    links: tuple[bool, ...] = ()  # per file: reached through a link of its own name (followed when read)
    # per file: the path to open (a link resolved) and the (st_dev, st_ino) the walk checked there
    read_paths: tuple[str, ...] = ()
    identities: tuple[tuple[int, int], ...] = ()

    @property
    def hashed(self) -> bool:
        """False for a walked but not yet hashed model (``scan_model``): its digest comes with the upload."""
        return bool(self.digest)

    @property
    def is_mlflow_model(self) -> bool:
        return self.is_dir and "MLmodel" in self.files

    def path_of(self, relative: str) -> Path:
        """The local path to read ``relative`` from; its last component is the name to upload it as."""
        if not self.is_dir:
            return self.root  # a single file (or a link to one) is uploaded under the name the user gave
        return (self.real_root or self.root) / relative

    def _changed(self, index: int) -> bool:
        """Whether file ``index`` is no longer what was hashed: rewritten, replaced, relinked or gone.

        A file that was not reached through a link of its own is checked without following one (a file
        turned into a link is a change); a link must still lead inside the model, to the hashed inode.
        """
        path = os.path.join(self.real_root or self.root, self.files[index]) if self.is_dir else str(self.root)
        try:
            if self.links[index]:
                resolved = Path(os.path.realpath(path, strict=True))
                if not resolved.is_relative_to(self.real_root or self.root):
                    return True
                now = os.stat(path)
            else:
                now = os.lstat(path)
        except (OSError, RuntimeError):  # gone, unreadable, or the links loop now
            return True
        return not stat.S_ISREG(now.st_mode) or FileState.of(now) != self.states[index]

    def first_change(self) -> str | None:
        """The first file that is no longer what was hashed (changed, replaced, gone), or None."""
        for index, relative in enumerate(self.files):
            if self._changed(index):
                return relative
        return None

    def ensure_file_unchanged(self, index: int) -> None:
        """Raise ``ModelChanged`` if file ``index`` differs from what was hashed (call just before sending it)."""
        if self._changed(index):
            self._raise_changed(self.files[index])

    def ensure_unchanged(self) -> None:
        """Raise ``ModelChanged`` if any file differs from what was hashed (call after uploading it)."""
        changed = self.first_change()
        if changed is not None:
            self._raise_changed(changed)

    def _raise_changed(self, relative: str) -> None:
        shown = self.root / relative if self.is_dir else self.root
        raise ModelChanged(MODEL_CHANGED.format(path=shown), hint=MODEL_CHANGED_HINT)


def _resolve_link(link: Path) -> Path | None:
    """Where ``link`` finally points, or None when that does not exist or the links loop."""
    try:
        return Path(os.path.realpath(link, strict=True))
    except (OSError, RuntimeError):  # ENOENT, ELOOP
        return None


def _link_text(link: Path, resolved: Path) -> str:
    """The link as written, and where it leads when that reads differently (``../x`` or ``/proc/self``)."""
    written = os.readlink(link)
    return written if written == str(resolved) else f"{written} ({resolved})"


class _Entry(NamedTuple):
    relative: str  # where it appears in the tree, a link under its own name
    read_path: str  # the file to read: for a link, where it resolved to
    link: bool  # reached through a link of its own name
    identity: tuple[int, int]  # (st_dev, st_ino) the walk checked: the file hashed must be this one
    listed: FileState  # as the walk saw it: the sizes are known before a byte is read, and a change shows


def _walk_files(root: Path, real_root: Path) -> list[_Entry]:
    """Every file under ``real_root``, links checked and followed.

    A link is followed only when its target resolves inside the model directory and is a regular file
    or a folder; a folder link that leads back to a folder being walked is a loop. Entries are named
    by where they appear in the tree (a link by its own name), so the uploaded tree is the hashed one.
    Plain strings, not ``Path``s, per file: with many small files the path objects cost more than hashing.
    """
    found: list[_Entry] = []
    # (real folder to list, its relative prefix, the real folders on the way down from the root)
    pending: list[tuple[Path, str, frozenset[Path]]] = [(real_root, "", frozenset({real_root}))]
    while pending:
        folder, prefix, above = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            raise InputError(PATH_UNREADABLE.format(path=root / prefix, reason=exc.strerror or exc)) from exc
        for entry in entries:
            relative = prefix + entry.name
            try:
                listed = entry.stat(follow_symlinks=False)
            except OSError as exc:
                raise InputError(PATH_UNREADABLE.format(path=root / relative, reason=exc.strerror or exc)) from exc
            mode = listed.st_mode
            if stat.S_ISREG(mode):
                found.append(_Entry(relative, entry.path, False, (listed.st_dev, listed.st_ino), FileState.of(listed)))
            elif stat.S_ISDIR(mode):
                pending.append((Path(entry.path), relative + "/", above | {Path(entry.path)}))
            elif stat.S_ISLNK(mode):
                resolved, target = _check_link(root, real_root, Path(entry.path), root / relative, above)
                if stat.S_ISDIR(target.st_mode):
                    pending.append((resolved, relative + "/", above | {resolved}))
                else:
                    found.append(
                        _Entry(relative, str(resolved), True, (target.st_dev, target.st_ino), FileState.of(target))
                    )
            else:  # a FIFO, socket or device
                raise InputError(PATH_SPECIAL.format(path=root / relative))
    found.sort(key=lambda item: item.relative)
    return found


def _check_link(
    root: Path, real_root: Path, link: Path, shown: Path, above: frozenset[Path]
) -> tuple[Path, os.stat_result]:
    """Where ``link`` leads and what is there, if it may be followed: inside the model, a file or a folder, no loop."""
    resolved = _resolve_link(link)
    if resolved is None:
        raise InputError(PATH_SPECIAL.format(path=shown), hint=LINK_DANGLING_HINT.format(target=os.readlink(link)))
    if not resolved.is_relative_to(real_root):
        raise InputError(
            LINK_OUTSIDE.format(path=shown, target=_link_text(link, resolved), root=root), hint=LINK_OUTSIDE_HINT
        )
    try:
        target = os.stat(resolved, follow_symlinks=False)  # realpath left no link to follow
    except OSError as exc:
        raise InputError(PATH_UNREADABLE.format(path=shown, reason=exc.strerror or exc)) from exc
    mode = target.st_mode
    if stat.S_ISDIR(mode) and any(resolved == seen or seen.is_relative_to(resolved) for seen in above):
        raise InputError(LINK_LOOP.format(path=shown, target=resolved), hint=LINK_LOOP_HINT)
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):  # a FIFO, socket or device: never opened
        raise InputError(PATH_SPECIAL.format(path=shown), hint=LINK_TARGET_HINT.format(target=resolved))
    return resolved, target


class _NotListed(Exception):
    """The file opened is not the one the walk checked (another inode, or not a regular file)."""


class Progress(Protocol):
    """What hashing and uploading report as they go (``hokusai_action.progress`` draws it)."""

    def advance(self, nbytes: int) -> None: ...

    def file_done(self) -> None: ...


def _open_listed(path: str, identity: tuple[int, int]) -> tuple[io.FileIO, FileState]:
    """The file at ``path``, opened without following a final link, if it is the inode the walk checked.

    Returns the open file and its state before a byte is read: a write during the hash or the upload
    shows in the check after it. Raises OSError (ELOOP: ``path`` is a link now) or ``_NotListed``.
    """
    handle = open(os.open(path, _OPEN_FLAGS), "rb", buffering=0)  # noqa: SIM115 - returned open
    try:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != identity:
            raise _NotListed(path)
    except BaseException:
        handle.close()
        raise
    return handle, FileState.of(opened)


def _open_error(model: ModelFiles, index: int, exc: BaseException, *, streaming: bool) -> Exception:
    """The user's error for a listed file that cannot be opened as listed (swapped, gone, unreadable)."""
    relative = model.files[index]
    shown = model.root / relative if model.is_dir else model.root
    full = model.read_paths[index]
    if streaming:  # listed a moment ago: whatever is there now is a change, never "unreadable input"
        if isinstance(exc, _NotListed):
            why = "replaced, or reached through a folder that was swapped"
        elif isinstance(exc, OSError) and exc.errno == errno.ELOOP:
            why = "replaced by a symbolic link"
        elif isinstance(exc, OSError) and exc.errno == errno.ENOENT:
            why = "deleted"
        else:
            return InputError(PATH_UNREADABLE.format(path=shown, reason=getattr(exc, "strerror", None) or exc))
        return ModelChanged(MODEL_CHANGED_WHILE_STREAMED.format(path=shown, why=why), hint=MODEL_CHANGED_HINT)
    if isinstance(exc, _NotListed):
        return ModelChanged(MODEL_SWAPPED.format(path=shown), hint=MODEL_CHANGED_HINT)
    assert isinstance(exc, OSError)
    if exc.errno == errno.ELOOP and os.path.islink(full):  # swapped for a link since the walk
        # a link's target turned into a link: the link still is one, what it led to was swapped
        swapped = MODEL_SWAPPED if model.links[index] else MODEL_SWAPPED_FOR_LINK
        return ModelChanged(swapped.format(path=shown), hint=MODEL_CHANGED_HINT)
    return InputError(PATH_UNREADABLE.format(path=shown, reason=exc.strerror or exc))


def _record(relative: str, size: int, file_digest: str) -> bytes:
    # NUL cannot occur in a path, so the record boundaries are unambiguous
    return f"{relative}\0{size}\0{file_digest}\n".encode()


def scan_model(model_path: str | os.PathLike[str]) -> ModelFiles:
    """Walk the model and check its links, reading no file: a ``ModelFiles`` without a digest yet.

    The path itself may be a symbolic link (``checkpoints/latest``): it is resolved first, and links
    inside the model must stay inside that resolved folder. ``hash_model`` (or an upload through
    ``StreamedDigest``) then reads each file through the very inode listed here.
    """
    root = Path(model_path)
    real_root = _resolve_link(root)
    if real_root is None:
        raise InputError(PATH_MISSING.format(path=root, cwd=Path.cwd()))
    found = os.stat(real_root)
    mode = found.st_mode
    if stat.S_ISREG(mode):
        entries = [
            _Entry(root.name, str(real_root), os.path.islink(root), (found.st_dev, found.st_ino), FileState.of(found))
        ]
        is_dir = False
    elif stat.S_ISDIR(mode):
        if not os.access(real_root, os.R_OK | os.X_OK):
            raise InputError(PATH_UNREADABLE.format(path=root, reason="permission denied"))
        entries = _walk_files(root, real_root)
        if not entries:
            raise InputError(PATH_EMPTY.format(path=root))
        is_dir = True
    else:
        raise InputError(PATH_SPECIAL.format(path=root))
    for entry in entries:
        _check_storable(root / entry.relative if is_dir else root, entry.relative)
    return ModelFiles(
        root=root,
        is_dir=is_dir,
        files=tuple(entry.relative for entry in entries),
        total_bytes=sum(entry.listed.size for entry in entries),
        digest="",
        real_root=real_root,
        states=tuple(entry.listed for entry in entries),
        links=tuple(entry.link for entry in entries),
        read_paths=tuple(entry.read_path for entry in entries),
        identities=tuple(entry.identity for entry in entries),
    )


def _check_storable(shown: Path, relative: str) -> None:
    """Raise ``InputError`` unless MLflow stores a file named ``relative`` under that very name."""
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:  # os.walk hands undecodable bytes over as surrogates
        raise InputError(
            NAME_NOT_STORABLE.format(path=_printable(os.fsdecode(os.fsencode(shown))), why="is not UTF-8"),
            hint=NAME_NOT_STORABLE_HINT,
        ) from None
    why = _unstorable(relative)
    if why is not None:
        raise InputError(NAME_NOT_STORABLE.format(path=_printable(str(shown)), why=why), hint=NAME_NOT_STORABLE_HINT)


def _unstorable(relative: str) -> str | None:
    """Why MLflow would not give a file named ``relative`` back under that name, or None."""
    for special in _URL_SPECIAL:
        if special in relative:
            return f"holds '{special}'"
    for char in relative:
        if unicodedata.category(char) == "Cc":
            return f"holds the control character U+{ord(char):04X}"
    if any(part.startswith(" ") for part in relative.split("/")):
        return "has a file or folder name that starts with a space"
    return None


def _printable(text: str) -> str:
    """``text`` with what is not printable escaped as ``repr`` would: the error stays one line, and a
    terminal never interprets a control character of a file name."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class _Cancelled(Exception):
    """A background hash that turned out not to be needed."""


def hash_model(
    model: ModelFiles, progress: Progress | None = None, *, cancelled: threading.Event | None = None
) -> ModelFiles:
    """``model`` with its digest: every file read once, in ``CHUNK_SIZE`` reads into one reused buffer."""
    manifest = hashlib.sha256()
    total = 0
    states: list[FileState] = []
    buffer = bytearray(min(CHUNK_SIZE, max(model.total_bytes, 1)))
    view = memoryview(buffer)
    for index, relative in enumerate(model.files):
        try:
            handle, state = _open_listed(model.read_paths[index], model.identities[index])
        except (OSError, _NotListed) as exc:
            raise _open_error(model, index, exc, streaming=False) from exc
        with handle:
            if state.size >= PIPELINE_FROM:
                file_digest, size = _hash_read_ahead(handle, progress, cancelled)
            else:
                hasher = hashlib.sha256()
                size = 0
                while read := handle.readinto(buffer):
                    if cancelled is not None and cancelled.is_set():
                        raise _Cancelled
                    hasher.update(view[:read])
                    size += read
                    if progress is not None:
                        progress.advance(read)
                file_digest = hasher.hexdigest()
        if size != state.size:  # written while we read it: the digest describes no state the file was ever in
            shown = model.root / relative if model.is_dir else model.root
            raise ModelChanged(MODEL_CHANGED_WHILE_HASHED.format(path=shown), hint=MODEL_CHANGED_HINT)
        if progress is not None:
            progress.file_done()
        states.append(state)
        total += size
        manifest.update(_record(relative, size, file_digest))
    return replace(model, total_bytes=total, digest="sha256:" + manifest.hexdigest(), states=tuple(states))


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
                raise _Cancelled
            hasher.update(memoryview(block)[:read])
            size += read
            if progress is not None:
                progress.advance(read)
            free.put(block)
    finally:
        free.put(None)  # the reader stops at its next hand-over (at once if it waits for a buffer)
        reader.join()


class BackgroundHash:
    """``hash_model`` in a thread, started before it is known to be needed.

    A re-run learns that it must hash (the token is registered) only after it has read the database;
    hashing meanwhile overlaps the imports of the database and MLflow clients and the database's round
    trips (hashlib releases the GIL). A first registration cancels it at once: its bytes are hashed
    while they upload. Progress may be attached later (``attach``): what was hashed before is reported
    to it then.

    Built from a path (``prefetch_digest``), the thread walks the model first: ``walked()`` waits for
    the walk and gives its ``ModelFiles``, or raises what the walk raised, when the caller gets to it.
    """

    def __init__(
        self, model: ModelFiles | None = None, progress: Progress | None = None, *, path: str | None = None
    ) -> None:
        assert (model is None) != (path is None), "a walked model or a path to walk"
        self.model = model
        self._path = path
        self._walked = threading.Event()
        self._walk_error: BaseException | None = None
        if model is not None:
            self._walked.set()
        self._relay = _ProgressRelay()
        if progress is not None:
            self._relay.attach(progress)
        self._cancelled = threading.Event()
        self._result: ModelFiles | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hokusai-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self.model is None:
            try:
                self.model = scan_model(self._path or "")
            except BaseException as exc:  # raised by walked(), in the caller's thread and order
                self._walk_error = exc
                return
            finally:
                self._walked.set()
        try:
            self._result = hash_model(self.model, self._relay, cancelled=self._cancelled)
        except _Cancelled:
            pass
        except BaseException as exc:  # re-raised by result(), in the caller's thread
            self._error = exc

    def walked(self) -> ModelFiles:
        """The model as walked (waiting for the walk); raises the walk's error, e.g. a missing path."""
        self._walked.wait()
        if self._walk_error is not None:
            raise self._walk_error
        assert self.model is not None
        return self.model

    def attach(self, progress: Progress) -> None:
        """Report to ``progress`` from now on, starting with what was hashed so far."""
        self._relay.attach(progress)

    def result(self) -> ModelFiles:
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._walk_error is not None:
            raise self._walk_error
        assert self._result is not None, "result() after cancel()"
        return self._result

    def cancel(self) -> None:
        """Stop at the next read and wait for the thread (a few milliseconds once it is hashing)."""
        self._cancelled.set()
        self._thread.join()


class _ProgressRelay:
    """Counts what a hash reports until a ``Progress`` is attached, then hands it all on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: Progress | None = None
        self._nbytes = 0
        self._files = 0

    def attach(self, target: Progress) -> None:
        with self._lock:
            self._target = target
            nbytes, files, self._nbytes, self._files = self._nbytes, self._files, 0, 0
        if nbytes:
            target.advance(nbytes)
        for _ in range(files):
            target.file_done()

    def advance(self, nbytes: int) -> None:
        with self._lock:
            target = self._target
            if target is None:
                self._nbytes += nbytes
                return
        target.advance(nbytes)

    def file_done(self) -> None:
        with self._lock:
            target = self._target
            if target is None:
                self._files += 1
                return
        target.file_done()


def prefetch_digest(model_path: str | os.PathLike[str] | None) -> BackgroundHash | None:
    """Start walking and hashing ``model_path`` now, in a thread, before the slow imports of a registration.

    A re-run needs the digest before anything else, and the command's imports (SQLAlchemy, the
    database driver: ~0.3 s) then run beside the hash instead of before it. Nothing is checked here:
    the registration takes the walk (``walked()``) where it used to walk the path itself, after the
    cheaper checks, so a bad token id is still reported first and at once.
    """
    if not model_path or usable_cores() < 2:
        # on one core the hash could only take turns with the imports it is meant to run beside: a
        # re-run would gain nothing, and a first registration (hashed while it uploads) would pay for it
        return None
    return BackgroundHash(path=os.fspath(model_path))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or ``taskset`` limits it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def inspect_model(model_path: str | os.PathLike[str]) -> ModelFiles:
    """Check the model path is a readable, non-empty file or directory and compute its digest."""
    return hash_model(scan_model(model_path))
