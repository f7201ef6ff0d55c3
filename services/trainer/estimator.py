"""The scikit-learn estimator that `model_params` in config.yaml names, and how it is fitted."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from shared.config import ModelParams


def build_estimator(mp: ModelParams) -> Any:
    """The scikit-learn estimator named by model_params (logistic regression gets a scaler in front)."""
    class_weight = None if mp.class_weight == "none" else mp.class_weight
    if mp.algorithm == "random_forest":
        return RandomForestClassifier(
            n_estimators=mp.n_estimators,
            max_depth=mp.max_depth,
            class_weight=class_weight,
            random_state=mp.random_state,
            n_jobs=1,
        )
    if mp.algorithm == "gradient_boosting":
        # No class_weight in GradientBoostingClassifier: weights go in as sample weights (see fit_kwargs).
        return GradientBoostingClassifier(
            n_estimators=mp.n_estimators,
            max_depth=mp.max_depth,
            learning_rate=mp.learning_rate,
            random_state=mp.random_state,
        )
    if mp.algorithm == "logistic_regression":
        lr_weight = None if class_weight is None else "balanced"
        return Pipeline(
            [
                ("scale", StandardScaler()),
                (
                    "classifier",
                    LogisticRegression(C=mp.c, class_weight=lr_weight, max_iter=5000, random_state=mp.random_state),
                ),
            ]
        )
    raise ValueError(f"unknown algorithm {mp.algorithm!r}")  # config validation makes this unreachable


def fit_kwargs(mp: ModelParams, y: np.ndarray) -> dict[str, Any]:
    if mp.algorithm == "gradient_boosting" and mp.class_weight != "none":
        return {"sample_weight": compute_sample_weight("balanced", y)}
    return {}
