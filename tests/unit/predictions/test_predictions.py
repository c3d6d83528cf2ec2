"""Metrics computed from a predictions file agree with scikit-learn and fail with clear messages.

scikit-learn is the oracle for every metric (to 1e-9, CSV and JSON Lines, several seeds, ties in the
scores); every error a user can meet is checked by its full message; and a ~30 MB file shows that
memory does not grow with the file (``-m slow``; run with ``-s`` to see the numbers).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st

from hokusai_action.domain.metrics import UNKNOWN_METRIC, supported_names
from hokusai_action.errors import EXIT_BAD_INPUT, InputError
from hokusai_action.predictions import cells, file, readers, recipes, statistics
from hokusai_action.predictions import compute as predictions
from hokusai_action.predictions.compute import PredictionsResult, compute_metric_from_predictions

pytestmark = pytest.mark.unit

CLASSIFICATION = ("auroc", "accuracy", "f1", "precision", "recall", "log_loss")
REGRESSION = ("mse", "rmse", "mae", "r2")

# the oracle; zero_division=0.0 is scikit-learn's default value without its warning
SKLEARN: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auroc": skm.roc_auc_score,
    "accuracy": lambda y, s: skm.accuracy_score(y, s > 0.5),
    "f1": lambda y, s: skm.f1_score(y, s > 0.5, zero_division=0.0),
    "precision": lambda y, s: skm.precision_score(y, s > 0.5, zero_division=0.0),
    "recall": lambda y, s: skm.recall_score(y, s > 0.5, zero_division=0.0),
    "log_loss": lambda y, s: skm.log_loss(y, s, labels=[0, 1]),
    "mse": skm.mean_squared_error,
    "rmse": skm.root_mean_squared_error,
    "mae": skm.mean_absolute_error,
    "r2": skm.r2_score,
}


def write_predictions(
    path: Path,
    labels: Sequence[Any],
    scores: Sequence[Any],
    *,
    label_column: str = "label",
    score_column: str = "score",
) -> Path:
    """CSV or JSON Lines by the path's extension; floats written with repr, so they read back exactly."""
    labels = [x.item() if isinstance(x, np.generic) else x for x in labels]
    scores = [x.item() if isinstance(x, np.generic) else x for x in scores]
    if path.suffix in (".jsonl", ".ndjson"):
        lines = [json.dumps({label_column: y, score_column: s}) for y, s in zip(labels, scores, strict=True)]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    else:
        rows = [f"{label_column},{score_column}"]
        rows += [f"{_cell(y)},{_cell(s)}" for y, s in zip(labels, scores, strict=True)]
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _cell(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[..., Path]:
    """make_file(name, text_or_bytes) -> a file in a fresh temporary directory."""

    def make(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return path

    return make


def classification_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels and probabilities with ties, exact 0, 0.5 and 1, and several batches' worth of rows."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(300, 3000))
    labels = rng.integers(0, 2, size)
    scores = rng.random(size)
    decimals = (1, 2, 3, None, 2)[seed % 5]  # coarse rounding makes many ties
    if decimals is not None:
        scores = np.round(scores, decimals)
    special = rng.choice(size, size=size // 20, replace=False)
    scores[special] = rng.choice([0.0, 0.5, 1.0], size=special.size)
    return labels, scores


def regression_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels far from zero relative to their spread, which punishes a naive sum of squares."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(300, 3000))
    labels = rng.normal(loc=1e4 * seed, scale=3.0, size=size)
    return labels, labels + rng.normal(scale=1.5, size=size)


def compute(path: Path, metric: str, **options: Any) -> PredictionsResult:
    return compute_metric_from_predictions(path, metric, **options)


def error_of(path: Path | str, metric: str, **options: Any) -> str:
    with pytest.raises(InputError) as caught:
        compute_metric_from_predictions(path, metric, **options)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return caught.value.message


def assert_agrees(ours: float, theirs: float) -> None:
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-9)


# --- agreement with scikit-learn ----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("metric", CLASSIFICATION)
def test_classification_metric_matches_sklearn(tmp_path: Path, metric: str, seed: int, suffix: str) -> None:
    labels, scores = classification_data(seed)
    path = write_predictions(tmp_path / f"predictions{suffix}", labels, scores)

    result = compute(path, metric)

    assert_agrees(result.value, SKLEARN[metric](labels, scores))
    assert result.rows == len(labels)
    assert result.metric == metric


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("metric", REGRESSION)
def test_regression_metric_matches_sklearn(tmp_path: Path, metric: str, seed: int, suffix: str) -> None:
    labels, scores = regression_data(seed)
    path = write_predictions(tmp_path / f"predictions{suffix}", labels, scores)

    assert_agrees(compute(path, metric).value, SKLEARN[metric](labels, scores))


@pytest.mark.parametrize("seed", range(4))
def test_auroc_on_arrays_with_many_sorted_runs_matches_sklearn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    # force the array path and a merge of many runs, which a large file would take
    monkeypatch.setattr(statistics, "_DISTINCT_SCORES_LIMIT", 5)
    monkeypatch.setattr(statistics, "_SORT_RUN_LENGTH", 7)
    labels, scores = classification_data(seed)
    path = write_predictions(tmp_path / "predictions.csv", labels, scores)

    assert_agrees(compute(path, "auroc").value, skm.roc_auc_score(labels, scores))


def test_auroc_accepts_any_real_score_not_only_probabilities(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 500)
    margins = np.round(rng.normal(scale=40.0, size=500) + 10 * labels, 1)  # decision_function-like
    path = write_predictions(tmp_path / "margins.csv", labels, margins)

    assert_agrees(compute(path, "auroc").value, skm.roc_auc_score(labels, margins))


@pytest.mark.parametrize("metric", ["accuracy", "f1", "precision", "recall"])
def test_zero_one_predictions_are_used_as_they_are(tmp_path: Path, metric: str) -> None:
    rng = np.random.default_rng(3)
    labels, predicted = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    path = write_predictions(tmp_path / "classes.csv", labels, predicted, score_column="prediction")

    result = compute(path, metric)

    assert result.score_column == "prediction"
    assert_agrees(result.value, SKLEARN[metric](labels, predicted))


def test_a_score_of_exactly_one_half_predicts_the_negative_class(make_file: Callable[..., Path]) -> None:
    path = make_file("half.csv", "label,score\n1,0.5\n0,0.5\n1,0.51\n0,0.49\n")

    assert compute(path, "accuracy").value == 0.75  # only the first row is wrong
    assert compute(path, "recall").value == 0.5


def test_precision_with_no_predicted_positive_is_zero_as_in_sklearn(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.csv", [1, 0, 1], [0.1, 0.2, 0.3])

    assert compute(path, "precision").value == 0.0 == SKLEARN["precision"](np.array([1, 0, 1]), np.zeros(3))
    assert compute(path, "f1").value == 0.0


def test_log_loss_clips_certain_wrong_answers_like_sklearn(tmp_path: Path) -> None:
    labels, scores = [1, 0, 1, 0], [0.0, 1.0, 1.0, 0.0]
    path = write_predictions(tmp_path / "p.csv", labels, scores)

    value = compute(path, "log_loss").value

    assert_agrees(value, skm.log_loss(labels, scores, labels=[0, 1]))
    assert value == pytest.approx(-math.log(2.0**-52) / 2)


def test_log_loss_on_one_class_is_defined(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.csv", [1, 1, 1], [0.9, 0.6, 0.99])

    assert_agrees(compute(path, "log_loss").value, skm.log_loss([1, 1, 1], [0.9, 0.6, 0.99], labels=[0, 1]))


@pytest.mark.parametrize(("scores", "expected"), [([2.0, 2.0, 2.0], 1.0), ([2.0, 2.5, 2.0], 0.0)])
def test_r2_on_constant_labels_follows_sklearn(tmp_path: Path, scores: list[float], expected: float) -> None:
    path = write_predictions(tmp_path / "p.csv", [2.0, 2.0, 2.0], scores)

    assert compute(path, "r2").value == expected == skm.r2_score([2.0, 2.0, 2.0], scores)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_positive_label_makes_named_classes_binary(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(11)
    names = rng.choice(["spam", "ham", "eggs"], 600)
    scores = np.round(rng.random(600), 2)
    path = write_predictions(tmp_path / f"p{suffix}", names.tolist(), scores)

    result = compute(path, "auroc", positive_label="spam")

    assert_agrees(result.value, skm.roc_auc_score(names == "spam", scores))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_numeric_positive_label_matches_numbers_however_written(tmp_path: Path, suffix: str) -> None:
    labels, scores = [2, 1, 2.0, 1, 2], [0.9, 0.2, 0.4, 0.5, 0.7]
    path = write_predictions(tmp_path / f"p{suffix}", labels, scores)

    result = compute(path, "auroc", positive_label=2)

    assert_agrees(result.value, skm.roc_auc_score([1, 0, 1, 0, 1], scores))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bools.csv", "label,score\ntrue,0.9\nFalse,0.2\nTRUE,0.4\nfalse,0.5\n"),
        ("floats.csv", "label,score\n1.0,0.9\n0.0,0.2\n 1 ,0.4\n-0,0.5\n"),
        (
            "bools.jsonl",
            '{"label":true,"score":0.9}\n{"label":false,"score":0.2}\n'
            '{"label":1.0,"score":0.4}\n{"label":"0","score":0.5}\n',
        ),
    ],
)
def test_binary_labels_may_be_spelled_several_ways(make_file: Callable[..., Path], name: str, content: str) -> None:
    path = make_file(name, content)

    assert_agrees(compute(path, "auroc").value, skm.roc_auc_score([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.5]))


def test_metric_aliases_resolve_to_the_canonical_name(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.csv", [0, 1, 1], [0.1, 0.8, 0.3])

    assert compute_metric_from_predictions(str(path), "ROC_AUC").metric == "auroc"
    assert compute(path, "root_mean_squared_error").metric == "rmse"


# --- formats and columns ------------------------------------------------------------------------


def test_sha256_is_the_digest_of_the_file_bytes(tmp_path: Path) -> None:
    labels, scores = classification_data(0)
    for name in ("p.csv", "p.jsonl", "p.txt"):
        path = write_predictions(tmp_path / name, labels, scores)
        assert compute(path, "accuracy").sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_csv_with_bom_crlf_blank_lines_quotes_and_extra_columns(make_file: Callable[..., Path]) -> None:
    text = '\ufeffid,"score",label,note\r\n\r\na,0.9,1,"x, y"\r\nb,0.2,0,"two\r\nlines"\r\n\r\nc,0.4,1,z\r\n'
    path = make_file("p.csv", text)

    result = compute(path, "auroc")

    assert (result.value, result.rows, result.file_format) == (1.0, 3, "csv")
    assert result.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_tsv_is_read_with_tabs(make_file: Callable[..., Path]) -> None:
    path = make_file("p.tsv", "label\tscore\n1\t0.7\n0\t0.8\n")

    result = compute(path, "auroc")

    assert (result.value, result.file_format) == (0.0, "tsv")


@pytest.mark.parametrize(
    ("name", "content", "expected_format"),
    [
        ("p.txt", "label,score\n1,0.7\n0,0.2\n", "csv"),
        ("p.data", '\n  {"label": 1, "score": 0.7}\n{"label": 0, "score": 0.2}\n', "jsonl"),
        ("predictions", '{"label": 1, "score": 0.7}\n{"label": 0, "score": 0.2}', "jsonl"),
    ],
)
def test_unknown_extension_is_sniffed_from_the_first_line(
    make_file: Callable[..., Path], name: str, content: str, expected_format: str
) -> None:
    result = compute(make_file(name, content), "auroc")

    assert (result.value, result.rows, result.file_format) == (1.0, 2, expected_format)


def test_score_column_defaults_to_score_then_prediction(make_file: Callable[..., Path]) -> None:
    both = make_file("both.csv", "label,prediction,score\n1,0,0.9\n0,1,0.1\n")
    only_prediction = make_file("prediction.csv", "prediction,label\n0.9,1\n0.1,0\n")

    assert compute(both, "accuracy").score_column == "score"
    assert compute(both, "accuracy").value == 1.0
    assert compute(only_prediction, "accuracy").score_column == "prediction"


def test_named_columns_are_used(make_file: Callable[..., Path]) -> None:
    path = make_file("p.jsonl", '{"y": 3.0, "yhat": 2.5, "score": 99}\n{"y": 1.0, "yhat": 1.5, "score": 99}\n')

    result = compute(path, "mae", label_column="y", score_column="yhat")

    assert (result.value, result.label_column, result.score_column) == (0.5, "y", "yhat")


# --- properties ---------------------------------------------------------------------------------

_scores = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]) | st.floats(0.0, 1.0)
_labelled = st.lists(st.tuples(st.integers(0, 1), _scores), min_size=2, max_size=120).filter(
    lambda rows: len({label for label, _ in rows}) == 2
)


def _brute_force_auroc(rows: list[tuple[int, float]]) -> Fraction:
    positives = [score for label, score in rows if label]
    negatives = [score for label, score in rows if not label]
    wins = sum((p > n) * 2 + (p == n) for p in positives for n in negatives)
    return Fraction(wins, 2 * len(positives) * len(negatives))


@settings(max_examples=60, deadline=None)
@given(rows=_labelled, data=st.data())
def test_auroc_is_the_pairwise_definition_and_ignores_row_order(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[int, float]], data: st.DataObject
) -> None:
    directory = tmp_path_factory.mktemp("auroc")
    shuffled = data.draw(st.permutations(rows))
    values = []
    for name, ordering in (("a.csv", rows), ("b.jsonl", shuffled)):
        path = write_predictions(directory / name, *zip(*ordering, strict=True))
        values.append(compute(path, "auroc").value)

    assert values[0] == values[1] == float(_brute_force_auroc(rows))


@settings(max_examples=30, deadline=None)
@given(rows=_labelled)
def test_auroc_is_the_same_from_counts_and_from_sorted_arrays(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[int, float]]
) -> None:
    path = write_predictions(tmp_path_factory.mktemp("paths") / "p.csv", *zip(*rows, strict=True))
    from_counts = compute(path, "auroc").value
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(statistics, "_DISTINCT_SCORES_LIMIT", 1)
        patch.setattr(statistics, "_SORT_RUN_LENGTH", 3)
        from_arrays = compute(path, "auroc").value

    assert from_counts == from_arrays


_finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(_finite, _finite), min_size=2, max_size=80), data=st.data())
def test_regression_metrics_match_sklearn_in_any_row_order(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[float, float]], data: st.DataObject
) -> None:
    directory = tmp_path_factory.mktemp("regression")
    labels, scores = (np.array(column) for column in zip(*rows, strict=True))
    shuffled = data.draw(st.permutations(rows))
    path = write_predictions(directory / "p.csv", *zip(*shuffled, strict=True))

    for metric in ("mse", "rmse", "mae"):
        assert_agrees(compute(path, metric).value, SKLEARN[metric](labels, scores))


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 1), _scores), min_size=1, max_size=80), data=st.data())
def test_thresholded_metrics_match_sklearn_in_any_row_order(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[int, float]], data: st.DataObject
) -> None:
    directory = tmp_path_factory.mktemp("confusion")
    labels, scores = (np.array(column) for column in zip(*rows, strict=True))
    path = write_predictions(directory / "p.jsonl", *zip(*data.draw(st.permutations(rows)), strict=True))

    for metric in ("accuracy", "f1", "precision", "recall", "log_loss"):
        assert_agrees(compute(path, metric).value, SKLEARN[metric](labels, scores))


# --- errors: each says what happened, why, and what to do ---------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.csv"

    assert error_of(path, "auroc") == file.FILE_MISSING.format(path=path, cwd=Path.cwd())


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert error_of(tmp_path, "auroc") == file.FILE_UNREADABLE.format(path=tmp_path, reason="it is a directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_file_without_read_permission(make_file: Callable[..., Path]) -> None:
    path = make_file("p.csv", "label,score\n1,0.5\n")
    path.chmod(0)

    assert error_of(path, "auroc") == file.FILE_UNREADABLE.format(path=path, reason="Permission denied")


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("empty.csv", "", "header row"),
        ("blank.csv", "\n\r\n\n", "header row"),
        ("empty.jsonl", "", "JSON objects"),
        ("blank.jsonl", "\n  \n", "JSON objects"),
        ("empty.txt", "", "header row"),
    ],
)
def test_empty_file(make_file: Callable[..., Path], name: str, content: str, what: str) -> None:
    path = make_file(name, content)

    assert error_of(path, "accuracy") == file.EMPTY_FILE.format(path=path, what=what, metric="accuracy")


