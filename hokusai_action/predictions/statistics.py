"""What is kept while reading, per metric (the "sufficient statistics"), and the metric computed from it.

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

import heapq
import math
import operator
from array import array
from collections import Counter
from collections.abc import Iterator
from itertools import compress, repeat
from typing import Any, Protocol

# module level so tests can shrink them to exercise every path on small files
_DISTINCT_SCORES_LIMIT = 1 << 14  # auroc keeps score -> count dicts up to this many distinct scores
_SORT_RUN_LENGTH = 1 << 16  # auroc sorts its score arrays in runs of this many, then merges lazily

_THRESHOLD = 0.5
_EPS = 2.0**-52  # float64 machine epsilon, what numpy's finfo(float64).eps is


class Statistic(Protocol):
    """A metric's running statistic: fed batch by batch, read once at the end."""

    @property
    def rows(self) -> int: ...

    def add(self, labels: list[Any], scores: list[float]) -> None: ...

    def value(self) -> float: ...


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


class Confusion:
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


class LogLoss:
    """The mean of per-row log losses, summed with compensation."""

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


class Regression:
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


class RankSum:
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
