"""Compute a metric from a file of predictions, streaming it once.

One way to get the measured value for the gate: the user hands over the model's predictions on the
evaluation set, one row per example, and the tool computes the metric itself. The file is read once,
front to back, and never held in memory; its SHA-256 is taken from the same read, so the digest
recorded with the registration is the digest of exactly the bytes the metric came from.

Formats, chosen by extension (``.csv``, ``.tsv``, ``.jsonl``, ``.ndjson``) and otherwise by the first
non-blank line (``{`` or ``[`` means JSON Lines, anything else CSV):

- CSV/TSV: a header row, then one row per example, every row with as many fields as the header.
- JSON Lines: one JSON object per line, e.g. ``{"label": 1, "score": 0.83}``; other keys are ignored.

What is kept while reading, per metric (the "sufficient statistics"):

- accuracy, precision, recall, f1: four confusion counts. A score above 0.5 is a positive
  prediction, so 0/1 predictions are used as they are and probabilities are thresholded; exactly
  0.5 counts as negative, as scikit-learn's ``predict`` does (argmax keeps the first class on a tie).
- log_loss: a compensated sum of per-row losses, probabilities clipped to ``[eps, 1 - eps]`` with
  ``eps`` the float64 machine epsilon, as scikit-learn 1.9 does (``xp.finfo(y_proba.dtype).eps``).
- mse, rmse, mae, r2: exactly rounded sums per batch of rows (``math.fsum``), combined with
  Neumaier compensation; r2's total sum of squares uses per-batch two-pass variances merged with the
  pairwise formula of Chan, Golub and LeVeque (1979), so it stays accurate when labels are large.
- auroc: the Mann-Whitney U statistic, ties counted one half. Scores are kept per class in a dict of
  score -> count while there are few distinct scores, otherwise in ``array('d')`` (8 bytes a row).
  At the end each array is sorted in fixed-size runs in place and the runs are merged lazily, so no
  list of every score is ever built. U is an exact integer, so the AUROC is exactly rounded.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import json
import math
import operator
import os
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import chain, compress, islice, repeat, tee
from operator import itemgetter
from pathlib import Path
from typing import Any

from hokusai_action.domain.metrics import resolve_metric
from hokusai_action.errors import InputError

# --- error messages: what happened, why, what to do ---------------------------------------------

NOT_COMPUTABLE = (
    "Metric '{metric}' cannot be computed from a predictions file: only {supported} can. "
    "Gate on one of those, or pass the measured value itself instead of a predictions file."
)
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
NO_ROWS = (
    "Predictions file {path} has a header but no data rows, so {metric} cannot be computed. "
    "Write one row per example under the header."
)
MISSING_COLUMNS = (
    "Predictions file {path} has no column {missing}: its {where} has {found}. "
    "The labels are read from {label} and the scores from {score}; "
    "rename the columns in the file or name the right ones with {options}."
)
COLUMN_OPTIONS = {"label": "--label-column", "score": "--score-column"}  # action inputs without the dashes
SAME_COLUMN = (
    "The label column and the score column are both '{column}'; a metric compares two different columns. "
    "Name the column that holds the model's scores or predictions."
)
DUPLICATE_COLUMN = (
    "The header of {path} names column '{column}' {count} times, so it is ambiguous which one holds the "
    "{role}. Rename the duplicates."
)
ROW_LENGTH = (
    "Row {row} (line {line}) of {path} has {got} fields but the header has {expected}, so its columns "
    "cannot be matched to the header. Quote fields that contain the delimiter, or fix the row."
)
ROW_MISSING_KEY = (
    "Row {row} (line {line}) of {path} has no '{column}' key (it has {found}). "
    "Every line must carry the same label and score keys as the first."
)
NOT_AN_OBJECT = (
    "Line {line} of {path} is not a JSON object ({reason}). "
    'A JSON Lines file holds one object per line, like {{"label": 1, "score": 0.83}}.'
)
BAD_CSV = (
    "Line {line} of {path} is not valid CSV ({reason}). Check the quoting on that line, or that the file is CSV at all."
)
LINE_TOO_LONG = (
    "Line {line} of {path} is longer than {limit} characters; a predictions row holds a few short fields. "
    "Check that the file is CSV or JSON Lines with one example per line."
)
MISSING_VALUE = (
    "Row {row} (line {line}) of {path} has no value in column '{column}'. "
    "{metric} needs a value on every row; fill it in or drop the row."
)
NOT_A_NUMBER = (
    "Row {row} (line {line}) of {path}, column '{column}': {value} is not a number. "
    "{metric} needs numbers in that column; fix the value or drop the row."
)
NOT_FINITE = (
    "Row {row} (line {line}) of {path}, column '{column}': {value} is not a finite number, "
    "and {metric} is undefined on NaN or infinity. Fix the value or drop the row."
)
NOT_A_PROBABILITY = (
    "Row {row} (line {line}) of {path}, column '{column}': {value} is outside [0, 1]. "
    "{metric} needs the probability of the positive class or a 0/1 prediction; "
    "pass probabilities (e.g. predict_proba[:, 1]) rather than raw decision scores."
)
LABEL_NOT_BINARY = (
    "Row {row} (line {line}) of {path}, column '{column}': label {value} is not binary. "
    "{metric} needs labels 0/1 or true/false; for other class names set the positive label, "
    "and rows equal to it count as positive, all others as negative."
)
ONE_CLASS = (
    "All {rows} rows of {path} are {present} (no {absent} row{label_note}), so auroc is undefined: "
    "it ranks positives against negatives and needs both. Evaluate on data that holds both classes."
)
TOO_FEW_ROWS_FOR_R2 = (
    "Predictions file {path} has 1 data row, and r2 is undefined on fewer than two. Evaluate on more examples."
)

# --- tunables (module level so tests can shrink them to exercise every path on small files) --------

MAX_LINE_CHARS = 1 << 20  # a predictions row is a few short fields; a longer line means a wrong file
_READ_BUFFER_BYTES = 1 << 20
_BATCH_ROWS = 256  # rows per batch: small enough to stay in cache and die young (fewer GC scans)
_DISTINCT_SCORES_LIMIT = 1 << 14  # auroc keeps score -> count dicts up to this many distinct scores
_SORT_RUN_LENGTH = 1 << 16  # auroc sorts its score arrays in runs of this many, then merges lazily

_THRESHOLD = 0.5
_EPS = 2.0**-52  # float64 machine epsilon, what numpy's finfo(float64).eps is
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SNIFF_LINES = 1000  # blank lines skipped looking for the first line that shows the format
_SHOWN_COLUMNS = 20
_SHOWN_VALUE_CHARS = 40


@dataclass(frozen=True)
class PredictionsResult:
    """The metric computed from a predictions file, and what it was computed from."""

    value: float
    rows: int
    sha256: str  # of the file's bytes, taken from the same read as the metric
    label_column: str
    score_column: str
    metric: str  # canonical name, e.g. "auroc" for "roc_auc"
    file_format: str  # "csv", "tsv" or "jsonl"


# --- reading ------------------------------------------------------------------------------------


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


def _quote_all(names: Iterable[str]) -> str:
    shown = [f"'{name}'" for name in names]
    if not shown:
        return "no columns"
    if len(shown) > _SHOWN_COLUMNS:
        return ", ".join(shown[:_SHOWN_COLUMNS]) + f" and {len(shown) - _SHOWN_COLUMNS} more"
    return ", ".join(shown)


def _show_value(raw: Any) -> str:
    text = raw if isinstance(raw, str) else json.dumps(raw)
    if len(text) > _SHOWN_VALUE_CHARS:
        text = text[:_SHOWN_VALUE_CHARS] + "..."
    return f"'{text}'"


def _too_long(lengths: list[int]) -> int | None:
    """Index of the first length over MAX_LINE_CHARS, if any."""
    if lengths and max(lengths) > MAX_LINE_CHARS:
        return next(index for index, length in enumerate(lengths) if length > MAX_LINE_CHARS)
    return None


class _Columns:
    """Which columns hold the labels and scores; the score column defaults to score, then prediction."""

    def __init__(self, path: Path, label_column: str, score_column: str | None) -> None:
        self.path = path
        self.label = label_column
        self.score = score_column

    def resolve(self, names: list[str], *, where: str) -> None:
        if self.score is None:
            self.score = "score" if "score" in names or "prediction" not in names else "prediction"
            score_text = "'score' (or 'prediction')"
        else:
            score_text = f"'{self.score}'"
        missing = [name for name in (self.label, self.score) if name not in names]
        if missing:
            roles = [role for role, name in (("label", self.label), ("score", self.score)) if name not in names]
            raise InputError(
                MISSING_COLUMNS.format(
                    path=self.path,
                    missing=" or ".join(f"'{name}'" for name in missing),
                    where=where,
                    found=_quote_all(names),
                    label=f"'{self.label}'",
                    score=score_text,
                    options=" and ".join(COLUMN_OPTIONS[role] for role in roles),
                )
            )
        if self.label == self.score:
            raise InputError(SAME_COLUMN.format(column=self.label))


class _EmptyFile(Exception):
    """Raised by a row reader that found nothing to read; the caller words the message."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Batch:
    """The raw label and score cells of up to _BATCH_ROWS data rows, and where each row is."""

    __slots__ = ("first_row", "labels", "lines", "scores")

    def __init__(self, labels: list[Any], scores: list[Any], *, first_row: int, lines: int | list[int]) -> None:
        self.labels = labels
        self.scores = scores
        self.first_row = first_row  # the 1-based data row number of labels[0]
        # the line each row starts on, or (when every row is one line) the line before the first row
        self.lines = lines

    def location(self, index: int) -> tuple[int, int]:
        """(data row, line) of the row at ``index``, both 1-based."""
        lines = self.lines
        line = lines[index] if isinstance(lines, list) else lines + index + 1
        return self.first_row + index, line


