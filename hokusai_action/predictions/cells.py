"""A batch's raw cells turned into labels and scores, or the row, line and column of the first bad one.

Each kind of cell has a fast converter for a whole batch (C-level map, returning None when any cell
is unusable) and a per-cell parser that says what is wrong; the slow path runs only on a batch the
fast one refused, so the two must agree on every cell they both accept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple, cast

from hokusai_action.errors import InputError
from hokusai_action.predictions.readers import Batch, Columns

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

_SHOWN_VALUE_CHARS = 40


class _CellError(Exception):
    """A cell that cannot be used; the converter adds the row, line and column and raises InputError."""

    def __init__(self, template: str, value: Any) -> None:
        super().__init__(template)
        self.template = template
        self.value = value


class _Kind(NamedTuple):
    """A kind of cell: the fast converter of a whole batch, and the parser that names a bad cell."""

    batch: Callable[[list[Any]], list[Any] | None]
    cell: Callable[[Any], Any]


def _show_value(raw: Any) -> str:
    text = raw if isinstance(raw, str) else json.dumps(raw)
    if len(text) > _SHOWN_VALUE_CHARS:
        text = text[:_SHOWN_VALUE_CHARS] + "..."
    return f"'{text}'"


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
    return None if None in values else cast(list[int], values)


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


_REALS = _Kind(_reals, _parse_real)
_PROBABILITIES = _Kind(_probabilities, _parse_probability)
_BINARY = _Kind(_binary_labels, _parse_binary_label)


def _label_kind(*, binary_labels: bool, positive_label: Any) -> _Kind:
    """Real numbers; or 0/1 labels, either as written or 1 where a cell equals ``positive_label``."""
    if not binary_labels:
        return _REALS
    if positive_label is not None:
        parse_positive = _positive_label_parser(positive_label)
        return _Kind(_all_or_none(parse_positive), parse_positive)
    return _BINARY


class Cells:
    """Turns a batch's raw cells into labels and scores, naming row, line and column of a bad one.

    ``binary_labels`` asks for 0/1 labels (true/false, or 1 where the label equals ``positive_label``),
    otherwise labels are real numbers; ``probabilities`` asks for scores in [0, 1].
    """

    def __init__(
        self, *, binary_labels: bool, probabilities: bool, positive_label: Any, columns: Columns, metric: str
    ) -> None:
        self._label = _label_kind(binary_labels=binary_labels, positive_label=positive_label)
        self._score = _PROBABILITIES if probabilities else _REALS
        self._columns = columns
        self._metric = metric

    def convert(self, batch: Batch) -> tuple[list[Any], list[float]]:
        labels = self._label.batch(batch.labels)
        scores = self._score.batch(batch.scores)
        if labels is not None and scores is not None:
            return labels, scores
        # some cell was refused: go row by row so the first bad row is the one named
        labels, scores = [], []
        columns = self._columns
        for index, (label_cell, score_cell) in enumerate(zip(batch.labels, batch.scores, strict=True)):
            column = columns.label
            try:
                label = self._label.cell(label_cell)
                column = columns.score
                score = self._score.cell(score_cell)
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
