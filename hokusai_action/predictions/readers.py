"""The rows of a predictions file, a batch at a time, and which columns hold the labels and scores.

Formats, chosen by extension (``.csv``, ``.tsv``, ``.jsonl``, ``.ndjson``) and otherwise by the first
non-blank line (``{`` or ``[`` means JSON Lines, anything else CSV):

- CSV/TSV: a header row, then one row per example, every row with as many fields as the header.
- JSON Lines: one JSON object per line, e.g. ``{"label": 1, "score": 0.83}``; other keys are ignored.

A reader hands over the raw label and score cells (text from CSV, JSON values from JSON Lines) of up
to ``_BATCH_ROWS`` rows at a time, with where each row is; ``cells`` turns them into numbers.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import chain, islice, tee
from operator import itemgetter
from pathlib import Path
from typing import Any

from hokusai_action.errors import InputError

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
LINE_TOO_LONG = (
    "Line {line} of {path} is longer than {limit} characters; a predictions row holds a few short fields. "
    "Check that the file is CSV or JSON Lines with one example per line."
)

# module level so tests can shrink them to exercise every path on small files
MAX_LINE_CHARS = 1 << 20  # a predictions row is a few short fields; a longer line means a wrong file
_BATCH_ROWS = 256  # rows per batch: small enough to stay in cache and die young (fewer GC scans)

_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SNIFF_LINES = 1000  # blank lines skipped looking for the first line that shows the format
_SHOWN_COLUMNS = 20


def _quote_all(names: Iterable[str]) -> str:
    shown = [f"'{name}'" for name in names]
    if not shown:
        return "no columns"
    if len(shown) > _SHOWN_COLUMNS:
        return ", ".join(shown[:_SHOWN_COLUMNS]) + f" and {len(shown) - _SHOWN_COLUMNS} more"
    return ", ".join(shown)


def _too_long(lengths: list[int]) -> int | None:
    """Index of the first length over MAX_LINE_CHARS, if any."""
    if lengths and max(lengths) > MAX_LINE_CHARS:
        return next(index for index, length in enumerate(lengths) if length > MAX_LINE_CHARS)
    return None


class Columns:
    """Which columns hold the labels and scores; the score column defaults to score, then prediction."""

    def __init__(self, path: Path, label_column: str, score_column: str | None) -> None:
        self.path = path
        self.label = label_column
        self._score_asked = score_column
        self.score = score_column or ""  # known once the header (or the first object) is resolved

    def resolve(self, names: list[str], *, where: str) -> None:
        if self._score_asked is None:
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


class EmptyFile(Exception):
    """Raised by a row reader that found nothing to read; the caller words the message."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class Batch:
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


class CsvRows:
    """Batches of a CSV file's data rows.

    Rows are taken from the csv reader a batch at a time and split into label and score cells with
    C-level ``map``; only a batch holding a blank line or a row of the wrong length is walked row by
    row, to skip the blanks and name the bad row.
    """

    def __init__(self, lines: Iterator[str], columns: Columns, *, delimiter: str) -> None:
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

    def _header(self) -> list[str]:
        """The header's column names, checked to hold the label and score columns once each."""
        header = next((fields for fields in self._reader if fields), None)
        self._check_line_lengths()
        if header is None:
            raise EmptyFile("header row")
        names = [name.strip() for name in header]
        columns = self._columns
        columns.resolve(names, where="header")
        for role, name in (("labels", columns.label), ("scores", columns.score)):
            if (count := names.count(name)) > 1:
                raise InputError(DUPLICATE_COLUMN.format(path=self.path, column=name, count=count, role=role))
        return names

    def batches(self) -> Iterator[Batch]:
        names = self._header()
        width = len(names)
        label_index, score_index = names.index(self._columns.label), names.index(self._columns.score)
        label_of, score_of = itemgetter(label_index), itemgetter(score_index)
        while records := list(islice(self._reader, _BATCH_ROWS)):
            before = self._lines_checked
            self._check_line_lengths()
            if set(map(len, records)) == {width}:  # the usual case: no blank line, no short row
                one_line_each = self._lines_checked - before == len(records)
                batch = Batch(
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
    ) -> Batch:
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
        return Batch(labels, scores, first_row=self.rows + 1, lines=lines)


class JsonLinesRows:
    """Batches of a JSON Lines file's objects.

    A batch of lines is decoded with C-level ``map(json.loads, ...)``; a batch holding a blank line,
    a line that is not an object or an object without the keys is walked line by line instead.
    """

    file_format = "jsonl"

    def __init__(self, lines: Iterator[str], columns: Columns) -> None:
        self._lines = lines
        self._columns = columns
        self.path = columns.path
        self.rows = 0
        self.line = 0  # lines read so far

    def batches(self) -> Iterator[Batch]:
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
            raise EmptyFile("JSON objects")

    def _decoded_batch(
        self, chunk: list[str], before: int, getters: tuple[itemgetter[Any], itemgetter[Any]]
    ) -> Batch | None:
        try:
            records = list(map(json.loads, chunk))
            if set(map(type, records)) != {dict}:
                return None
            labels, scores = list(map(getters[0], records)), list(map(getters[1], records))
        except (ValueError, KeyError):  # a blank or broken line, or a missing key: find it line by line
            return None
        return Batch(labels, scores, first_row=self.rows + 1, lines=before)

    def _checked_batch(self, chunk: list[str], before: int) -> Batch:
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
        return Batch(labels, scores, first_row=self.rows + 1, lines=lines)


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


def row_reader(text: io.TextIOWrapper, path: Path, columns: Columns) -> CsvRows | JsonLinesRows:
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
        return JsonLinesRows(lines, columns)
    return CsvRows(lines, columns, delimiter="\t" if file_format == "tsv" else ",")
