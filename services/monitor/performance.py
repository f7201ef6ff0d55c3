"""Production performance per model version on its window of labelled rows, against training.

The window is the last `monitoring.window_size` labelled predictions the version served. Metrics are
those of the failure class (accuracy hides everything here: "no failure" always scores about 98%).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from shared.config import Settings

METRICS = ("error_rate", "precision", "recall", "f1", "accuracy")


def window_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if len(y_true) == 0:
        return {m: None for m in METRICS} | {"confusion_matrix": None, "positives": 0, "predicted_positives": 0}
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=[1], average=None, zero_division=0
    )
    accuracy = float((y_true == y_pred).mean())
    return {
        "error_rate": 1.0 - accuracy,
        "precision": float(precision[0]),
        "recall": float(recall[0]),
        "f1": float(f1[0]),
        "accuracy": accuracy,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        "positives": int(y_true.sum()),
        "predicted_positives": int(y_pred.sum()),
    }


def version_performance(
    *, version: str, rows: list[list], counts: dict, pending: int, training: dict | None, settings: Settings
) -> dict:
    """Window metrics, label coverage and the two performance checks for one model version.

    rows: [prediction time, true label, served label, probability] in join order.
    """
    mon = settings.monitoring
    window = sorted(rows, key=lambda r: r[0])[-mon.window_size :]
    y_true = np.array([r[1] for r in window], dtype=int)
    y_pred = np.array([r[2] for r in window], dtype=int)
    production = window_metrics(y_true, y_pred)
    predictions = counts.get("predictions", 0)
    labelled = counts.get("labelled", 0)
    out = {
        "version": version,
        "window": {
            "rows": len(window),
            "size": mon.window_size,
            "first_time": window[0][0] if window else None,
            "last_time": window[-1][0] if window else None,
        },
        "production": production,
        "training": {m: training.get(m) for m in METRICS if training and m in training} if training else None,
        "label_coverage": {
            "predictions": predictions,
            "labelled": labelled,
            "pending": pending,
            "coverage": labelled / predictions if predictions else None,
        },
        "checks": {},
    }
    out["delta"] = {
        m: _diff(production.get(m), (out["training"] or {}).get(m)) for m in ("error_rate", "precision", "recall", "f1")
    }
    out["checks"] = performance_checks(
        production=production, training=out["training"], rows=len(window), settings=settings
    )
    return out


def performance_checks(*, production: dict, training: dict | None, rows: int, settings: Settings) -> dict:
    """{"f1": {...}, "error_rate": {...}}: each with fired, status and the figures compared."""
    t = settings.monitoring.thresholds
    min_labelled = settings.monitoring.min_labelled
    checks = {}
    specs = {
        "f1": ("below", "f1_drop", t.f1_drop),
        "error_rate": ("above", "error_rate_increase", t.error_rate_increase),
    }
    for metric, (direction, key, amount) in specs.items():
        train_value = (training or {}).get(metric)
        prod_value = production.get(metric)
        check = {
            "metric": metric,
            "production": prod_value,
            "training": train_value,
            "rows": rows,
            "min_labelled": min_labelled,
            "threshold_key": f"monitoring.thresholds.{key}",
            "amount": amount,
            "fired": False,
        }
        if train_value is None:
            check["status"] = "no_training_metric"
        elif rows < min_labelled or prod_value is None:
            check["status"] = "too_few_labels"
        else:
            limit = train_value - amount if direction == "below" else train_value + amount
            fired = prod_value < limit if direction == "below" else prod_value > limit
            check |= {"limit": limit, "fired": bool(fired), "status": "fired" if fired else "ok"}
        checks[metric] = check
    return checks


def _diff(a, b):
    if a is None or b is None:
        return None
    d = float(a) - float(b)
    return d if math.isfinite(d) else None