@pytest.mark.parametrize("content", ["label,score\n", "label,score\n\n\n"])
def test_header_without_rows(make_file: Callable[..., Path], content: str) -> None:
    path = make_file("p.csv", content)

    assert error_of(path, "mse") == predictions.NO_ROWS.format(path=path, metric="mse")


@pytest.mark.parametrize(
    ("name", "content", "options", "expected", "mentions"),
    [
        pytest.param(
            "p.csv",
            "y, prob\n1,0.5\n",
            {},
            {
                "missing": "'label' or 'score'",
                "where": "header",
                "found": "'y', 'prob'",
                "label": "'label'",
                "score": "'score' (or 'prediction')",
                "options": "--label-column and --score-column",
            },
            ("'y', 'prob'", "'label'", "'prediction'"),
            id="wrong-columns-lists-what-was-found-and-expected",
        ),
        pytest.param(
            "p.csv",
            "label,score\n1,0.5\n",
            {"score_column": "proba"},
            {
                "missing": "'proba'",
                "where": "header",
                "found": "'label', 'score'",
                "label": "'label'",
                "score": "'proba'",
                "options": "--score-column",
            },
            (),
            id="named-score-column-missing",
        ),
        pytest.param(
            "p.jsonl",
            '{"label": 1, "p": 0.5}\n',
            {},
            {
                "missing": "'score'",
                "where": "first object",
                "found": "'label', 'p'",
                "label": "'label'",
                "score": "'score' (or 'prediction')",
                "options": "--score-column",
            },
            (),
            id="wrong-keys-in-first-json-object",
        ),
    ],
)
def test_missing_columns_name_what_was_found_and_expected(
    make_file: Callable[..., Path],
    name: str,
    content: str,
    options: dict[str, str],
    expected: dict[str, str],
    mentions: tuple[str, ...],
) -> None:
    path = make_file(name, content)

    message = error_of(path, "auroc", **options)

    assert message == readers.MISSING_COLUMNS.format(path=path, **expected)
    for fragment in mentions:
        assert fragment in message