def _line_breaks(fields: list[str]) -> int:
    """Line breaks inside a record's quoted fields (with newline="" the csv module keeps them)."""
    return sum(field.count("\n") + field.count("\r") - field.count("\r\n") for field in fields)


class _CsvRows:
    """Batches of a CSV file's data rows.

    Rows are taken from the csv reader a batch at a time and split into label and score cells with
    C-level ``map``; only a batch holding a blank line or a row of the wrong length is walked row by
    row, to skip the blanks and name the bad row.
    """

    def __init__(self, lines: Iterator[str], columns: _Columns, *, delimiter: str) -> None:
        # a second view of the same lines, to check their lengths after the csv reader has had them
        lines, self._lines_seen = tee(lines)
        self._reader = csv.reader(lines, delimiter=delimiter, strict=True)
        self._columns = columns
        self._lines_checked = 0
        self.path = columns.path
        self.file_format = "tsv" if delimiter == "\t" else "csv"
        self.rows = 0

    @property
    def line(self) -> int:
        """The last line the csv reader has read."""
        return self._reader.line_num

    def _check_line_lengths(self) -> None:
        # readline hands a line over MAX_LINE_CHARS in pieces, which must not pass for rows
        count = self._reader.line_num - self._lines_checked
        index = _too_long(list(map(len, islice(self._lines_seen, count))))
        if index is not None:
            line = self._lines_checked + index + 1
            raise InputError(LINE_TOO_LONG.format(line=line, path=self.path, limit=MAX_LINE_CHARS))
        self._lines_checked += count

    def batches(self) -> Iterator[_Batch]:
        reader, columns = self._reader, self._columns
        header = next((fields for fields in reader if fields), None)
        self._check_line_lengths()
        if header is None:
            raise _EmptyFile("header row")
        names = [name.strip() for name in header]
        columns.resolve(names, where="header")
        for role, name in (("labels", columns.label), ("scores", columns.score)):
            if (count := names.count(name)) > 1:
                raise InputError(DUPLICATE_COLUMN.format(path=self.path, column=name, count=count, role=role))
        width = len(names)
        label_index, score_index = names.index(columns.label), names.index(columns.score)
        label_of, score_of = itemgetter(label_index), itemgetter(score_index)
        while records := list(islice(reader, _BATCH_ROWS)):
            before = self._lines_checked
            self._check_line_lengths()
            if set(map(len, records)) == {width}:  # the usual case: no blank line, no short row
                one_line_each = self._lines_checked - before == len(records)
                batch = _Batch(
                    list(map(label_of, records)),
                    list(map(score_of, records)),
                    first_row=self.rows + 1,
                    lines=before if one_line_each else self._first_lines(records, before),
                )
            else:
                batch = self._checked_batch(records, before, width, label_index, score_index)
            self.rows += len(batch.labels)
            if batch.labels:
                yield batch

    @staticmethod
    def _first_lines(records: list[list[str]], before: int) -> list[int]:
        """The line each record starts on, when some records span several lines."""
        lines = []
        line = before
        for fields in records:
            lines.append(line + 1)
            line += 1 + _line_breaks(fields)
        return lines

    def _checked_batch(
        self, records: list[list[str]], before: int, width: int, label_index: int, score_index: int
    ) -> _Batch:
        labels: list[str] = []
        scores: list[str] = []
        lines: list[int] = []
        for fields, line in zip(records, self._first_lines(records, before), strict=True):
            if not fields:  # a blank line
                continue
            if len(fields) != width:
                raise InputError(
                    ROW_LENGTH.format(
                        row=self.rows + len(labels) + 1,
                        line=line,
                        path=self.path,
                        got=len(fields),
                        expected=width,
                    )
                )
            labels.append(fields[label_index])
            scores.append(fields[score_index])
            lines.append(line)
        return _Batch(labels, scores, first_row=self.rows + 1, lines=lines)


