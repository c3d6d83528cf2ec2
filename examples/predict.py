"""Load the model that ``train.py`` saved and score patients with it (standard library only).

    python examples/predict.py                                   # scores a built-in example patient
    python examples/predict.py --model examples/checkpoints/final \
        '{"opacity_score": 0.72, "patient_age": 67, "lung_contrast": 0.51,
          "cardiothoracic_ratio": 0.49, "fever": 1}'

``train.py`` computes its held-out metrics with ``predict_proba`` from this file, so what the metric
gate sees is exactly what serving computes.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "checkpoints" / "final"
MODEL_FILE = "model.json"
EXAMPLE_PATIENT = {
    "opacity_score": 0.72,
    "patient_age": 67,
    "lung_contrast": 0.51,
    "cardiothoracic_ratio": 0.49,
    "fever": 1,
}


def load_model(path: str | Path = DEFAULT_MODEL_DIR) -> dict[str, Any]:
    """Read ``model.json`` from a model directory (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def sigmoid(z: float) -> float:
    # split by sign so exp() never overflows
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def predict_proba(model: Mapping[str, Any], rows: Iterable[Mapping[str, float]]) -> list[float]:
    """Probability of the finding for each row (a mapping of feature name to value)."""
    names = model["feature_names"]
    means, stds, weights = model["feature_means"], model["feature_stds"], model["weights"]
    probabilities = []
    for row in rows:
        z = model["bias"]
        for name, mean, std, weight in zip(names, means, stds, weights, strict=True):
            z += weight * (float(row[name]) - mean) / std
        probabilities.append(sigmoid(z))
    return probabilities


def predict(model: Mapping[str, Any], rows: Iterable[Mapping[str, float]]) -> list[int]:
    """1 where the finding is predicted present (probability >= the model's threshold), else 0."""
    return [int(p >= model["threshold"]) for p in predict_proba(model, rows)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score one patient with the example x-ray model.")
    parser.add_argument("patient", nargs="?", help="JSON object of feature values (default: an example)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model directory or model.json")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    patient = json.loads(args.patient) if args.patient else EXAMPLE_PATIENT
    probability = predict_proba(model, [patient])[0]
    print(json.dumps({"probability": round(probability, 4), "finding": probability >= model["threshold"]}))


if __name__ == "__main__":
    main()