@pytest.mark.parametrize("good_rows", [2, 600])  # in the first batch, and in a later one
def test_json_object_missing_a_key_later(make_file: Callable[..., Path], good_rows: int) -> None:
    good = '{"label": 1, "score": 0.5}\n' * good_rows
    path = make_file("p.jsonl", good + '\n{"label": 0}\n{"label": 0, "score": 0.1}\n')

    assert error_of(path, "auroc") == readers.ROW_MISSING_KEY.format(
        row=good_rows + 1, line=good_rows + 2, path=path, column="score", found="'label'"
    )


def test_same_column_for_label_and_score(make_file: Callable[..., Path]) -> None:
    path = make_file("p.csv", "label,score\n1,0.5\n")

    assert error_of(path, "mse", score_column="label") == readers.SAME_COLUMN.format(column="label")


def test_duplicate_column_name(make_file: Callable[..., Path]) -> None:
    path = make_file("p.csv", "label,score,score\n1,0.5,0.6\n")

    assert error_of(path, "mse") == readers.DUPLICATE_COLUMN.format(path=path, column="score", count=2, role="scores")


def _csv_with(bad_row: int, label: str, score: str, rows: int = 1500) -> str:
    """A CSV whose data row ``bad_row`` (1-based; line bad_row + 1) holds the given cells."""
    lines = ["label,score"] + [f"{i % 2},0.{i % 10}" for i in range(1, rows + 1)]
    lines[bad_row] = f"{label},{score}"
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("metric", "label", "score", "template", "column", "shown"),
    [
        ("auroc", "1", "abc", cells.NOT_A_NUMBER, "score", "'abc'"),
        ("auroc", "1", "", cells.MISSING_VALUE, "score", "''"),
        ("mse", "n/a", "0.5", cells.NOT_A_NUMBER, "label", "'n/a'"),
        ("auroc", "1", "nan", cells.NOT_FINITE, "score", "'nan'"),
        ("auroc", "1", "inf", cells.NOT_FINITE, "score", "'inf'"),
        ("mse", "-Infinity", "0.5", cells.NOT_FINITE, "label", "'-Infinity'"),
        ("mae", "1", "1e400", cells.NOT_FINITE, "score", "'1e400'"),
        ("auroc", "NaN", "0.5", cells.NOT_FINITE, "label", "'NaN'"),
        ("accuracy", "1", "1.5", cells.NOT_A_PROBABILITY, "score", "'1.5'"),
        ("log_loss", "0", "-0.1", cells.NOT_A_PROBABILITY, "score", "'-0.1'"),
        ("auroc", "2", "0.5", cells.LABEL_NOT_BINARY, "label", "'2'"),
        ("f1", "yes", "0.5", cells.LABEL_NOT_BINARY, "label", "'yes'"),
        ("recall", " ", "0.5", cells.MISSING_VALUE, "label", "' '"),
    ],
)
def test_bad_cell_names_row_line_and_column(
    make_file: Callable[..., Path],
    metric: str,
    label: str,
    score: str,
    template: str,
    column: str,
    shown: str,
) -> None:
    path = make_file("p.csv", _csv_with(1000, label, score))  # row 1000 is in the fourth batch

    assert error_of(path, metric) == template.format(
        row=1000, line=1001, path=path, column=column, value=shown, metric=metric
    )