class _JsonLinesRows:
    """Batches of a JSON Lines file's objects.

    A batch of lines is decoded with C-level ``map(json.loads, ...)``; a batch holding a blank line,
    a line that is not an object or an object without the keys is walked line by line instead.
    """

    file_format = "jsonl"

    def __init__(self, lines: Iterator[str], columns: _Columns) -> None:
        self._lines = lines
        self._columns = columns
        self.path = columns.path
        self.rows = 0
        self.line = 0  # lines read so far

    def batches(self) -> Iterator[_Batch]:
        getters: tuple[itemgetter[Any], itemgetter[Any]] | None = None
        while chunk := list(islice(self._lines, _BATCH_ROWS)):
            before = self.line
            self.line += len(chunk)
            index = _too_long(list(map(len, chunk)))
            if index is not None:
                raise InputError(LINE_TOO_LONG.format(line=before + index + 1, path=self.path, limit=MAX_LINE_CHARS))
            batch = self._decoded_batch(chunk, before, getters) if getters else None
            if batch is None:
                batch = self._checked_batch(chunk, before)
            if self.rows == 0 and batch.labels:  # the first object has fixed the columns
                getters = (itemgetter(self._columns.label), itemgetter(self._columns.score))
            self.rows += len(batch.labels)
            if batch.labels:
                yield batch
        if self.rows == 0:
            raise _EmptyFile("JSON objects")

    def _decoded_batch(
        self, chunk: list[str], before: int, getters: tuple[itemgetter[Any], itemgetter[Any]]
    ) -> _Batch | None:
        try:
            records = list(map(json.loads, chunk))
            if set(map(type, records)) != {dict}:
                return None
            labels, scores = list(map(getters[0], records)), list(map(getters[1], records))
        except (ValueError, KeyError):  # a blank or broken line, or a missing key: find it line by line
            return None
        return _Batch(labels, scores, first_row=self.rows + 1, lines=before)

    def _checked_batch(self, chunk: list[str], before: int) -> _Batch:
        columns = self._columns
        labels: list[Any] = []
        scores: list[Any] = []
        lines: list[int] = []
        for line, text in enumerate(chunk, start=before + 1):
            try:
                record = json.loads(text)
            except ValueError:  # json.JSONDecodeError; a blank line is one too
                if not text.strip():
                    continue
                reason = _json_error(text)
                raise InputError(NOT_AN_OBJECT.format(line=line, path=self.path, reason=reason)) from None
            if type(record) is not dict:
                reason = f"it is {_json_kind(record)}"
                raise InputError(NOT_AN_OBJECT.format(line=line, path=self.path, reason=reason))
            row = self.rows + len(labels) + 1
            if row == 1:
                columns.resolve(list(record), where="first object")
            for key in (columns.label, columns.score):
                if key not in record:
                    raise InputError(
                        ROW_MISSING_KEY.format(row=row, line=line, path=self.path, column=key, found=_quote_all(record))
                    )
            labels.append(record[columns.label])
            scores.append(record[columns.score])
            lines.append(line)
        return _Batch(labels, scores, first_row=self.rows + 1, lines=lines)


