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
from itertools import chain, compress, repeat
from pathlib import Path
from typing import Any

from hokusai_action.errors import InputError
from hokusai_action.metrics import resolve_metric

# --- error messages: what happened, why, what to do ---------------------------------------------

NOT_COMPUTABLE = (
    "Metric '{metric}' cannot be computed from a predictions file: only {supported} can. "
    "Gate on one of those, or pass the measured value itself instead of a predictions file."
)
FILE_MISSING = (
    "Predictions file {path} does not exist. "
    "Check the path (a relative path starts from the working directory, {cwd})."
)
FILE_UNREADABLE = (
    "Cannot read predictions file {path}: {reason}. Point at a regular file that this user may read."
)
NOT_UTF8 = (
    "Predictions file {path} is not UTF-8 text (undecodable bytes after data row {row}). "
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
    "rename the columns in the file or name the right ones with the label/score column settings."
)
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
    "Line {line} of {path} is not valid CSV ({reason}). "
    "Check the quoting on that line, or that the file is CSV at all."
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
    "Predictions file {path} has 1 data row, and r2 is undefined on fewer than two. "
    "Evaluate on more examples."
)

# --- tunables (module level so tests can shrink them to exercise every path on small files) --------

MAX_LINE_CHARS = 1 << 20  # a predictions row is a few short fields; a longer line means a wrong file
_READ_BUFFER_BYTES = 1 << 20
_BATCH_ROWS = 4096  # rows parsed before a batch is folded into the statistics
_DISTINCT_SCORES_LIMIT = 1 << 14  # auroc keeps score -> count dicts up to this many distinct scores
_SORT_RUN_LENGTH = 1 << 16  # auroc sorts its score arrays in runs of this many, then merges lazily

_THRESHOLD = 0.5
_EPS = 2.0**-52  # float64 machine epsilon, what numpy's finfo(float64).eps is
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
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


def _bounded_lines(text: io.TextIOBase, path: Path) -> Iterator[str]:
    """The lines of ``text``, refusing one too long to be a row (a file without newlines, say)."""
    readline = text.readline
    limit = MAX_LINE_CHARS
    number = 0
    while line := readline(limit + 1):
        number += 1
        if len(line) > limit:
            raise InputError(LINE_TOO_LONG.format(line=number, path=path, limit=limit))
        yield line


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
            raise InputError(
                MISSING_COLUMNS.format(
                    path=self.path,
                    missing=" or ".join(f"'{name}'" for name in missing),
                    where=where,
                    found=_quote_all(names),
                    label=f"'{self.label}'",
                    score=score_text,
                )
            )
        if self.label == self.score:
            raise InputError(SAME_COLUMN.format(column=self.label))


class _CsvRows:
    """(label, score) cells of each data row of a CSV file; ``row`` and ``line`` say where it is."""

    def __init__(self, lines: Iterable[str], columns: _Columns, *, delimiter: str) -> None:
        self._reader = csv.reader(lines, delimiter=delimiter, strict=True)
        self._columns = columns
        self.path = columns.path
        self.row = 0
        self.file_format = "tsv" if delimiter == "\t" else "csv"

    @property
    def line(self) -> int:
        return self._reader.line_num

    def __iter__(self) -> Iterator[tuple[str, str]]:
        reader = self._reader
        header = next((fields for fields in reader if fields), None)
        if header is None:
            raise _EmptyFile("header row")
        names = [name.strip() for name in header]
        columns = self._columns
        columns.resolve(names, where="header")
        for role, name in (("labels", columns.label), ("scores", columns.score)):
            if names.count(name) > 1:
                raise InputError(
                    DUPLICATE_COLUMN.format(
                        path=columns.path, column=name, count=names.count(name), role=role
                    )
                )
        label_index = names.index(columns.label)
        score_index = names.index(columns.score)
        width = len(names)
        for fields in reader:
            if not fields:  # a blank line
                continue
            self.row += 1
            if len(fields) != width:
                raise InputError(
                    ROW_LENGTH.format(
                        row=self.row, line=self.line, path=columns.path, got=len(fields), expected=width
                    )
                )
            yield fields[label_index], fields[score_index]


