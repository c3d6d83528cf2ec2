"""The artifact digest: one SHA-256 over a model's files, streamed, never read whole into memory.

The digest is the idempotency key of a registration: the same token with the same bytes is the same
registration. It covers each file's relative path, size and content, so renaming a file or moving
bytes between files changes it, and it does not depend on timestamps, permissions or walk order.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from hokusai_action.errors import InputError

CHUNK_SIZE = 1024 * 1024  # 1 MiB: large enough for hashlib to release the GIL, small for memory

PATH_MISSING = "Model path {path} does not exist. Check --model-path (relative paths start at {cwd})."
PATH_UNREADABLE = "Model path {path} cannot be read: {reason}. Fix its permissions or point --model-path elsewhere."
PATH_EMPTY = "Model directory {path} holds no files. Point --model-path at the trained model's folder or file."
PATH_SPECIAL = "Model path {path} is not a regular file or directory."
PATH_LINKED_DIR = (
    "Model directory entry {path} is a symbolic link to a folder, which would not be uploaded. "
    "Replace the link with a copy of the folder."
)


@dataclass(frozen=True)
class ModelFiles:
    root: Path
    is_dir: bool
    files: tuple[str, ...]  # relative POSIX paths, sorted
    total_bytes: int
    digest: str  # "sha256:<hex>"

    @property
    def is_mlflow_model(self) -> bool:
        return self.is_dir and "MLmodel" in self.files


def _walk_files(root: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []

    def on_error(exc: OSError) -> None:
        raise InputError(PATH_UNREADABLE.format(path=exc.filename, reason=exc.strerror or exc)) from exc

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        dirnames.sort()
        for name in dirnames:
            if (Path(dirpath) / name).is_symlink():
                # MLflow's upload walks without following links: the folder would silently go missing
                raise InputError(PATH_LINKED_DIR.format(path=Path(dirpath) / name))
        for name in filenames:
            full = Path(dirpath) / name
            if not full.is_file():  # sockets, fifos, dangling links
                raise InputError(PATH_SPECIAL.format(path=full))
            found.append((full.relative_to(root).as_posix(), full))
    found.sort(key=lambda item: item[0])
    return found


def _hash_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    try:
        with path.open("rb", buffering=0) as handle:
            buffer = bytearray(CHUNK_SIZE)
            view = memoryview(buffer)
            while True:
                read = handle.readinto(buffer)
                if not read:
                    break
                hasher.update(view[:read])
                size += read
    except OSError as exc:
        raise InputError(PATH_UNREADABLE.format(path=path, reason=exc.strerror or exc)) from exc
    return hasher.hexdigest(), size


def inspect_model(model_path: str | os.PathLike[str]) -> ModelFiles:
    """Check the model path is a readable, non-empty file or directory and compute its digest."""
    root = Path(model_path)
    if not root.exists():
        raise InputError(PATH_MISSING.format(path=root, cwd=Path.cwd()))
    if root.is_file():
        entries = [(root.name, root)]
        is_dir = False
    elif root.is_dir():
        if not os.access(root, os.R_OK | os.X_OK):
            raise InputError(PATH_UNREADABLE.format(path=root, reason="permission denied"))
        entries = _walk_files(root)
        if not entries:
            raise InputError(PATH_EMPTY.format(path=root))
        is_dir = True
    else:
        raise InputError(PATH_SPECIAL.format(path=root))

    manifest = hashlib.sha256()
    total = 0
    for relative, full in entries:
        file_digest, size = _hash_file(full)
        total += size
        # NUL cannot occur in a path, so the record boundaries are unambiguous
        manifest.update(f"{relative}\0{size}\0{file_digest}\n".encode())
    return ModelFiles(
        root=root,
        is_dir=is_dir,
        files=tuple(relative for relative, _ in entries),
        total_bytes=total,
        digest="sha256:" + manifest.hexdigest(),
    )