def _json_error(text: str) -> str:
    """Why a line is not JSON, with the column counted on the line without its line break."""
    try:
        json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} at column {exc.colno}"
    return "invalid JSON"


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


# --- parsing cells ------------------------------------------------------------------------------
#
# Each kind of cell has a fast converter for a whole batch (C-level map, returning None when any cell
# is unusable) and a per-cell parser that says what is wrong; the slow path runs only on a batch
# the fast one refused, so the two must agree on every cell they both accept.


class _CellError(Exception):
    """A cell that cannot be used; the converter adds the row, line and column and raises InputError."""

    def __init__(self, template: str, value: Any) -> None:
        super().__init__(template)
        self.template = template
        self.value = value


_NUMBER_CELLS = frozenset({str, float, int})  # CSV cells are text; JSON numbers are float or int


def _parse_real(raw: Any) -> float:
    kind = type(raw)
    if kind is float:
        value = raw
    elif kind is str or kind is int:
        try:
            value = float(raw)
        except ValueError:
            raise _CellError(MISSING_VALUE if not raw.strip() else NOT_A_NUMBER, raw) from None
        except OverflowError:  # an int too large for a float
            raise _CellError(NOT_FINITE, raw) from None
    elif raw is None:
        raise _CellError(MISSING_VALUE, raw)
    else:  # a JSON boolean, array or object
        raise _CellError(NOT_A_NUMBER, raw)
    if not math.isfinite(value):
        raise _CellError(NOT_FINITE, raw)
    return value


