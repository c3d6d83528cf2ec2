"""The metric catalogue, reading a measured value, and the baseline gate.

Pure logic (the standard library and PyYAML only): each metric knows its direction and the range a
real value can take, so a baseline of ``1.7`` for AUROC or ``-3`` for RMSE is refused as a typo
before anything is uploaded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hokusai_action.errors import EXIT_GATE_FAILED, HokusaiError, InputError
from hokusai_action.safe_yaml import YamlInvalid, YamlRefused, load_bounded, read_bounded_text

INF = math.inf


@dataclass(frozen=True)
class Metric:
    name: str
    greater_is_better: bool
    low: float
    high: float
    aliases: tuple[str, ...] = ()
    doc: str = ""

    @property
    def direction(self) -> str:
        return "higher is better" if self.greater_is_better else "lower is better"

    def range_text(self) -> str:
        low = "-inf" if self.low == -INF else f"{self.low:g}"
        high = "inf" if self.high == INF else f"{self.high:g}"
        return f"[{low}, {high}]"

    def contains(self, value: float) -> bool:
        return math.isfinite(value) and self.low <= value <= self.high


CATALOGUE: tuple[Metric, ...] = (
    Metric("accuracy", True, 0.0, 1.0, ("acc",), "share of correct predictions"),
    Metric("auroc", True, 0.0, 1.0, ("auc", "roc_auc", "roc-auc", "auc_roc"), "area under the ROC curve"),
    Metric("f1", True, 0.0, 1.0, ("f1_score",), "harmonic mean of precision and recall"),
    Metric("precision", True, 0.0, 1.0, (), "share of predicted positives that are positive"),
    Metric("recall", True, 0.0, 1.0, ("sensitivity", "tpr"), "share of positives found"),
    Metric("log_loss", False, 0.0, INF, ("logloss", "cross_entropy"), "binary cross-entropy"),
    Metric("mse", False, 0.0, INF, ("mean_squared_error",), "mean squared error"),
    Metric("rmse", False, 0.0, INF, ("root_mean_squared_error",), "root mean squared error"),
    Metric("mae", False, 0.0, INF, ("mean_absolute_error",), "mean absolute error"),
    Metric("r2", True, -INF, 1.0, ("r2_score", "r_squared"), "coefficient of determination"),
    Metric("reply_rate", True, 0.0, 1.0, (), "share of messages answered"),
    Metric("conversion_rate", True, 0.0, 1.0, (), "share of sessions converting"),
    Metric("engagement_score", True, 0.0, 1.0, (), "normalised engagement, 0 to 1"),
)

_BY_NAME: dict[str, Metric] = {}
for _metric in CATALOGUE:
    for _key in (_metric.name, *_metric.aliases):
        _BY_NAME[_key] = _metric

UNKNOWN_METRIC = "Unknown metric '{given}'. Supported: {supported}."
VALUE_MISSING = (
    "Metric '{metric}' is not in {path} (it holds: {found}). "
    "Add it, point --metrics-file at another file, or pass --metric-value."
)
AMBIGUOUS_VALUE = "{path} gives {metric} twice with different values ({listed}). Keep one, or pass --metric-value."
NO_METRIC_SOURCE = (
    "No measured value for '{metric}': pass --metric-value, or --metrics-file, "
    "or put metrics.json or metrics.yaml inside the model directory."
)
METRICS_FILE_UNREADABLE = "Cannot read metrics file {path}: {reason}."
METRICS_FILE_NOT_MAPPING = "Metrics file {path} must hold a mapping of metric name to number, not {kind}."
NOT_A_NUMBER = "{what} '{given}' is not a number."
NOT_FINITE = "{what} must be a finite number, not {given}."
OUT_OF_RANGE = "{what} {given:g} is outside {metric}'s range {range} ({direction})."
GATE_FAILED = "{metric} = {value:g} does not meet {against} ({direction}: it must be {op} {required:g})."
GATE_FAILED_HINT = "The model was not uploaded and the token is unchanged."


class NoMeasuredValue(InputError):
    """No source of the measured value was given at all (exit 2 for a registration). A re-run of a
    registered token needs none: it reports the registered value."""


def supported_names() -> str:
    return ", ".join(f"{m.name} ({', '.join(m.aliases)})" if m.aliases else m.name for m in CATALOGUE)


def resolve_metric(name: str) -> Metric:
    """Look a metric up by name or alias, case-insensitively; unknown names list what is supported."""
    key = (name or "").strip().lower().replace(" ", "_")
    metric = _BY_NAME.get(key) or _BY_NAME.get(key.replace("-", "_"))
    if metric is None:
        raise InputError(UNKNOWN_METRIC.format(given=name, supported=supported_names()))
    return metric


def parse_number(raw: Any, *, what: str) -> float:
    """A finite float from a flag, a YAML value or a JSON value (booleans are not numbers)."""
    if isinstance(raw, bool) or raw is None:
        raise InputError(NOT_A_NUMBER.format(what=what, given=raw))
    try:
        value = float(raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        raise InputError(NOT_A_NUMBER.format(what=what, given=raw)) from None
    except OverflowError:  # an integer past float's range (YAML and JSON allow any length)
        raise InputError(NOT_FINITE.format(what=what, given="an integer too large for a float")) from None
    if not math.isfinite(value):
        raise InputError(NOT_FINITE.format(what=what, given=raw))
    return value


def check_in_range(metric: Metric, value: float, *, what: str) -> float:
    if not metric.contains(value):
        raise InputError(
            OUT_OF_RANGE.format(
                what=what,
                given=value,
                metric=metric.name,
                range=metric.range_text(),
                direction=metric.direction,
            )
        )
    return value


def _load_metrics_file(path: Path) -> dict[str, Any]:
    is_json = path.suffix.lower() == ".json"
    try:
        # YAML is bounded in size and alias expansion ("billion laughs"); JSON has no aliases
        text = path.read_text(encoding="utf-8") if is_json else read_bounded_text(path)
    except OSError as exc:
        raise InputError(METRICS_FILE_UNREADABLE.format(path=path, reason=exc.strerror or exc)) from exc
    except UnicodeDecodeError as exc:
        raise InputError(METRICS_FILE_UNREADABLE.format(path=path, reason="not UTF-8 text")) from exc
    except YamlRefused as exc:
        raise InputError(METRICS_FILE_UNREADABLE.format(path=path, reason=exc)) from exc
    try:
        # .yaml, .yml and unknown suffixes load as YAML, a superset of JSON
        data = json.loads(text) if is_json else load_bounded(text)
    except YamlInvalid as exc:
        raise InputError(METRICS_FILE_UNREADABLE.format(path=path, reason=f"not valid JSON/YAML: {exc}")) from exc
    except YamlRefused as exc:
        raise InputError(METRICS_FILE_UNREADABLE.format(path=path, reason=exc)) from exc
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError; deep nesting recurses
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(METRICS_FILE_UNREADABLE.format(path=path, reason=f"not valid JSON/YAML: {reason}")) from exc
    if not isinstance(data, dict):
        raise InputError(METRICS_FILE_NOT_MAPPING.format(path=path, kind=type(data).__name__))
    # a common shape is {"metrics": {...}}; accept it as well
    if "metrics" in data and isinstance(data["metrics"], dict):
        data = data["metrics"]
    return data


def default_metrics_file(model_path: Path) -> Path | None:
    if model_path.is_dir():
        for name in ("metrics.json", "metrics.yaml", "metrics.yml"):
            candidate = model_path / name
            if candidate.is_file():
                return candidate
    return None


@dataclass(frozen=True)
class MeasuredValue:
    value: float
    source: str  # "flag" | "metrics-file" | "predictions" | "mlflow-run"
    source_path: str | None = None  # the metrics/predictions file, or the MLflow run id
    detail: str | None = None  # e.g. the predictions file's SHA-256, the run metric's step and time


def read_metric_value(
    metric: Metric, *, metric_value: Any, metrics_file: Path | None, model_path: Path
) -> MeasuredValue:
    """The measured value: ``--metric-value``, else ``--metrics-file``, else metrics.json/yaml in the model."""
    if metric_value is not None:
        value = parse_number(metric_value, what="Metric value")
        return MeasuredValue(check_in_range(metric, value, what="Metric value"), "flag")
    path = metrics_file or default_metrics_file(model_path)
    if path is None:
        raise NoMeasuredValue(NO_METRIC_SOURCE.format(metric=metric.name))
    data = _load_metrics_file(path)
    matches: dict[str, float] = {}
    for key, raw in data.items():
        try:
            found = resolve_metric(str(key))
        except InputError:
            continue
        if found is metric:
            value = parse_number(raw, what=f"Metric '{key}' in {path}")
            matches[str(key)] = check_in_range(metric, value, what=f"Metric '{key}' in {path}")
    if len(set(matches.values())) > 1:
        listed = ", ".join(f"{key}={value:g}" for key, value in matches.items())
        raise InputError(AMBIGUOUS_VALUE.format(path=path, metric=metric.name, listed=listed))
    if matches:
        return MeasuredValue(next(iter(matches.values())), "metrics-file", str(path))
    found_keys = ", ".join(sorted(map(str, data))) or "nothing"
    raise InputError(VALUE_MISSING.format(metric=metric.name, path=path, found=found_keys))


@dataclass(frozen=True)
class Margin:
    """``--min-improvement``: absolute (``0.01``) or relative to the reference (``2%``).

    Semantics follow MLflow's ``MetricThreshold``: higher-is-better needs
    ``value >= ref + abs`` or ``value >= ref + |ref| * rel``; lower-is-better the mirror image. A
    relative margin on a zero reference adds nothing (there is nothing to take a share of).
    """

    absolute: float = 0.0
    relative: float = 0.0
    text: str = "0"

    def amount(self, reference: float) -> float:
        return self.absolute + abs(reference) * self.relative


BAD_MARGIN = "--min-improvement '{given}' is not a margin: use an absolute number like 0.01 or a relative one like 2%."
NEGATIVE_MARGIN = "--min-improvement must not be negative (got {given}); use 0 for no margin."


def parse_margin(raw: Any) -> Margin | None:
    if raw is None or raw == "":
        return None
    text = str(raw).strip()
    relative = text.endswith("%")
    try:
        number = float(text[:-1] if relative else text)
    except ValueError:
        raise InputError(BAD_MARGIN.format(given=text)) from None
    if not math.isfinite(number):
        raise InputError(BAD_MARGIN.format(given=text))
    if number < 0:
        raise InputError(NEGATIVE_MARGIN.format(given=text))
    return Margin(relative=number / 100, text=text) if relative else Margin(absolute=number, text=text)


@dataclass(frozen=True)
class Champion:
    """The version that holds an alias (``--compare-to champion``) and its recorded value."""

    alias: str
    version: str | None = None  # None: no version holds the alias, the baseline alone decides
    value: float | None = None


@dataclass(frozen=True)
class GateResult:
    """One gate report: value against the better of baseline and champion, plus the margin."""

    metric: Metric
    value: float
    baseline: float
    margin: Margin | None = None
    champion: Champion | None = None

    def _better(self, a: float, b: float) -> float:
        return max(a, b) if self.metric.greater_is_better else min(a, b)

    @property
    def reference(self) -> float:
        """What the value is compared with: the baseline, or the champion's value when it is better."""
        if self.champion is not None and self.champion.value is not None:
            return self._better(self.baseline, self.champion.value)
        return self.baseline

    @property
    def required(self) -> float:
        """The value needed to pass: the reference moved by the margin in the good direction."""
        amount = self.margin.amount(self.reference) if self.margin else 0.0
        return self.reference + amount if self.metric.greater_is_better else self.reference - amount

    @property
    def delta(self) -> float:
        """Signed improvement over the reference in the metric's good direction."""
        diff = self.value - self.reference
        return diff if self.metric.greater_is_better else -diff

    @property
    def passed(self) -> bool:
        # a tie passes; NaN compares False both ways, so it never passes
        if self.metric.greater_is_better:
            return self.value >= self.required
        return self.value <= self.required

    @property
    def op(self) -> str:
        return ">=" if self.metric.greater_is_better else "<="

    def notes(self) -> list[str]:
        out = []
        if self.champion is not None and self.champion.version is None:
            out.append(f"no version holds the alias '{self.champion.alias}': the fixed baseline alone decides")
        if self.margin and self.margin.relative and self.reference == 0:
            out.append("a relative margin on a zero reference adds nothing")
        return out

    def as_dict(self) -> dict[str, Any]:
        champion = None
        if self.champion is not None:
            champion = {"alias": self.champion.alias, "version": self.champion.version, "value": self.champion.value}
        return {
            "name": self.metric.name,
            "value": self.value,
            "baseline": self.baseline,
            "greater_is_better": self.metric.greater_is_better,
            "direction": self.metric.direction,
            "champion": champion,
            "margin": self.margin.text if self.margin else None,
            "required": self.required,
            "delta": self.delta,
            "passed": self.passed,
            "notes": self.notes(),
        }


