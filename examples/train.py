"""Train a small, real model for the Hokusai example: logistic regression on synthetic x-ray data.

    python examples/train.py --out checkpoints/final
    hokusai-ml-platform model register --token-id XRAY --model-path checkpoints/final \
        --metric auroc --baseline 0.82

Standard library only (the action's image has no numpy). The data set is synthetic and seeded: each
row is a chest x-ray study summarised by five features, labelled by whether a finding (an opacity
needing follow-up) is present. 25% of the rows are held out; AUROC and accuracy on them go to
``metrics.json``, which ``model register`` reads by default.

The same seed writes byte-identical files, so re-running the workflow re-registers the same bytes:
a success that creates no new MLflow version and no second event.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# `python examples/train.py` puts this folder on sys.path, so the scoring code is shared with serving
from predict import predict, predict_proba, sigmoid

MODEL_FORMAT = "hokusai-example-logistic-regression/1"
MODEL_NAME = "xray-finding-logreg"
DEFAULT_OUT = Path(__file__).resolve().parent / "checkpoints" / "final"
FEATURE_NAMES = ("opacity_score", "patient_age", "lung_contrast", "cardiothoracic_ratio", "fever")
DEFAULTS = {
    "seed": 20240611,
    "rows": 2000,
    "test_fraction": 0.25,
    "prevalence": 0.3,
    "epochs": 80,
    "learning_rate": 1.0,
    "l2": 0.001,
    "threshold": 0.5,
}
METRIC_DIGITS = 6  # metrics.json is what the gate compares; six decimals are plenty for AUROC


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


def make_dataset(*, seed: int, rows: int, prevalence: float) -> list[tuple[dict[str, float], int]]:
    """Rows of (features, label). A positive study shifts every feature a little, opacity the most."""
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not cryptography
    data = []
    for _ in range(rows):
        y = int(rng.random() < prevalence)
        features = {
            "opacity_score": round(_clip(rng.gauss(0.35 + 0.20 * y, 0.15), 0.0, 1.0), 4),
            "patient_age": round(_clip(rng.gauss(52.0 + 8.0 * y, 15.0), 18.0, 95.0)),
            "lung_contrast": round(_clip(rng.gauss(0.60 - 0.08 * y, 0.12), 0.0, 1.0), 4),
            "cardiothoracic_ratio": round(_clip(rng.gauss(0.46 + 0.02 * y, 0.05), 0.3, 0.7), 4),
            "fever": int(rng.random() < 0.15 + 0.35 * y),
        }
        data.append((features, y))
    return data


def split(
    data: Sequence[tuple[dict[str, float], int]], *, seed: int, test_fraction: float
) -> tuple[list[tuple[dict[str, float], int]], list[tuple[dict[str, float], int]]]:
    """(train, test): a seeded shuffle, then the last ``test_fraction`` of it is held out."""
    order = list(range(len(data)))
    random.Random(seed + 1).shuffle(order)  # noqa: S311 - reproducible split, not cryptography
    n_test = round(len(data) * test_fraction)
    train = [data[i] for i in order[: len(data) - n_test]]
    test = [data[i] for i in order[len(data) - n_test :]]
    return train, test


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve by the Mann-Whitney rank statistic; tied scores share their mean rank."""
    ranked = sorted(range(len(scores)), key=scores.__getitem__)
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and scores[ranked[j + 1]] == scores[ranked[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1  # ranks are 1-based
        for k in range(i, j + 1):
            ranks[ranked[k]] = mean_rank
        i = j + 1
    positives = sum(labels)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUROC needs at least one positive and one negative label")
    rank_sum = sum(rank for rank, label in zip(ranks, labels, strict=True) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def fit(
    train: Sequence[tuple[dict[str, float], int]], *, epochs: int, learning_rate: float, l2: float
) -> dict[str, list[float] | float]:
    """Full-batch gradient descent on the mean log loss (+ L2), features standardised on the train set."""
    n = len(train)
    columns = [[float(features[name]) for features, _ in train] for name in FEATURE_NAMES]
    means = [sum(column) / n for column in columns]
    stds = [
        (sum((v - mean) ** 2 for v in column) / n) ** 0.5 or 1.0 for column, mean in zip(columns, means, strict=True)
    ]
    standardised = [
        [(column[i] - mean) / std for column, mean, std in zip(columns, means, stds, strict=True)] for i in range(n)
    ]
    labels = [label for _, label in train]
    weights = [0.0] * len(FEATURE_NAMES)
    bias = 0.0
    for _ in range(epochs):
        errors = [
            sigmoid(bias + sum(w * v for w, v in zip(weights, row, strict=True))) - label
            for row, label in zip(standardised, labels, strict=True)
        ]
        gradient = [
            sum(e * row[f] for e, row in zip(errors, standardised, strict=True)) / n + l2 * weights[f]
            for f in range(len(weights))
        ]
        weights = [w - learning_rate * g for w, g in zip(weights, gradient, strict=True)]
        bias -= learning_rate * sum(errors) / n
    return {"feature_means": means, "feature_stds": stds, "weights": weights, "bias": bias}


def _dump_json(data: object) -> str:
    # fixed key order and float repr (exact round trip): the same model always gives the same bytes
    return json.dumps(data, indent=2) + "\n"


MODEL_CARD = """\
# {name}

Example model for the Hokusai token workflow: logistic regression predicting whether a chest x-ray
study shows a finding that needs follow-up. **Trained on synthetic data; not for clinical use.**

| | |
|---|---|
| format | `{format}` (`model.json`; load with `examples/predict.py`) |
| features | {features} |
| training rows | {n_train} (seed {seed}) |
| held-out rows | {n_test} ({test_percent}% of {rows}) |
| held-out AUROC | {auroc} |
| held-out accuracy | {accuracy} (threshold {threshold}) |

Trained by `examples/train.py`: full-batch gradient descent ({epochs} epochs, learning rate
{learning_rate}, L2 {l2}) on standardised features. The same seed writes byte-identical files.

Register it (the gate reads `metrics.json` in this folder):

    hokusai-ml-platform model register --token-id XRAY --model-path {out_hint} --metric auroc --baseline 0.82
"""


def train_and_save(out: Path, config: dict[str, float | int]) -> dict[str, float]:
    """Train, evaluate on the held-out rows and write model.json, metrics.json and README.md to ``out``."""
    data = make_dataset(seed=config["seed"], rows=config["rows"], prevalence=config["prevalence"])
    train, test = split(data, seed=config["seed"], test_fraction=config["test_fraction"])
    fitted = fit(train, epochs=config["epochs"], learning_rate=config["learning_rate"], l2=config["l2"])
    model = {
        "format": MODEL_FORMAT,
        "name": MODEL_NAME,
        "feature_names": list(FEATURE_NAMES),
        **fitted,
        "threshold": config["threshold"],
        "training": {**config, "train_rows": len(train), "test_rows": len(test)},
    }
    test_rows = [features for features, _ in test]
    test_labels = [label for _, label in test]
    predicted = predict(model, test_rows)
    metrics = {
        "auroc": round(auroc(test_labels, predict_proba(model, test_rows)), METRIC_DIGITS),
        "accuracy": round(
            sum(p == y for p, y in zip(predicted, test_labels, strict=True)) / len(test_labels),
            METRIC_DIGITS,
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.json").write_text(_dump_json(model), encoding="utf-8")
    (out / "metrics.json").write_text(_dump_json(metrics), encoding="utf-8")
    card = MODEL_CARD.format(
        name=MODEL_NAME,
        format=MODEL_FORMAT,
        features=", ".join(f"`{name}`" for name in FEATURE_NAMES),
        n_train=len(train),
        n_test=len(test),
        test_percent=round(config["test_fraction"] * 100),
        out_hint="checkpoints/final",
        **{key: value for key, value in config.items() if key != "test_fraction"},
        **metrics,
    )
    (out / "README.md").write_text(card, encoding="utf-8")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train the example x-ray model and write model.json, metrics.json and README.md."
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: examples/checkpoints/final)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="data, split and training seed")
    parser.add_argument("--rows", type=int, default=DEFAULTS["rows"], help="rows to generate (25%% held out)")
    args = parser.parse_args(argv)
    if args.rows < 40:
        parser.error("--rows must be at least 40 so both classes appear in the held-out set")
    config = {**DEFAULTS, "seed": args.seed, "rows": args.rows}
    started = time.perf_counter()
    metrics = train_and_save(args.out, config)
    elapsed = time.perf_counter() - started
    print(
        f"wrote {args.out}: auroc={metrics['auroc']} accuracy={metrics['accuracy']} ({elapsed:.2f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