def _reals(cells: list[Any]) -> list[float] | None:
    if not _NUMBER_CELLS.issuperset(map(type, cells)):
        return None
    try:
        values = list(map(float, cells))
    except (ValueError, OverflowError):
        return None
    return values if all(map(math.isfinite, values)) else None


def _parse_probability(raw: Any) -> float:
    value = _parse_real(raw)
    if not 0.0 <= value <= 1.0:
        raise _CellError(NOT_A_PROBABILITY, raw)
    return value


def _probabilities(cells: list[Any]) -> list[float] | None:
    values = _reals(cells)
    if values is None or min(values) < 0.0 or max(values) > 1.0:
        return None
    return values


# keys 0/1 also match True/False and 0.0/1.0 from JSON: equal numbers share one dict key
_BINARY_LABELS: dict[Any, int] = {
    "0": 0,
    "1": 1,
    "0.0": 0,
    "1.0": 1,
    "false": 0,
    "true": 1,
    "False": 0,
    "True": 1,
    "FALSE": 0,
    "TRUE": 1,
    0: 0,
    1: 1,
}


def _parse_binary_label(raw: Any) -> int:
    try:
        found = _BINARY_LABELS.get(raw)
    except TypeError:  # an unhashable JSON array or object
        raise _CellError(LABEL_NOT_BINARY, raw) from None
    if found is not None:
        return found
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            raise _CellError(MISSING_VALUE, raw)
        found = _BINARY_LABELS.get(text.lower())
        if found is not None:
            return found
        try:
            value = float(text)
        except ValueError:
            raise _CellError(LABEL_NOT_BINARY, raw) from None
    elif raw is None:
        raise _CellError(MISSING_VALUE, raw)
    elif isinstance(raw, float):
        value = raw
    else:
        raise _CellError(LABEL_NOT_BINARY, raw)
    if not math.isfinite(value):
        raise _CellError(NOT_FINITE, raw)
    if value in (0.0, 1.0):
        return int(value)
    raise _CellError(LABEL_NOT_BINARY, raw)


def _binary_labels(cells: list[Any]) -> list[int] | None:
    try:
        values = list(map(_BINARY_LABELS.get, cells))
    except TypeError:
        return None
    return None if None in values else values


def _label_text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return raw.strip() if isinstance(raw, str) else str(raw)


def _as_number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    try:
        return float(raw)
    except (TypeError, ValueError, OverflowError):
        return None


def _positive_label_parser(positive_label: Any) -> Callable[[Any], int]:
    """Label 1 for a cell equal to ``positive_label`` (as text, or as a number), 0 for any other."""
    wanted_text = _label_text(positive_label)
    wanted_number = _as_number(positive_label)

    def parse(raw: Any) -> int:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raise _CellError(MISSING_VALUE, raw)
        if isinstance(raw, list | dict):
            raise _CellError(LABEL_NOT_BINARY, raw)
        if _label_text(raw) == wanted_text:
            return 1
        number = _as_number(raw)
        if number is not None:
            if not math.isfinite(number):
                raise _CellError(NOT_FINITE, raw)
            if number == wanted_number:
                return 1
        return 0

    return parse


def _all_or_none(parse: Callable[[Any], Any]) -> Callable[[list[Any]], list[Any] | None]:
    """A batch converter from a per-cell parser, for cells with no C-level fast path."""

    def convert(cells: list[Any]) -> list[Any] | None:
        try:
            return list(map(parse, cells))
        except _CellError:
            return None

    return convert


class _Cells:
    """Turns a batch's raw cells into labels and scores, naming row, line and column of a bad one."""

    def __init__(
        self,
        *,
        label: tuple[Callable[[list[Any]], list[Any] | None], Callable[[Any], Any]],
        score: tuple[Callable[[list[Any]], list[float] | None], Callable[[Any], float]],
        columns: _Columns,
        metric: str,
    ) -> None:
        self._labels, self._parse_label = label
        self._scores, self._parse_score = score
        self._columns = columns
        self._metric = metric

    def convert(self, batch: _Batch) -> tuple[list[Any], list[float]]:
        labels = self._labels(batch.labels)
        scores = self._scores(batch.scores)
        if labels is not None and scores is not None:
            return labels, scores
        # some cell was refused: go row by row so the first bad row is the one named
        labels, scores = [], []
        columns = self._columns
        for index, (label_cell, score_cell) in enumerate(zip(batch.labels, batch.scores, strict=True)):
            column = columns.label
            try:
                label = self._parse_label(label_cell)
                column = columns.score or ""
                score = self._parse_score(score_cell)
            except _CellError as exc:
                row, line = batch.location(index)
                message = exc.template.format(
                    row=row,
                    line=line,
                    path=columns.path,
                    column=column,
                    value=_show_value(exc.value),
                    metric=self._metric,
                )
                raise InputError(message) from None
            labels.append(label)
            scores.append(score)
        return labels, scores


