"""Models as users bring them: saved by MLflow's own flavors (the full ``mlflow`` of the test venv).

``save_mlflow_model(flavor, path)`` writes an MLflow model directory (``MLmodel``, environment files and
the flavor's payload) the way a training script does; ``load_prediction`` loads one back with pyfunc,
as a deploy service would, and predicts on a fixed input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

FLAVORS = ("sklearn", "pyfunc")
_INPUT = pd.DataFrame({"a": [0.1, 0.7, 0.4], "b": [1.0, 0.0, 0.5], "c": [0.3, 0.2, 0.9]})


def _pyfunc_model():
    import mlflow.pyfunc

    class ScaledSum(mlflow.pyfunc.PythonModel):
        """A model a user writes by hand: a weighted sum of the input columns."""

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
            return model_input.sum(axis=1) * 0.5

    return ScaledSum()


def save_mlflow_model(flavor: str, path: Path) -> Path:
    """Save a small model of ``flavor`` at ``path`` (which must not exist); return ``path``."""
    if flavor == "sklearn":
        import mlflow.sklearn
        from sklearn.linear_model import LogisticRegression

        rng = np.random.default_rng(7)
        features = rng.random((60, 3))
        labels = (features[:, 0] > 0.5).astype(int)
        estimator = LogisticRegression().fit(pd.DataFrame(features, columns=list(_INPUT.columns)), labels)
        # pinned requirements: MLflow would otherwise infer them by importing the model (seconds)
        mlflow.sklearn.save_model(estimator, str(path), pip_requirements=["scikit-learn"])
    elif flavor == "pyfunc":
        import mlflow.pyfunc

        mlflow.pyfunc.save_model(str(path), python_model=_pyfunc_model(), pip_requirements=["mlflow"])
    else:
        raise ValueError(f"unknown flavor {flavor!r}")
    return path


def save_multiplying_model(path: Path, *, factor: int) -> Path:
    """A pyfunc model that multiplies column ``x`` by ``factor``, saved at ``path`` with a
    ``metrics.json`` (accuracy 0.97); returns ``path``."""
    import mlflow.pyfunc

    class Multiplier(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
            return model_input["x"] * factor

    mlflow.pyfunc.save_model(str(path), python_model=Multiplier())
    (path / "metrics.json").write_text(json.dumps({"accuracy": 0.97}))
    return path


def load_prediction(model_uri: str) -> list[float]:
    """What a deploy service gets from the registered model: pyfunc's prediction on a fixed input."""
    import mlflow.pyfunc

    predicted = mlflow.pyfunc.load_model(model_uri).predict(_INPUT)
    return [float(value) for value in np.asarray(predicted).ravel()]
