"""The metric catalogue, reading the measured value, and the baseline gate, as a user meets them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hokusai_action.domain.metrics import (
    CATALOGUE,
    GateFailed,
    GateResult,
    check_in_range,
    enforce_gate,
    evaluate_gate,
    parse_number,
    read_metric_value,
    resolve_metric,
)
from hokusai_action.errors import (
    EXIT_GATE_FAILED,
    InputError,
)

pytestmark = [pytest.mark.unit]

HIGHER = [m for m in CATALOGUE if m.greater_is_better]
LOWER = [m for m in CATALOGUE if not m.greater_is_better]
# every spelling a user may type, paired with the metric it must resolve to
SPELLINGS = [(key, m.name) for m in CATALOGUE for key in (m.name, *m.aliases)]


# ------------------------------------------------------------------------------------ catalogue


@pytest.mark.parametrize(("spelling", "name"), SPELLINGS)
def test_every_name_and_alias_resolves_case_insensitively(spelling: str, name: str) -> None:
    assert resolve_metric(spelling).name == name
    assert resolve_metric(spelling.upper()).name == name
    assert resolve_metric(spelling.title()).name == name
    assert resolve_metric(f"  {spelling}  ").name == name


@pytest.mark.parametrize(("spelling", "name"), [("ROC-AUC", "auroc"), ("f1-score", "f1"), ("Log Loss", "log_loss")])
def test_hyphens_and_spaces_read_as_underscores(spelling: str, name: str) -> None:
    assert resolve_metric(spelling).name == name


def test_the_design_examples_are_in_the_catalogue() -> None:
    for spelling in ("auroc", "roc_auc", "accuracy", "f1", "rmse"):
        resolve_metric(spelling)


def test_no_alias_is_shared_by_two_metrics() -> None:
    keys = [key for m in CATALOGUE for key in (m.name, *m.aliases)]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("given_name", ["auprc", "", "accuracy2", "bleu"])
def test_unknown_metric_lists_every_supported_name(given_name: str) -> None:
    with pytest.raises(InputError) as raised:
        resolve_metric(given_name)
    message = str(raised.value)
    assert message.startswith(f"Unknown metric '{given_name}'. Supported: ")
    for metric in CATALOGUE:
        assert metric.name in message
        for alias in metric.aliases:
            assert alias in message
    assert raised.value.exit_code == 2


# -------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0.82", 0.82), (" 0.82 ", 0.82), (1, 1.0), (0.5, 0.5), ("-3", -3.0), ("1e-3", 0.001)],
)
def test_parse_number_accepts_numbers_and_numeric_text(raw: object, expected: float) -> None:
    assert parse_number(raw, what="Baseline") == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (True, "Baseline 'True' is not a number."),
        (False, "Baseline 'False' is not a number."),
        (None, "Baseline 'None' is not a number."),
        ("abc", "Baseline 'abc' is not a number."),
        ("", "Baseline '' is not a number."),
        ([0.8], "Baseline '[0.8]' is not a number."),
        ("nan", "Baseline must be a finite number, not nan."),
        ("NaN", "Baseline must be a finite number, not NaN."),
        (math.nan, "Baseline must be a finite number, not nan."),
        ("inf", "Baseline must be a finite number, not inf."),
        ("-Infinity", "Baseline must be a finite number, not -Infinity."),
        (math.inf, "Baseline must be a finite number, not inf."),
    ],
)
def test_parse_number_rejects_non_numbers_and_non_finite(raw: object, message: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_number(raw, what="Baseline")
    assert str(raised.value) == message
    assert raised.value.exit_code == 2


@pytest.mark.parametrize(
    ("metric", "value"),
    [
        ("r2", -5.0),
        ("r2", 1.0),
        ("r2", -1e9),
        ("auroc", 0.0),
        ("auroc", 1.0),
        ("accuracy", 0.5),
        ("rmse", 0.0),
        ("rmse", 1e6),
        ("log_loss", 12.3),
        ("mae", 0.0),
    ],
)
def test_values_inside_the_metric_range_pass(metric: str, value: float) -> None:
    assert check_in_range(resolve_metric(metric), value, what="Baseline") == value


@pytest.mark.parametrize(
    ("metric", "value", "message"),
    [
        ("r2", 1.5, "Baseline 1.5 is outside r2's range [-inf, 1] (higher is better)."),
        ("rmse", -0.1, "Baseline -0.1 is outside rmse's range [0, inf] (lower is better)."),
        ("auroc", 1.7, "Baseline 1.7 is outside auroc's range [0, 1] (higher is better)."),
        ("accuracy", -0.01, "Baseline -0.01 is outside accuracy's range [0, 1] (higher is better)."),
        ("f1", 82.0, "Baseline 82 is outside f1's range [0, 1] (higher is better)."),
        ("mse", -3.0, "Baseline -3 is outside mse's range [0, inf] (lower is better)."),
    ],
)
def test_values_outside_the_metric_range_are_refused_with_range_and_direction(
    metric: str, value: float, message: str
) -> None:
    with pytest.raises(InputError) as raised:
        check_in_range(resolve_metric(metric), value, what="Baseline")
    assert str(raised.value) == message


@pytest.mark.parametrize("metric", CATALOGUE, ids=lambda m: m.name)
def test_non_finite_values_are_outside_every_range(metric) -> None:
    for value in (math.nan, math.inf, -math.inf):
        assert not metric.contains(value)


# ------------------------------------------------------------------------------ measured value

AUROC = resolve_metric("auroc")


def _model_dir(tmp_path: Path, **files: str) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x00" * 16)
    for name, text in files.items():
        (model / name.replace("__", ".")).write_text(text, encoding="utf-8")
    return model


def test_metric_value_flag_beats_every_file(tmp_path: Path) -> None:
    model = _model_dir(tmp_path, metrics__json='{"auroc": 0.70}')
    other = tmp_path / "eval.json"
    other.write_text('{"auroc": 0.80}')
    measured = read_metric_value(AUROC, metric_value="0.9", metrics_file=other, model_path=model)
    assert (measured.value, measured.source, measured.source_path) == (0.9, "flag", None)


def test_metrics_file_beats_the_one_in_the_model_dir(tmp_path: Path) -> None:
    model = _model_dir(tmp_path, metrics__json='{"auroc": 0.70}')
    other = tmp_path / "eval.json"
    other.write_text('{"auroc": 0.80}')
    measured = read_metric_value(AUROC, metric_value=None, metrics_file=other, model_path=model)
    assert (measured.value, measured.source, measured.source_path) == (0.8, "metrics-file", str(other))


def test_metrics_json_in_the_model_dir_is_the_default(tmp_path: Path) -> None:
    model = _model_dir(tmp_path, metrics__json='{"auroc": 0.70}')
    measured = read_metric_value(AUROC, metric_value=None, metrics_file=None, model_path=model)
    assert (measured.value, measured.source_path) == (0.7, str(model / "metrics.json"))


def test_metrics_yaml_in_the_model_dir_is_read_when_there_is_no_json(tmp_path: Path) -> None:
    model = _model_dir(tmp_path, metrics__yaml="auroc: 0.75\naccuracy: 0.9\n")
    measured = read_metric_value(AUROC, metric_value=None, metrics_file=None, model_path=model)
    assert (measured.value, measured.source_path) == (0.75, str(model / "metrics.yaml"))


def test_metrics_json_wins_over_metrics_yaml_in_the_model_dir(tmp_path: Path) -> None:
    model = _model_dir(tmp_path, metrics__json='{"auroc": 0.70}', metrics__yaml="auroc: 0.75\n")
    assert read_metric_value(AUROC, metric_value=None, metrics_file=None, model_path=model).value == 0.7


@pytest.mark.parametrize("key", ["roc_auc", "AUC", "roc-auc", "AUROC", "auc_roc"])
def test_an_alias_key_in_the_file_counts_for_its_metric(tmp_path: Path, key: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"loss": 0.3, key: 0.88}))
    measured = read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path)
    assert measured.value == 0.88


def test_nested_metrics_mapping_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"run": "abc", "metrics": {"roc_auc": 0.91, "f1": 0.8}}))
    assert read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path).value == 0.91


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".txt"])
def test_a_yaml_metrics_file_is_read(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"eval{suffix}"
    # PyYAML reads 8.5e-1 (no dot before the exponent in YAML 1.1 is a string): both must work
    path.write_text("metrics:\n  rmse: 8.5e-1\n  roc_auc: 0.93\n")
    assert read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path).value == 0.93
    rmse = resolve_metric("rmse")
    assert read_metric_value(rmse, metric_value=None, metrics_file=path, model_path=tmp_path).value == 0.85


def test_missing_value_lists_the_keys_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"f1": 0.8, "accuracy": 0.9}))
    with pytest.raises(InputError) as raised:
        read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path)
    assert str(raised.value) == (
        f"Metric 'auroc' is not in {path} (it holds: accuracy, f1). "
        "Add it, point --metrics-file at another file, or pass --metric-value."
    )


def test_an_empty_mapping_says_it_holds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text("{}")
    with pytest.raises(InputError, match=r"\(it holds: nothing\)"):
        read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path)


def test_no_source_at_all_says_where_a_value_can_come_from(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    with pytest.raises(InputError) as raised:
        read_metric_value(AUROC, metric_value=None, metrics_file=None, model_path=model)
    assert str(raised.value) == (
        "No measured value for 'auroc': pass --metric-value, or --metrics-file, "
        "or put metrics.json or metrics.yaml inside the model directory."
    )


def test_a_single_file_model_has_no_default_metrics_file(tmp_path: Path) -> None:
    model = tmp_path / "model.pkl"
    model.write_bytes(b"pickle")
    (tmp_path / "metrics.json").write_text('{"auroc": 0.9}')  # next to it, not inside: not read
    with pytest.raises(InputError, match=r"^No measured value for 'auroc'"):
        read_metric_value(AUROC, metric_value=None, metrics_file=None, model_path=model)


def test_broken_json_file_says_it_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text('{"auroc": 0.9,')
    with pytest.raises(InputError) as raised:
        read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path)
    assert str(raised.value).startswith(f"Cannot read metrics file {path}: not valid JSON/YAML: ")
    assert raised.value.exit_code == 2


def test_broken_yaml_file_says_it_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "metrics.yaml"
    path.write_text("auroc: [0.9\n")
    with pytest.raises(InputError, match=r"^Cannot read metrics file .*metrics\.yaml: not valid JSON/YAML: "):
        read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path)


def test_missing_metrics_file_says_it_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(InputError) as raised:
        read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path)
    assert str(raised.value) == f"Cannot read metrics file {path}: No such file or directory."


def test_binary_metrics_file_says_it_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match=r"Cannot read metrics file .*: not UTF-8 text\.$"):
        read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path)


@pytest.mark.parametrize(("content", "kind"), [("[0.9]", "list"), ("0.9", "float"), ('"auroc"', "str")])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path, content: str, kind: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(InputError) as raised:
        read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path)
    assert str(raised.value) == (f"Metrics file {path} must hold a mapping of metric name to number, not {kind}.")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"auroc": "high"}', "Metric 'auroc' in {path} 'high' is not a number."),
        ('{"roc_auc": true}', "Metric 'roc_auc' in {path} 'True' is not a number."),
        ('{"auroc": NaN}', "Metric 'auroc' in {path} must be a finite number, not nan."),
        (
            '{"auroc": 1.3}',
            "Metric 'auroc' in {path} 1.3 is outside auroc's range [0, 1] (higher is better).",
        ),
    ],
)
def test_a_bad_value_in_the_file_names_the_key_and_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(InputError) as raised:
        read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path)
    assert str(raised.value) == message.format(path=path)


def test_a_flag_value_outside_the_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^Metric value 1\.2 is outside auroc's range \[0, 1\]"):
        read_metric_value(AUROC, metric_value="1.2", metrics_file=None, model_path=tmp_path)


# ------------------------------------------------------------------------------------------ gate

finite = st.floats(allow_nan=False, allow_infinity=False)
any_float = st.floats(allow_nan=True, allow_infinity=True)
metrics = st.sampled_from(CATALOGUE)


@given(metric=metrics, value=finite, baseline=finite)
@example(metric=resolve_metric("auroc"), value=0.82, baseline=0.82)
@example(metric=resolve_metric("rmse"), value=0.5, baseline=0.5)
@example(metric=resolve_metric("r2"), value=-0.0, baseline=0.0)
def test_gate_passes_exactly_when_the_value_meets_the_baseline(metric, value: float, baseline: float) -> None:
    gate = evaluate_gate(metric, value, baseline)
    expected = value >= baseline if metric.greater_is_better else value <= baseline
    assert gate.passed is expected


@given(value=finite, baseline=finite)
def test_gate_direction_is_symmetric(value: float, baseline: float) -> None:
    # higher-is-better on (v, b) is the same decision as lower-is-better on the mirrored values
    higher, lower = resolve_metric("r2"), resolve_metric("rmse")
    assert evaluate_gate(higher, value, baseline).passed == evaluate_gate(lower, -value, -baseline).passed
    assert evaluate_gate(higher, value, baseline).passed == evaluate_gate(lower, baseline, value).passed


@given(metric=metrics, value=finite)
def test_a_tie_always_passes_with_zero_delta(metric, value: float) -> None:
    gate = evaluate_gate(metric, value, value)
    assert gate.passed
    assert gate.delta == 0


@given(metric=metrics, baseline=any_float)
def test_nan_value_never_passes(metric, baseline: float) -> None:
    assert not evaluate_gate(metric, math.nan, baseline).passed
    assert not evaluate_gate(metric, baseline, math.nan).passed


@given(metric=metrics, value=finite, baseline=finite)
def test_delta_sign_agrees_with_passed(metric, value: float, baseline: float) -> None:
    gate = evaluate_gate(metric, value, baseline)
    assert (gate.delta >= 0) is gate.passed


@given(metric=metrics, value=finite, baseline=finite)
def test_as_dict_reports_what_the_json_output_shows(metric, value: float, baseline: float) -> None:
    shown = evaluate_gate(metric, value, baseline).as_dict()
    assert shown["name"] == metric.name
    assert (shown["value"], shown["baseline"]) == (value, baseline)
    assert shown["greater_is_better"] is metric.greater_is_better
    assert shown["passed"] is (shown["delta"] >= 0)


@given(metric=metrics, value=finite, baseline=finite)
def test_enforce_gate_raises_exactly_when_the_gate_fails(metric, value: float, baseline: float) -> None:
    gate = evaluate_gate(metric, value, baseline)
    if gate.passed:
        enforce_gate(gate)
        return
    with pytest.raises(GateFailed) as raised:
        enforce_gate(gate)
    error = raised.value
    assert error.exit_code == EXIT_GATE_FAILED == 1
    assert f"{value:g}" in error.message
    assert f"{baseline:g}" in error.message
    assert metric.direction in error.message


@pytest.mark.parametrize(
    ("metric", "value", "baseline", "line"),
    [
        (
            "auroc",
            0.79,
            0.82,
            "auroc = 0.79 does not meet the baseline 0.82 (higher is better: it must be >= 0.82). "
            "The model was not uploaded and the token is unchanged.",
        ),
        (
            "rmse",
            1.5,
            1.2,
            "rmse = 1.5 does not meet the baseline 1.2 (lower is better: it must be <= 1.2). "
            "The model was not uploaded and the token is unchanged.",
        ),
    ],
)
def test_gate_failure_line_names_value_baseline_and_direction(
    metric: str, value: float, baseline: float, line: str
) -> None:
    with pytest.raises(GateFailed) as raised:
        enforce_gate(evaluate_gate(resolve_metric(metric), value, baseline))
    assert raised.value.one_line() == line


def test_gate_result_is_the_public_type() -> None:
    assert isinstance(evaluate_gate(AUROC, 0.9, 0.8), GateResult)


# ------------------------------------------------------------------------------- bounded metrics files

METRICS_LAUGHS = "".join(
    [
        "auroc: 0.9\n",
        'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
        *(f"l{n}: &l{n} [{','.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 9)),
    ]
)


def test_a_billion_laughs_metrics_yaml_is_refused_fast_and_small(tmp_path: Path) -> None:
    import time
    import tracemalloc

    path = tmp_path / "metrics.yaml"
    path.write_text(METRICS_LAUGHS, encoding="utf-8")
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(InputError) as raised:
            read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(raised.value).startswith(f"Cannot read metrics file {path}: its anchors and aliases expand")
    assert peak < 5 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("metrics.yaml", "auroc: " + "[" * 100 + "]" * 100 + "\n", "nested more than 64 levels deep"),
        ("metrics.yaml", "auroc: 0.9\n" + "#\n" * 600_000, "larger than 1024 KiB"),
        ("metrics.yaml", "auroc: " + "9" * 5000 + "\n", "not valid JSON/YAML: "),
        ("metrics.json", '{"auroc": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON/YAML: "),
    ],
    ids=["deep-yaml", "large-yaml", "huge-integer-yaml", "deep-json"],
)
def test_a_metrics_file_past_the_bounds_is_refused(tmp_path: Path, name: str, text: str, reason: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as raised:
        read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path)
    assert str(raised.value).startswith(f"Cannot read metrics file {path}: {reason}"), str(raised.value)


@pytest.mark.parametrize("raw", [10**400, -(10**400)], ids=["huge", "huge-negative"])
def test_an_integer_too_big_for_a_float_is_not_finite(raw: int) -> None:
    with pytest.raises(InputError) as raised:
        parse_number(raw, what="Metric value")
    assert str(raised.value).startswith("Metric value must be a finite number")


def test_a_metrics_yaml_with_a_few_aliases_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "metrics.yaml"
    path.write_text("auroc: &v 0.91\nauc: *v\n", encoding="utf-8")
    assert read_metric_value(AUROC, metric_value=None, metrics_file=path, model_path=tmp_path).value == 0.91