def test_bad_cell_after_blank_lines_and_a_multiline_field_names_its_line(
    make_file: Callable[..., Path],
) -> None:
    text = 'label,score,note\n1,0.5,"a\nb\nc"\n\n0,0.25,x\n\n1,oops,y\n'
    path = make_file("p.csv", text)

    assert error_of(path, "auroc") == cells.NOT_A_NUMBER.format(
        row=3, line=8, path=path, column="score", value="'oops'", metric="auroc"
    )


def test_the_first_bad_row_is_named(make_file: Callable[..., Path]) -> None:
    path = make_file("p.csv", "label,score\n1,0.5\n0,bad\n7,0.5\n")

    message = error_of(path, "auroc")

    assert message.startswith("Row 2 (line 3)")
    assert "column 'score'" in message


@pytest.mark.parametrize(
    ("line", "template", "column", "shown"),
    [
        ('{"label": 1, "score": NaN}', cells.NOT_FINITE, "score", "'NaN'"),
        ('{"label": 1, "score": "high"}', cells.NOT_A_NUMBER, "score", "'high'"),
        ('{"label": 1, "score": true}', cells.NOT_A_NUMBER, "score", "'true'"),
        ('{"label": 1, "score": null}', cells.MISSING_VALUE, "score", "'null'"),
        ('{"label": [1], "score": 0.5}', cells.LABEL_NOT_BINARY, "label", "'[1]'"),
        ('{"label": 0.5, "score": 0.5}', cells.LABEL_NOT_BINARY, "label", "'0.5'"),
    ],
)
def test_bad_json_value_names_row_line_and_column(
    make_file: Callable[..., Path], line: str, template: str, column: str, shown: str
) -> None:
    good = '{"label": 0, "score": 0.25}\n' * 300
    path = make_file("p.jsonl", good + "\n" + line + "\n")

    message = error_of(path, "auroc")

    assert message == template.format(row=301, line=302, path=path, column=column, value=shown, metric="auroc")


