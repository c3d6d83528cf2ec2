"""The model's files as the walk listed them (``ModelFiles``), and how to tell they changed since.

The artifact digest is the idempotency key of a registration: the same token with the same bytes is
the same registration. It covers each file's relative path, size and content (one record per file,
``_record``), so renaming a file or moving bytes between files changes it, and it does not depend
on timestamps, permissions or walk order.

Each file's size, times and inode are recorded so that a file rewritten before the version exists is
noticed (``ModelFiles.ensure_unchanged``). Each file is read through the very inode the walk checked
(``ModelFiles.open``): it is opened without following a final link and its (device, inode) must be
the walk's, so a file swapped for a link to a secret (or a folder for a link to ``/``) between the
walk and the read is refused, never read.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from hokusai_action.errors import InputError, ModelChanged

PATH_UNREADABLE = "Model path {path} cannot be read: {reason}. Fix its permissions or point --model-path elsewhere."
MODEL_CHANGED = "The model changed while it was being uploaded: {path} is not what was hashed. No version was created."
MODEL_CHANGED_HINT = "Re-run once the training job has finished writing the model."
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


class Progress(Protocol):
    """What hashing and uploading report as they go (``hokusai_action.progress`` draws it)."""

    def advance(self, nbytes: int) -> None: ...

    def file_done(self) -> None: ...


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
    """A model path as walked: its files in order, what each was when listed (then hashed), and its digest
    once hashed."""

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

    def shown(self, relative: str) -> Path:
        """The file ``relative`` as the user knows it, for messages."""
        return self.root / relative if self.is_dir else self.root

    def open(self, index: int, *, streaming: bool) -> tuple[io.FileIO, FileState]:
        """File ``index`` opened through the inode the walk checked, and its state before a byte is read.

        Anything else there now is the user's error: ``ModelChanged`` for a file swapped (or, while
        ``streaming`` an upload, gone), ``InputError`` for one that cannot be read.
        """
        try:
            return _open_listed(self.read_paths[index], self.identities[index])
        except (OSError, _NotListed) as exc:
            raise _open_error(self, index, exc, streaming=streaming) from exc

    def with_digest(self, records: Sequence[tuple[int, str]], states: Sequence[FileState]) -> ModelFiles:
        """This model hashed: ``records`` holds each file's (size, SHA-256) as read, in the order of ``files``."""
        manifest = hashlib.sha256()
        for relative, (size, file_digest) in zip(self.files, records, strict=True):
            manifest.update(_record(relative, size, file_digest))
        total = sum(size for size, _ in records)
        return replace(self, total_bytes=total, digest="sha256:" + manifest.hexdigest(), states=tuple(states))

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
        raise ModelChanged(MODEL_CHANGED.format(path=self.shown(relative)), hint=MODEL_CHANGED_HINT)


def _record(relative: str, size: int, file_digest: str) -> bytes:
    # NUL cannot occur in a path, so the record boundaries are unambiguous
    return f"{relative}\0{size}\0{file_digest}\n".encode()


class _NotListed(Exception):
    """The file opened is not the one the walk checked (another inode, or not a regular file)."""


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
    shown = model.shown(model.files[index])
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
    if exc.errno == errno.ELOOP and os.path.islink(model.read_paths[index]):  # swapped for a link since the walk
        # a link's target turned into a link: the link still is one, what it led to was swapped
        swapped = MODEL_SWAPPED if model.links[index] else MODEL_SWAPPED_FOR_LINK
        return ModelChanged(swapped.format(path=shown), hint=MODEL_CHANGED_HINT)
    return InputError(PATH_UNREADABLE.format(path=shown, reason=exc.strerror or exc))