# --- statistics ---------------------------------------------------------------------------------


class _CompensatedSum:
    """Neumaier's compensated sum, for adding up the exactly rounded sums of successive batches."""

    def __init__(self) -> None:
        self.total = 0.0
        self.compensation = 0.0

    def add(self, value: float) -> None:
        total = self.total + value
        if abs(self.total) >= abs(value):
            self.compensation += (self.total - total) + value
        else:
            self.compensation += (value - total) + self.total
        self.total = total

    @property
    def value(self) -> float:
        return self.total + self.compensation


class _Confusion:
    """Counts of true/false positives/negatives; a score above 0.5 predicts the positive class."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.rows = self.actual = self.predicted = self.true_positives = 0

    def add(self, labels: list[int], scores: list[float]) -> None:
        above = _THRESHOLD.__lt__
        self.rows += len(labels)
        self.actual += sum(labels)
        self.predicted += sum(map(above, scores))
        self.true_positives += sum(compress(map(above, scores), labels))

    def value(self) -> float:
        # scikit-learn returns 0 where a ratio is 0/0 (zero_division="warn"); so do we, quietly
        tp, actual, predicted = self.true_positives, self.actual, self.predicted
        if self.metric == "accuracy":
            true_negatives = self.rows - actual - predicted + tp
            return (tp + true_negatives) / self.rows
        if self.metric == "precision":
            return tp / predicted if predicted else 0.0
        if self.metric == "recall":
            return tp / actual if actual else 0.0
        return 2 * tp / (actual + predicted) if actual + predicted else 0.0  # f1 = 2tp / (2tp + fp + fn)


class _LogLoss:
    def __init__(self) -> None:
        self.rows = 0
        self.total = _CompensatedSum()

    def add(self, labels: list[int], scores: list[float]) -> None:
        log, low, high = math.log, _EPS, 1.0 - _EPS
        # clip after taking 1 - p for negatives, in the order scikit-learn does
        losses = [-log(min(max(p if y else 1.0 - p, low), high)) for y, p in zip(labels, scores, strict=True)]
        self.rows += len(losses)
        self.total.add(math.fsum(losses))

    def value(self) -> float:
        return self.total.value / self.rows


class _Regression:
    """Sums of squared and absolute errors, and the labels' mean and spread for r2."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.rows = 0
        self.squared = _CompensatedSum()
        self.absolute = _CompensatedSum()
        self.label_mean = 0.0
        self.label_spread = 0.0  # sum of squared deviations from the mean
        self.label_low = math.inf
        self.label_high = -math.inf

    def add(self, labels: list[float], scores: list[float]) -> None:
        count = len(labels)
        if not count:
            return
        errors = [y - p for y, p in zip(labels, scores, strict=True)]
        if self.metric == "mae":
            self.absolute.add(math.fsum(map(abs, errors)))
        else:
            self.squared.add(math.fsum([e * e for e in errors]))
        if self.metric == "r2":
            self._add_spread(labels)
        self.rows += count

    def _add_spread(self, labels: list[float]) -> None:
        # two-pass mean and spread of the batch, merged with the running ones (Chan et al. 1979)
        count = len(labels)
        batch_mean = math.fsum(labels) / count
        batch_spread = math.fsum([(y - batch_mean) ** 2 for y in labels])
        total = self.rows + count
        delta = batch_mean - self.label_mean
        self.label_mean += delta * count / total
        self.label_spread += batch_spread + delta * delta * self.rows * count / total
        self.label_low = min(self.label_low, min(labels))
        self.label_high = max(self.label_high, max(labels))

    def value(self) -> float:
        if self.metric == "mae":
            return self.absolute.value / self.rows
        mse = self.squared.value / self.rows
        if self.metric == "mse":
            return mse
        if self.metric == "rmse":
            return math.sqrt(mse)
        residual = self.squared.value
        if self.label_low == self.label_high:  # constant labels: as scikit-learn's force_finite=True
            return 1.0 if residual == 0.0 else 0.0
        return 1.0 - residual / self.label_spread