def test_non_finite_label_with_positive_label(make_file: Callable[..., Path]) -> None:
    path = make_file("p.csv", "label,score\nspam,0.9\nnan,0.1\n")

    assert error_of(path, "auroc", positive_label="spam") == cells.NOT_FINITE.format(
        row=2, line=3, path=path, column="label", value="'nan'", metric="auroc"
    )


@pytest.mark.parametrize(
    ("labels", "present", "absent"),
    [([0, 0, 0], "negative", "positive"), ([1, 1, 1], "positive", "negative")],
)
def test_auroc_on_one_class(tmp_path: Path, labels: list[int], present: str, absent: str) -> None:
    path = write_predictions(tmp_path / "p.csv", labels, [0.1, 0.5, 0.9])

    assert error_of(path, "auroc") == predictions.ONE_CLASS.format(
        rows=3, path=path, present=present, absent=absent, label_note=""
    )


def test_auroc_when_positive_label_never_appears(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.csv", ["ham", "eggs"], [0.1, 0.9])

    message = error_of(path, "auroc", positive_label="spam")

    assert message == predictions.ONE_CLASS.format(
        rows=2, path=path, present="negative", absent="positive", label_note=" with label 'spam'"
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 0.5]", "it is an array"),
        ('"label,score"', "it is a string"),
        ("0.5", "it is a number"),
        ('{"label": 1, "score": 0.5', "invalid JSON: Expecting ',' delimiter at column 26"),
    ],
)
def test_json_line_that_is_not_an_object(make_file: Callable[..., Path], line: str, reason: str) -> None:
    path = make_file("p.ndjson", '{"label": 1, "score": 0.5}\n\n' + line + "\n")

    assert error_of(path, "auroc") == readers.NOT_AN_OBJECT.format(line=3, path=path, reason=reason)