def evaluate_gate(
    metric: Metric,
    value: float,
    baseline: float,
    *,
    margin: Margin | None = None,
    champion: Champion | None = None,
) -> GateResult:
    return GateResult(metric, value, baseline, margin, champion)


class GateFailed(HokusaiError):
    """The measured metric does not meet the baseline (exit 1).

    ``gate`` is the gate's report and ``measured`` where the value came from: a refusal is reported
    like a registration's result, with status ``rejected`` and nothing registered.
    """

    exit_code = EXIT_GATE_FAILED
    title = "Metric below baseline"
    kind = "gate_failed"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        gate: GateResult | None = None,
        measured: MeasuredValue | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.gate = gate
        self.measured = measured


def enforce_gate(gate: GateResult, *, measured: MeasuredValue | None = None) -> None:
    """Raise GateFailed, carrying the report and where the value came from, unless ``gate`` passed."""
    if gate.passed:
        return
    against = f"the baseline {gate.baseline:g}"
    if gate.champion is not None and gate.champion.value is not None and gate.reference != gate.baseline:
        against = f"the champion '{gate.champion.alias}' (version {gate.champion.version}) at {gate.reference:g}"
    if gate.margin:
        against += f" by {gate.margin.text}"
    raise GateFailed(
        GATE_FAILED.format(
            metric=gate.metric.name,
            value=gate.value,
            against=against,
            direction=gate.metric.direction,
            op=gate.op,
            required=gate.required,
        ),
        hint=GATE_FAILED_HINT,
        gate=gate,
        measured=measured,
    )