class _RankSum:
    """AUROC as the Mann-Whitney U statistic over the scores of positives and of negatives."""

    def __init__(self) -> None:
        self.positives = self.negatives = 0
        self._counts: tuple[Counter[float], Counter[float]] | None = (Counter(), Counter())
        self._arrays = (array("d"), array("d"))

    @property
    def rows(self) -> int:
        return self.positives + self.negatives

    def add(self, labels: list[int], scores: list[float]) -> None:
        positive = sum(labels)
        self.positives += positive
        self.negatives += len(labels) - positive
        negative_scores = compress(scores, map(operator.not_, labels))
        positive_scores = compress(scores, labels)
        if self._counts is not None:
            negative_counts, positive_counts = self._counts
            negative_counts.update(negative_scores)
            positive_counts.update(positive_scores)
            if len(negative_counts) + len(positive_counts) > _DISTINCT_SCORES_LIMIT:
                # too many distinct scores for a dict to be small: keep 8 bytes a row from here on
                for counts, values in zip(self._counts, self._arrays, strict=True):
                    for score, count in counts.items():
                        values.extend(repeat(score, count))
                self._counts = None
        else:
            self._arrays[0].extend(negative_scores)
            self._arrays[1].extend(positive_scores)

    def absent_class(self) -> str | None:
        if not self.positives:
            return "positive"
        if not self.negatives:
            return "negative"
        return None

    def value(self) -> float:
        if self._counts is not None:
            twice_u = _twice_u_from_counts(*self._counts)
        else:
            twice_u = _twice_u_from_sorted(
                negatives=_sorted_stream(self._arrays[0]), positives=_sorted_stream(self._arrays[1])
            )
        return twice_u / (2 * self.positives * self.negatives)


def _twice_u_from_counts(negative_counts: Counter[float], positive_counts: Counter[float]) -> int:
    """2U: each (positive, negative) pair scores 2 if the positive is higher, 1 on a tie."""
    twice_u = 0
    below = 0  # negatives scored strictly below the current score
    for score in sorted(negative_counts.keys() | positive_counts.keys()):
        tied = negative_counts[score]
        twice_u += positive_counts[score] * (2 * below + tied)
        below += tied
    return twice_u


def _twice_u_from_sorted(*, negatives: Iterator[float], positives: Iterator[float]) -> int:
    """2U from both classes' scores in ascending order, walking them side by side."""
    twice_u = 0
    below = tied = 0
    current = None
    pending = next(negatives, math.inf)  # scores are finite, so infinity marks the end
    for score in positives:
        if score != current:
            below += tied
            tied = 0
            while pending < score:
                below += 1
                pending = next(negatives, math.inf)
            while pending == score:
                tied += 1
                pending = next(negatives, math.inf)
            current = score
        twice_u += 2 * below + tied
    return twice_u


def _sorted_stream(values: array) -> Iterator[float]:
    """``values`` in ascending order: sorted in place run by run, then merged without copying."""
    size, run = len(values), _SORT_RUN_LENGTH
    for start in range(0, size, run):
        values[start : start + run] = array("d", sorted(values[start : start + run]))
    view = memoryview(values)
    runs = [view[start : start + run] for start in range(0, size, run)]
    return iter(runs[0]) if len(runs) == 1 else heapq.merge(*runs)


# --- the metrics --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recipe:
    binary_labels: bool  # False: labels are real numbers
    probabilities: bool  # True: scores must lie in [0, 1]
    make: Callable[[], Any]


_RECIPES: dict[str, _Recipe] = {
    "auroc": _Recipe(True, False, _RankSum),
    "accuracy": _Recipe(True, True, lambda: _Confusion("accuracy")),
    "f1": _Recipe(True, True, lambda: _Confusion("f1")),
    "precision": _Recipe(True, True, lambda: _Confusion("precision")),
    "recall": _Recipe(True, True, lambda: _Confusion("recall")),
    "log_loss": _Recipe(True, True, _LogLoss),
    "mse": _Recipe(False, False, lambda: _Regression("mse")),
    "rmse": _Recipe(False, False, lambda: _Regression("rmse")),
    "mae": _Recipe(False, False, lambda: _Regression("mae")),
    "r2": _Recipe(False, False, lambda: _Regression("r2")),
}
COMPUTABLE_METRICS: tuple[str, ...] = tuple(_RECIPES)