def test_json_array_file_is_refused_at_line_one(make_file: Callable[..., Path]) -> None:
    path = make_file("p.json", '[{"label": 1, "score": 0.5}]\n')

    assert error_of(path, "auroc") == readers.NOT_AN_OBJECT.format(line=1, path=path, reason="it is an array")


@pytest.mark.parametrize(("row", "got"), [("1,0.5,extra", 3), ("1", 1)])
def test_row_with_a_different_number_of_fields(make_file: Callable[..., Path], row: str, got: int) -> None:
    path = make_file("p.csv", "label,score\n0,0.1\n\n" + row + "\n1,0.2\n")

    assert error_of(path, "auroc") == readers.ROW_LENGTH.format(row=2, line=4, path=path, got=got, expected=2)


def test_row_length_error_in_a_later_batch(make_file: Callable[..., Path]) -> None:
    path = make_file("p.csv", _csv_with(700, "1", "0.5,0.6"))

    assert error_of(path, "auroc") == readers.ROW_LENGTH.format(row=700, line=701, path=path, got=3, expected=2)


def test_broken_csv_quoting(make_file: Callable[..., Path]) -> None:
    path = make_file("p.csv", 'label,score\n1,0.5\n0,"0.5"x\n')

    assert error_of(path, "auroc") == file.BAD_CSV.format(line=3, path=path, reason="',' expected after '\"'")


