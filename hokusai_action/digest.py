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
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from hokusai_action.errors import InputError, ModelChanged

CHUNK_SIZE = 1024 * 1024  # 1 MiB: large enough for hashlib to release the GIL, small for memory

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
    states: tuple[FileState, ...] = ()  # per file, in the order of ``files``
    links: tuple[bool, ...] = ()  # per file: reached through a link of its own name (followed when read)

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
                found.append(_Entry(relative, entry.path, False, (listed.st_dev, listed.st_ino)))
            elif stat.S_ISDIR(mode):
                pending.append((Path(entry.path), relative + "/", above | {Path(entry.path)}))
            elif stat.S_ISLNK(mode):
                resolved, target = _check_link(root, real_root, Path(entry.path), root / relative, above)
                if stat.S_ISDIR(target.st_mode):
                    pending.append((resolved, relative + "/", above | {resolved}))
                else:
                    found.append(_Entry(relative, str(resolved), True, (target.st_dev, target.st_ino)))
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


def _hash_file(path: str, buffer: bytearray, identity: tuple[int, int]) -> tuple[str, FileState, int]:
    """(sha256 hex, the file's state before reading, bytes read) of the inode ``identity`` at ``path``.

    Raises OSError (ELOOP: ``path`` is a link now) or ``_NotListed`` before reading a byte of anything else.
    """
    hasher = hashlib.sha256()
    view = memoryview(buffer)
    with open(os.open(path, _OPEN_FLAGS), "rb", buffering=0) as handle:
        # taken before reading: a write during the hash or the upload shows in the check after it
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != identity:
            raise _NotListed(path)
        state = FileState.of(opened)
        size = 0
        while True:
            read = handle.readinto(buffer)
            if not read:
                break
            hasher.update(view[:read])
            size += read
    return hasher.hexdigest(), state, size


def inspect_model(model_path: str | os.PathLike[str]) -> ModelFiles:
    """Check the model path is a readable, non-empty file or directory and compute its digest.

    The path itself may be a symbolic link (``checkpoints/latest``): it is resolved first, and links
    inside the model must stay inside that resolved folder.
    """
    root = Path(model_path)
    real_root = _resolve_link(root)
    if real_root is None:
        raise InputError(PATH_MISSING.format(path=root, cwd=Path.cwd()))
    found = os.stat(real_root)
    mode = found.st_mode
    if stat.S_ISREG(mode):
        entries = [_Entry(root.name, str(real_root), os.path.islink(root), (found.st_dev, found.st_ino))]
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

    manifest = hashlib.sha256()
    total = 0
    states: list[FileState] = []
    buffer = bytearray(CHUNK_SIZE)  # one for all files: a fresh 1 MiB per small file costs more than hashing it
    for relative, full, link, identity in entries:
        shown = root / relative if is_dir else root
        try:
            file_digest, state, size = _hash_file(full, buffer, identity)
        except _NotListed as exc:
            raise ModelChanged(MODEL_SWAPPED.format(path=shown), hint=MODEL_CHANGED_HINT) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP and os.path.islink(full):  # swapped for a link since the walk
                # a link's target turned into a link: the link still is one, what it led to was swapped
                swapped = MODEL_SWAPPED if link else MODEL_SWAPPED_FOR_LINK
                raise ModelChanged(swapped.format(path=shown), hint=MODEL_CHANGED_HINT) from exc
            raise InputError(PATH_UNREADABLE.format(path=shown, reason=exc.strerror or exc)) from exc
        if size != state.size:  # written while we read it: the digest describes no state the file was ever in
            raise ModelChanged(MODEL_CHANGED_WHILE_HASHED.format(path=shown), hint=MODEL_CHANGED_HINT)
        states.append(state)
        total += size
        # NUL cannot occur in a path, so the record boundaries are unambiguous
        manifest.update(f"{relative}\0{size}\0{file_digest}\n".encode())
    return ModelFiles(
        root=root,
        is_dir=is_dir,
        files=tuple(entry.relative for entry in entries),
        total_bytes=total,
        digest="sha256:" + manifest.hexdigest(),
        real_root=real_root,
        states=tuple(states),
        links=tuple(entry.link for entry in entries),
    )