class _JsonLinesRows:
    """(label, score) values of each object of a JSON Lines file; ``row`` and ``line`` say where."""

    file_format = "jsonl"

    def __init__(self, lines: Iterable[str], columns: _Columns) -> None:
        self._lines = lines
        self._columns = columns
        self.path = columns.path
        self.row = 0
        self.line = 0

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        columns = self._columns
        path = columns.path
        loads = json.loads
        missing = object()
        label = score = ""
        for text in self._lines:
            self.line += 1
            try:
                record = loads(text)
            except ValueError as exc:  # json.JSONDecodeError; a blank line is one too
                if not text.strip():
                    continue
                reason = f"invalid JSON: {exc.msg} at column {exc.colno}"  # type: ignore[attr-defined]
                raise InputError(NOT_AN_OBJECT.format(line=self.line, path=path, reason=reason)) from None
            if record.__class__ is not dict:
                reason = f"it is {_json_kind(record)}"
                raise InputError(NOT_AN_OBJECT.format(line=self.line, path=path, reason=reason))
            self.row += 1
            if self.row == 1:
                columns.resolve(list(record), where="first object")
                label, score = columns.label, columns.score
            label_value = record.get(label, missing)
            score_value = record.get(score, missing)
            if label_value is missing or score_value is missing:
                absent = label if label_value is missing else score
                raise InputError(
                    ROW_MISSING_KEY.format(
                        row=self.row, line=self.line, path=path, column=absent, found=_quote_all(record)
                    )
                )
            yield label_value, score_value
        if self.row == 0:
            raise _EmptyFile("JSON objects")


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


