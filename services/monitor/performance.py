"""Production performance per model version on its window of labelled rows, against training.

The window is the last `monitoring.window_size` labelled predictions the version served. Metrics are
those of the failure class (accuracy hides everything here: "no failure" always scores about 98%).
The result is a typed `VersionPerformance` (part of the monitor's report).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from services.monitor.rows import Window, WindowRow
from shared.config import Settings

METRICS = ("error_rate", "precision", "recall", "f1", "accuracy")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VersionCountsLike(Protocol):
    predictions: int
    labelled: int


class Metrics(_Model):
    """Failure-class metrics (None where undefined: no rows, or not in the training metadata)."""

    error_rate: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    accuracy: float | None = None


class WindowMetrics(Metrics):
    confusion_matrix: list[list[int]] | None = None
    positives: int = 0
    predicted_positives: int = 0


class LabelCoverage(_Model):
    predictions: int
    labelled: int
    pending: int
    coverage: float | None


class PerformanceCheck(_Model):
    """One performance threshold on one version: the figures compared and whether it fired."""

    metric: str
    production: float | None
    training: float | None
    rows: int
    min_labelled: int
    threshold_key: str  # e.g. monitoring.thresholds.f1_drop
    amount: float
    fired: bool = False
    status: Literal["ok", "fired", "too_few_labels", "no_training_metric"]
    limit: float | None = None


class VersionPerformance(_Model):
    version: str
    window: Window
    production: WindowMetrics
    training: Metrics | None
    label_coverage: LabelCoverage
    checks: dict[str, PerformanceCheck]
    delta: dict[str, float | None]  # production - training, per metric


def window_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> WindowMetrics:
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if len(y_true) == 0:
        return WindowMetrics()
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=[1], average=None, zero_division=0
    )
    accuracy = float((y_true == y_pred).mean())
    return WindowMetrics(
        error_rate=1.0 - accuracy,
        precision=float(precision[0]),
        recall=float(recall[0]),
        f1=float(f1[0]),
        accuracy=accuracy,
        confusion_matrix=confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        positives=int(y_true.sum()),
        predicted_positives=int(y_pred.sum()),
    )


def training_metrics(metadata_metrics: Mapping[str, Any] | None) -> Metrics | None:
    """The failure-class metrics of a version's metadata.json (those it has), None if it has none."""
    if not metadata_metrics:
        return None
    return Metrics(**{m: metadata_metrics[m] for m in METRICS if m in metadata_metrics})


def version_performance(
    *,
    version: str,
    rows: Sequence[WindowRow],
    counts: VersionCountsLike,
    pending: int,
    training: Metrics | None,
    settings: Settings,
) -> VersionPerformance:
    """Window metrics, label coverage and the two performance checks for one model version (rows in join order)."""
    mon = settings.monitoring
    window = sorted(rows, key=lambda r: r.time)[-mon.window_size :]
    y_true = np.array([r.label for r in window], dtype=int)
    y_pred = np.array([r.predicted for r in window], dtype=int)
    production = window_metrics(y_true, y_pred)
    predictions, labelled = counts.predictions, counts.labelled
    return VersionPerformance(
        version=version,
        window=Window(
            rows=len(window),
            size=mon.window_size,
            first_time=window[0].time if window else None,
            last_time=window[-1].time if window else None,
        ),
        production=production,
        training=training,
        label_coverage=LabelCoverage(
            predictions=predictions,
            labelled=labelled,
            pending=pending,
            coverage=labelled / predictions if predictions else None,
        ),
        checks=performance_checks(production=production, training=training, rows=len(window), settings=settings),
        delta={
            m: _diff(getattr(production, m), getattr(training, m) if training else None)
            for m in ("error_rate", "precision", "recall", "f1")
        },
    )


def performance_checks(
    *, production: Metrics, training: Metrics | None, rows: int, settings: Settings
) -> dict[str, PerformanceCheck]:
    """{"f1": ..., "error_rate": ...}: each with fired, status and the figures compared."""
    t = settings.monitoring.thresholds
    min_labelled = settings.monitoring.min_labelled
    checks = {}
    specs = {
        "f1": ("below", "f1_drop", t.f1_drop),
        "error_rate": ("above", "error_rate_increase", t.error_rate_increase),
    }
    for metric, (direction, key, amount) in specs.items():
        train_value = getattr(training, metric) if training else None
        prod_value = getattr(production, metric)
        check = PerformanceCheck(
            metric=metric,
            production=prod_value,
            training=train_value,
            rows=rows,
            min_labelled=min_labelled,
            threshold_key=f"monitoring.thresholds.{key}",
            amount=amount,
            status="no_training_metric",
        )
        if train_value is None:
            pass
        elif rows < min_labelled or prod_value is None:
            check.status = "too_few_labels"
        else:
            limit = train_value - amount if direction == "below" else train_value + amount
            fired = prod_value < limit if direction == "below" else prod_value > limit
            check.limit, check.fired, check.status = limit, bool(fired), "fired" if fired else "ok"
        checks[metric] = check
    return checks


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    d = float(a) - float(b)
    return d if math.isfinite(d) else None
