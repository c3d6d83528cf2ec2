"""The metrics a predictions file can give: per metric, what its labels and scores must be and the
statistic that computes it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hokusai_action.errors import InputError
from hokusai_action.predictions.statistics import Confusion, LogLoss, RankSum, Regression, Statistic

NOT_COMPUTABLE = (
    "Metric '{metric}' cannot be computed from a predictions file: only {supported} can. "
    "Gate on one of those, or pass the measured value itself instead of a predictions file."
)


@dataclass(frozen=True)
class Recipe:
    """What one metric needs of a file's cells, and the statistic that computes it."""

    binary_labels: bool  # False: labels are real numbers
    probabilities: bool  # True: scores must lie in [0, 1]
    make: Callable[[], Statistic]


_RECIPES: dict[str, Recipe] = {
    "auroc": Recipe(True, False, RankSum),
    "accuracy": Recipe(True, True, lambda: Confusion("accuracy")),
    "f1": Recipe(True, True, lambda: Confusion("f1")),
    "precision": Recipe(True, True, lambda: Confusion("precision")),
    "recall": Recipe(True, True, lambda: Confusion("recall")),
    "log_loss": Recipe(True, True, LogLoss),
    "mse": Recipe(False, False, lambda: Regression("mse")),
    "rmse": Recipe(False, False, lambda: Regression("rmse")),
    "mae": Recipe(False, False, lambda: Regression("mae")),
    "r2": Recipe(False, False, lambda: Regression("r2")),
}
COMPUTABLE_METRICS: tuple[str, ...] = tuple(_RECIPES)


def recipe_for(metric: str) -> Recipe:
    """The recipe of ``metric`` (a canonical name); ``InputError`` for a metric a file cannot give."""
    recipe = _RECIPES.get(metric)
    if recipe is None:
        raise InputError(NOT_COMPUTABLE.format(metric=metric, supported=", ".join(COMPUTABLE_METRICS)))
    return recipe