@pytest.mark.parametrize("name", ["p.csv", "p.jsonl", "p.txt"])
def test_line_too_long(make_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(readers, "MAX_LINE_CHARS", 64)
    if name.endswith(".jsonl"):
        content = '{"label": 1, "score": 0.5}\n' * 2 + '{"label": 1, "score": 0.5, "pad": "' + "x" * 80 + '"}\n'
    else:
        content = "label,score,pad\n1,0.5,a\n0,0.5,b\n1,0.5," + "x" * 200 + "\n"
    path = make_file(name, content)

    line = 3 if name.endswith(".jsonl") else 4

    assert error_of(path, "auroc") == readers.LINE_TOO_LONG.format(line=line, path=path, limit=64)


def test_file_without_newlines_is_refused_without_reading_it_whole(
    make_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "MAX_LINE_CHARS", 1000)
    path = make_file("p.csv", "label,score," + ",".join("1" for _ in range(50_000)))

    assert error_of(path, "auroc") == readers.LINE_TOO_LONG.format(line=1, path=path, limit=1000)


def test_file_that_is_not_utf8(make_file: Callable[..., Path]) -> None:
    path = make_file("p.csv", b"label,score\n1,0.5\n0,0.25\n" + "1,0.5 caf\u00e9\n".encode("latin-1"))

    assert error_of(path, "auroc") == file.NOT_UTF8.format(path=path, byte=0xE9, reason="invalid continuation byte")


def test_unknown_metric(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.csv", [0, 1], [0.2, 0.8])

    assert error_of(path, "bleu") == UNKNOWN_METRIC.format(given="bleu", supported=supported_names())


def test_metric_that_needs_more_than_predictions(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.csv", [0, 1], [0.2, 0.8])

    assert error_of(path, "reply_rate") == recipes.NOT_COMPUTABLE.format(
        metric="reply_rate", supported=", ".join(recipes.COMPUTABLE_METRICS)
    )


def test_r2_on_one_row(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.csv", [1.0], [2.0])

    assert error_of(path, "r2") == predictions.TOO_FEW_ROWS_FOR_R2.format(path=path)


# --- memory: it must not grow with the file -----------------------------------------------------


def _write_large_csv(path: Path, *, target_bytes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense rows ('1,0.123...' with 17 significant digits, ~21 bytes): the most rows per byte."""
    rng = np.random.default_rng(seed)
    labels_parts, scores_parts = [], []
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("label,score\n")
        while out.tell() < target_bytes:
            labels, scores = rng.integers(0, 2, 20_000), rng.random(20_000)
            out.write("".join(f"{y},{s!r}\n" for y, s in zip(labels.tolist(), scores.tolist(), strict=True)))
            labels_parts.append(labels.astype(np.int8))
            scores_parts.append(scores)
    return np.concatenate(labels_parts), np.concatenate(scores_parts)


def _traced(path: Path, metric: str) -> tuple[PredictionsResult, int, float]:
    """The result, the peak traced memory and the wall time of one computation."""
    tracemalloc.start()
    try:
        started = time.perf_counter()
        result = compute(path, metric)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak, elapsed


@pytest.fixture(scope="module")
def large_csv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
    path = tmp_path_factory.mktemp("large") / "predictions.csv"
    labels, scores = _write_large_csv(path, target_bytes=30 * 1024 * 1024, seed=2024)
    yield path, labels, scores
    path.unlink()


@pytest.mark.slow
@pytest.mark.parametrize(("metric", "limit_bytes"), [("accuracy", 5_000_000), ("mse", 5_000_000), ("auroc", None)])
def test_memory_stays_small_on_a_30_mb_file(
    large_csv: tuple[Path, np.ndarray, np.ndarray],
    metric: str,
    limit_bytes: int | None,
    record_property: Callable[[str, object], None],
) -> None:
    path, labels, scores = large_csv
    size = path.stat().st_size

    # one computation, traced: its speed is the benchmarks' to measure, not a test's
    result, peak, traced_seconds = _traced(path, metric)

    numbers = {
        "metric": metric,
        "file_bytes": size,
        "rows": result.rows,
        "peak_traced_bytes": peak,
        "peak_bytes_per_row": round(peak / result.rows, 2),
        "seconds_under_tracemalloc": round(traced_seconds, 1),
    }
    for key, value in numbers.items():
        record_property(key, value)
    print(json.dumps(numbers))  # visible with -s
    assert size > 30 * 1024 * 1024
    assert result.rows == len(labels)
    assert_agrees(result.value, SKLEARN[metric](labels, scores))
    if limit_bytes is not None:
        assert peak < limit_bytes
    else:  # auroc keeps 8 bytes a row: far under the ~21 bytes a row of text
        assert peak < 9 * result.rows + AUROC_FIXED_BYTES
        assert peak < size / 2


# auroc's fixed costs, besides 8 bytes a row: the 1 MiB read buffer, the score -> count dict before it
# gives way to arrays (<= 16384 entries), and one sort run (65536 floats as a list) at the end
AUROC_FIXED_BYTES = 4_000_000


def test_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    """The quick version of the 30 MB test: 4x the rows costs accuracy nothing, auroc 8 bytes a row."""
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    _write_large_csv(small, target_bytes=1 * 1024 * 1024, seed=5)
    _write_large_csv(large, target_bytes=4 * 1024 * 1024, seed=6)

    _, accuracy_small, _ = _traced(small, "accuracy")
    _, accuracy_large, _ = _traced(large, "accuracy")
    auroc, auroc_large, _ = _traced(large, "auroc")

    assert accuracy_small < 5_000_000
    assert accuracy_large < 5_000_000
    assert abs(accuracy_large - accuracy_small) < 500_000
    assert auroc_large < 9 * auroc.rows + AUROC_FIXED_BYTES