class _EmptyFile(Exception):
    """Raised by a row reader that found nothing to read; the caller words the message."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


# --- parsing one cell ---------------------------------------------------------------------------


class _CellError(Exception):
    """A cell that cannot be used; the read loop adds the row, line and column and raises InputError."""

    def __init__(self, template: str, value: Any) -> None:
        super().__init__(template)
        self.template = template
        self.value = value


def _parse_real(raw: Any) -> float:
    kind = raw.__class__
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
    else:  # bool, list, dict from JSON
        raise _CellError(NOT_A_NUMBER, raw)
    if not math.isfinite(value):
        raise _CellError(NOT_FINITE, raw)
    return value


def _parse_probability(raw: Any) -> float:
    value = _parse_real(raw)
    if not 0.0 <= value <= 1.0:
        raise _CellError(NOT_A_PROBABILITY, raw)
    return value


# keys 0/1/True/False also match 0.0/1.0 from JSON: equal numbers share one dict key
_BINARY_LABELS: dict[Any, int] = {
    "0": 0,
    "1": 1,
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
    except TypeError:  # an unhashable JSON list or object
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
    label_kind: str  # "binary" or "real"
    parse_score: Callable[[Any], float]
    make: Callable[[], Any]


_RECIPES: dict[str, _Recipe] = {
    "auroc": _Recipe("binary", _parse_real, _RankSum),
    "accuracy": _Recipe("binary", _parse_probability, lambda: _Confusion("accuracy")),
    "f1": _Recipe("binary", _parse_probability, lambda: _Confusion("f1")),
    "precision": _Recipe("binary", _parse_probability, lambda: _Confusion("precision")),
    "recall": _Recipe("binary", _parse_probability, lambda: _Confusion("recall")),
    "log_loss": _Recipe("binary", _parse_probability, _LogLoss),
    "mse": _Recipe("real", _parse_real, lambda: _Regression("mse")),
    "rmse": _Recipe("real", _parse_real, lambda: _Regression("rmse")),
    "mae": _Recipe("real", _parse_real, lambda: _Regression("mae")),
    "r2": _Recipe("real", _parse_real, lambda: _Regression("r2")),
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
    others negative; without it labels must be 0/1 or true/false. Every problem with the file is an
    ``InputError`` naming the row, line and column.
    """
    name = resolve_metric(metric).name
    recipe = _RECIPES.get(name)
    if recipe is None:
        supported = ", ".join(COMPUTABLE_METRICS)
        raise InputError(NOT_COMPUTABLE.format(metric=name, supported=supported))
    if recipe.label_kind == "real":
        parse_label: Callable[[Any], float] = _parse_real
    elif positive_label is not None:
        parse_label = _positive_label_parser(positive_label)
    else:
        parse_label = _parse_binary_label
    parse_score = recipe.parse_score
    statistic = recipe.make()
    path = Path(path)
    columns = _Columns(path, label_column, score_column)

    hashing = _open(path)
    text = io.TextIOWrapper(
        io.BufferedReader(hashing, buffer_size=_READ_BUFFER_BYTES), encoding="utf-8-sig", newline=""
    )
    rows: _CsvRows | _JsonLinesRows | None = None
    with text:
        try:
            rows = _row_reader(text, path, columns)
            labels: list[Any] = []
            scores: list[float] = []
            for label_raw, score_raw in rows:
                try:
                    labels.append(parse_label(label_raw))
                except _CellError as exc:
                    raise _cell_error(exc, rows, column=columns.label, metric=name) from None
                try:
                    scores.append(parse_score(score_raw))
                except _CellError as exc:
                    del labels[-1]
                    raise _cell_error(exc, rows, column=columns.score, metric=name) from None
                if len(labels) == _BATCH_ROWS:
                    statistic.add(labels, scores)
                    labels, scores = [], []
            statistic.add(labels, scores)
            while hashing.read(_READ_BUFFER_BYTES):  # the reader stops at EOF; this only makes sure
                pass
        except _EmptyFile as exc:
            raise InputError(EMPTY_FILE.format(path=path, what=exc.what, metric=name)) from None
        except UnicodeDecodeError:
            raise InputError(NOT_UTF8.format(path=path, row=rows.row if rows else 0)) from None
        except csv.Error as exc:
            line = rows.line if rows else 0
            raise InputError(BAD_CSV.format(line=line, path=path, reason=exc)) from None
        except OSError as exc:
            raise InputError(FILE_UNREADABLE.format(path=path, reason=exc.strerror or exc)) from exc

    assert rows is not None  # set before the loop, which is the only way here
    if statistic.rows == 0:
        raise InputError(NO_ROWS.format(path=path, metric=name))
    if isinstance(statistic, _RankSum) and (absent := statistic.absent_class()):
        present = "negative" if absent == "positive" else "positive"
        note = (
            f" with label '{positive_label}'" if positive_label is not None and absent == "positive" else ""
        )
        raise InputError(
            ONE_CLASS.format(rows=statistic.rows, path=path, present=present, absent=absent, label_note=note)
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
        file_format=rows.file_format,
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
    lines: Iterator[str] = _bounded_lines(text, path)
    file_format = _SUFFIX_FORMATS.get(path.suffix.lower())
    if file_format is None:
        head: list[str] = []
        for line in lines:
            head.append(line)
            if line.strip():
                break
        first = head[-1].lstrip() if head else ""
        file_format = "jsonl" if first.startswith(("{", "[")) else "csv"
        lines = chain(head, lines)
    if file_format == "jsonl":
        return _JsonLinesRows(lines, columns)
    return _CsvRows(lines, columns, delimiter="\t" if file_format == "tsv" else ",")


def _cell_error(exc: _CellError, rows: _CsvRows | _JsonLinesRows, *, column: str, metric: str) -> InputError:
    return InputError(
        exc.template.format(
            row=rows.row,
            line=rows.line,
            path=rows.path,
            column=column,
            value=_show_value(exc.value),
            metric=metric,
        )
    )
