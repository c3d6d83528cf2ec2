"""Compute a metric from a file of predictions, streaming it once.

One way to get the measured value for the gate: the user hands over the model's predictions on the
evaluation set, one row per example, and the tool computes the metric itself. ``file`` reads it
once, hashing the same bytes; ``readers`` splits it into batches of rows; ``cells`` turns their cells
into labels and scores; the recipe (``recipes``) names the statistic (``statistics``) they feed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hokusai_action.domain.metrics import resolve_metric
from hokusai_action.errors import InputError
from hokusai_action.predictions.cells import Cells
from hokusai_action.predictions.file import read_predictions
from hokusai_action.predictions.readers import Columns
from hokusai_action.predictions.recipes import recipe_for
from hokusai_action.predictions.statistics import RankSum, Statistic

NO_ROWS = (
    "Predictions file {path} has a header but no data rows, so {metric} cannot be computed. "
    "Write one row per example under the header."
)
ONE_CLASS = (
    "All {rows} rows of {path} are {present} (no {absent} row{label_note}), so auroc is undefined: "
    "it ranks positives against negatives and needs both. Evaluate on data that holds both classes."
)
TOO_FEW_ROWS_FOR_R2 = (
    "Predictions file {path} has 1 data row, and r2 is undefined on fewer than two. Evaluate on more examples."
)


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
    recipe = recipe_for(name)
    path = Path(path)
    columns = Columns(path, label_column, score_column)
    cells = Cells(
        binary_labels=recipe.binary_labels,
        probabilities=recipe.probabilities,
        positive_label=positive_label,
        columns=columns,
        metric=name,
    )
    statistic = recipe.make()
    read = read_predictions(path, columns, metric=name, each_batch=lambda batch: statistic.add(*cells.convert(batch)))
    _check_defined(statistic, metric=name, path=path, positive_label=positive_label)
    return PredictionsResult(
        value=statistic.value(),
        rows=statistic.rows,
        sha256=read.sha256,
        label_column=columns.label,
        score_column=columns.score,
        metric=name,
        file_format=read.file_format,
    )


def _check_defined(statistic: Statistic, *, metric: str, path: Path, positive_label: Any) -> None:
    """Raise ``InputError`` when the rows read leave ``metric`` undefined (none, one class, one row)."""
    if statistic.rows == 0:
        raise InputError(NO_ROWS.format(path=path, metric=metric))
    if isinstance(statistic, RankSum) and (absent := statistic.absent_class()):
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
    if metric == "r2" and statistic.rows < 2:
        raise InputError(TOO_FEW_ROWS_FOR_R2.format(path=path))
