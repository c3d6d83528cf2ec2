"""The walk of a model path: every file it holds, with its links checked and followed, read from nothing.

What is hashed is exactly what is uploaded: symbolic links are followed only inside the model
directory (DESIGN.md, "Model files"), and only to a regular file or a folder that does not lead back
to itself. A file MLflow would store under another name is refused by name. Each file is listed with
the (device, inode) it was found at and its state, so that what is read later can be checked to be it.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path
from typing import NamedTuple

from hokusai_action.digest.files import PATH_UNREADABLE, FileState, ModelFiles
from hokusai_action.errors import InputError

PATH_MISSING = "Model path {path} does not exist. Check --model-path (relative paths start at {cwd})."
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
# A round trip (register, download, compare: tests/e2e/mlflow/test_upload_http.py, MLflow 3.17) through the
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
