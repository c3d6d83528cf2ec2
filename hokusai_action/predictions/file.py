"""The predictions file read once, front to back, and never held in memory.

Its SHA-256 is taken from the same read, so the digest recorded with the registration is the digest
of exactly the bytes the metric came from. Every way the read can fail (missing, unreadable, not
UTF-8, broken CSV, empty) becomes an ``InputError`` naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hokusai_action.errors import InputError
from hokusai_action.predictions.readers import Batch, Columns, CsvRows, EmptyFile, JsonLinesRows, row_reader

FILE_MISSING = (
    "Predictions file {path} does not exist. Check the path (a relative path starts from the working directory, {cwd})."
)
FILE_UNREADABLE = "Cannot read predictions file {path}: {reason}. Point at a regular file that this user may read."
NOT_UTF8 = (
    "Predictions file {path} is not UTF-8 text (byte 0x{byte:02x}: {reason}). "
    "Save it as UTF-8 CSV or JSON Lines; a compressed file must be decompressed first."
)
EMPTY_FILE = (
    "Predictions file {path} is empty: it has no {what}, so {metric} cannot be computed. "
    "Write the model's predictions on the evaluation set into it, one row per example."
)
BAD_CSV = (
    "Line {line} of {path} is not valid CSV ({reason}). Check the quoting on that line, or that the file is CSV at all."
)

_READ_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True)
class FileRead:
    """What reading the whole file gave besides its rows."""

    sha256: str  # of the file's bytes, every one of them read once
    file_format: str  # "csv", "tsv" or "jsonl"


class _HashingReader(io.RawIOBase):
    """A raw file that feeds every byte it hands out into a SHA-256, so hashing costs no second read."""

    def __init__(self, raw: io.RawIOBase) -> None:
        super().__init__()
        self._raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)
        if count:
            self.digest.update(memoryview(buffer)[:count])
        return count or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


def read_predictions(path: Path, columns: Columns, *, metric: str, each_batch: Callable[[Batch], None]) -> FileRead:
    """Hand every batch of rows of ``path`` to ``each_batch``, in order, reading the file once.

    ``metric`` is only named in the message about an empty file.
    """
    hashing = _open(path)
    buffered = io.BufferedReader(hashing, buffer_size=_READ_BUFFER_BYTES)
    rows: CsvRows | JsonLinesRows | None = None
    with io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="") as text:
        try:
            rows = row_reader(text, path, columns)
            for batch in rows.batches():
                each_batch(batch)
            while hashing.read(_READ_BUFFER_BYTES):  # the reader stopped at EOF; this only makes sure
                pass
            return FileRead(sha256=hashing.digest.hexdigest(), file_format=rows.file_format)
        except EmptyFile as exc:
            raise InputError(EMPTY_FILE.format(path=path, what=exc.what, metric=metric)) from None
        except UnicodeDecodeError as exc:
            byte = exc.object[exc.start] if exc.start < len(exc.object) else 0
            raise InputError(NOT_UTF8.format(path=path, byte=byte, reason=exc.reason)) from None
        except csv.Error as exc:
            line = rows.line if rows else 0
            raise InputError(BAD_CSV.format(line=line, path=path, reason=exc)) from None
        except OSError as exc:
            raise InputError(FILE_UNREADABLE.format(path=path, reason=exc.strerror or exc)) from exc


def _open(path: Path) -> _HashingReader:
    try:
        raw = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the TextIOWrapper around it
    except FileNotFoundError:
        raise InputError(FILE_MISSING.format(path=path, cwd=Path.cwd())) from None
    except IsADirectoryError:
        raise InputError(FILE_UNREADABLE.format(path=path, reason="it is a directory")) from None
    except OSError as exc:
        raise InputError(FILE_UNREADABLE.format(path=path, reason=exc.strerror or exc)) from exc
    return _HashingReader(raw)