def compute_metric_from_predictions(
    path: str | os.PathLike[str],
    metric: str,
    *,
    label_column: str = "label",
    score_column: str | None = None,
    positive_label: Any = None,
) -> PredictionsResult:
    """Compute ``metric`` from a CSV or JSON Lines file of labels and scores, reading it once.

    ``metric`` is a name or alias from the catalogue (``auroc``, ``roc_auc``, ``rmse``...).
    ``score_column`` defaults to ``score``, or ``prediction`` when there is no ``score`` column.
    ``positive_label``, for the binary metrics, makes rows whose label equals it positive and all
    others negative; without it labels must be 0/1 or true/false (the regression metrics ignore it).
    Every problem with the file is an ``InputError`` naming the row, line and column where it is.
    """
    name = resolve_metric(metric).name
    recipe = _RECIPES.get(name)
    if recipe is None:
        raise InputError(NOT_COMPUTABLE.format(metric=name, supported=", ".join(COMPUTABLE_METRICS)))
    path = Path(path)
    columns = _Columns(path, label_column, score_column)
    if not recipe.binary_labels:
        label: tuple[Callable[[list[Any]], list[Any] | None], Callable[[Any], Any]] = (_reals, _parse_real)
    elif positive_label is not None:
        parse_positive = _positive_label_parser(positive_label)
        label = (_all_or_none(parse_positive), parse_positive)
    else:
        label = (_binary_labels, _parse_binary_label)
    score = (_probabilities, _parse_probability) if recipe.probabilities else (_reals, _parse_real)
    cells = _Cells(label=label, score=score, columns=columns, metric=name)
    statistic = recipe.make()

    hashing = _open(path)
    buffered = io.BufferedReader(hashing, buffer_size=_READ_BUFFER_BYTES)
    rows: _CsvRows | _JsonLinesRows | None = None
    with io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="") as text:
        try:
            rows = _row_reader(text, path, columns)
            for batch in rows.batches():
                statistic.add(*cells.convert(batch))
            while hashing.read(_READ_BUFFER_BYTES):  # the reader stopped at EOF; this only makes sure
                pass
        except _EmptyFile as exc:
            raise InputError(EMPTY_FILE.format(path=path, what=exc.what, metric=name)) from None
        except UnicodeDecodeError as exc:
            byte = exc.object[exc.start] if exc.start < len(exc.object) else 0
            raise InputError(NOT_UTF8.format(path=path, byte=byte, reason=exc.reason)) from None
        except csv.Error as exc:
            line = rows.line if rows else 0
            raise InputError(BAD_CSV.format(line=line, path=path, reason=exc)) from None
        except OSError as exc:
            raise InputError(FILE_UNREADABLE.format(path=path, reason=exc.strerror or exc)) from exc

    if statistic.rows == 0:
        raise InputError(NO_ROWS.format(path=path, metric=name))
    if isinstance(statistic, _RankSum) and (absent := statistic.absent_class()):
        present = "negative" if absent == "positive" else "positive"
        with_label = positive_label is not None and absent == "positive"
        raise InputError(
            ONE_CLASS.format(
                rows=statistic.rows,
                path=path,
                present=present,
                absent=absent,
                label_note=f" with label '{positive_label}'" if with_label else "",
            )
        )
    if name == "r2" and statistic.rows < 2:
        raise InputError(TOO_FEW_ROWS_FOR_R2.format(path=path))
    return PredictionsResult(
        value=statistic.value(),
        rows=statistic.rows,
        sha256=hashing.digest.hexdigest(),
        label_column=columns.label,
        score_column=columns.score or "",
        metric=name,
        file_format=rows.file_format if rows else "",
    )


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


def _row_reader(text: io.TextIOWrapper, path: Path, columns: _Columns) -> _CsvRows | _JsonLinesRows:
    """A row reader for the file's format: by extension, else by its first non-blank line."""
    # lines of at most MAX_LINE_CHARS + 1 characters, so memory is bounded even without newlines
    lines: Iterator[str] = iter(partial(text.readline, MAX_LINE_CHARS + 1), "")
    file_format = _SUFFIX_FORMATS.get(path.suffix.lower())
    if file_format is None:
        head: list[str] = []
        for line in lines:
            head.append(line)
            if line.strip() or len(head) > _SNIFF_LINES:
                break
        first = head[-1].lstrip() if head else ""
        file_format = "jsonl" if first.startswith(("{", "[")) else "csv"
        lines = chain(head, lines)
    if file_format == "jsonl":
        return _JsonLinesRows(lines, columns)
    return _CsvRows(lines, columns, delimiter="\t" if file_format == "tsv" else ",")
