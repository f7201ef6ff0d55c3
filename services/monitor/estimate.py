"""Label-free performance estimate (confidence-based): precision, recall, F1 and expected cost before labels arrive.

Each served prediction carries its (calibrated: decision.calibration) failure probability p and the served decision.
If p is calibrated, a flagged reading is a true alarm with probability p and a false one with 1 - p; an unflagged
reading is a missed failure with probability p and a true negative with 1 - p. Summed over a window these give the
expected confusion matrix, and from it precision, recall, F1 and the expected cost per 1,000 readings
(decision.cost_missed_failure, decision.cost_false_alarm).

Per model version the report carries (`VersionEstimate`):
- `unlabelled`: the estimate on its most recent `monitoring.estimate.window` predictions still waiting for a label;
- `labelled`: on its most recent `monitoring.estimate.window` labelled rows, the same estimate made from their
  probabilities alone beside the realized figures from their labels, and the absolute error of each estimate: how
  far the label-free figure would have been off.
The estimate is only as good as the calibration: a drift that changes how often a given probability is right (a
sensor reading off, a new failure mode the model scores low) is invisible to it; the realized figures show that
once labels arrive, and each estimate carries a `caveat` naming the drift checks that fired in the same cycle.
Reads the store (one query on its `pending` table, the windows of the snapshot); writes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from services.monitor.rows import WindowRow
from shared.config import Settings

FIGURES = ("precision", "recall", "f1", "expected_cost_per_1000")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Confusion(_Model):
    """Counts of the failure class (expected counts when estimated: fractions)."""

    tp: float
    fp: float
    fn: float
    tn: float


class Figures(_Model):
    rows: int
    precision: float | None  # None where undefined (nothing flagged, no failure)
    recall: float | None
    f1: float | None
    expected_cost_per_1000: float
    confusion: Confusion


class LabelledEstimate(_Model):
    """The label-free estimate on labelled rows beside what their labels say, and |estimate - realized|."""

    estimated: Figures
    realized: Figures
    abs_error: dict[str, float | None]


class VersionEstimate(_Model):
    version: str
    window: int  # monitoring.estimate.window
    unlabelled: Figures | None  # None: no prediction of this version waits for its label
    labelled: LabelledEstimate | None  # None: no labelled row yet
    caveat: str | None = None  # set when drift checks fired this cycle: the estimate's assumption may not hold


def figures(confusion: Confusion, *, rows: int, settings: Settings) -> Figures:
    """Precision, recall, F1 and cost per 1,000 readings of a (possibly expected) confusion matrix."""
    tp, fp, fn = confusion.tp, confusion.fp, confusion.fn
    precision = tp / (tp + fp) if tp + fp > 0 else None
    recall = tp / (tp + fn) if tp + fn > 0 else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    d = settings.decision
    cost = 1000.0 * (d.cost_missed_failure * fn + d.cost_false_alarm * fp) / rows if rows else 0.0
    return Figures(
        rows=rows, precision=precision, recall=recall, f1=f1, expected_cost_per_1000=cost, confusion=confusion
    )


def estimated_confusion(probability: np.ndarray, predicted: np.ndarray) -> Confusion:
    """The expected confusion matrix of served decisions whose calibrated failure probabilities are `probability`."""
    p = np.clip(np.asarray(probability, dtype=np.float64).reshape(-1), 0.0, 1.0)
    flagged = np.asarray(predicted).astype(bool).reshape(-1)
    return Confusion(
        tp=float(p[flagged].sum()),
        fp=float((1.0 - p[flagged]).sum()),
        fn=float(p[~flagged].sum()),
        tn=float((1.0 - p[~flagged]).sum()),
    )


def realized_confusion(label: np.ndarray, predicted: np.ndarray) -> Confusion:
    y = np.asarray(label).astype(bool).reshape(-1)
    flagged = np.asarray(predicted).astype(bool).reshape(-1)
    return Confusion(
        tp=float((flagged & y).sum()),
        fp=float((flagged & ~y).sum()),
        fn=float((~flagged & y).sum()),
        tn=float((~flagged & ~y).sum()),
    )


def estimate(probability: np.ndarray, predicted: np.ndarray, *, settings: Settings) -> Figures:
    return figures(estimated_confusion(probability, predicted), rows=len(np.asarray(predicted)), settings=settings)


def compare(
    label: np.ndarray, probability: np.ndarray, predicted: np.ndarray, *, settings: Settings
) -> LabelledEstimate:
    """The label-free estimate of these rows beside their realized figures."""
    est = estimate(probability, predicted, settings=settings)
    real = figures(realized_confusion(label, predicted), rows=len(np.asarray(label)), settings=settings)
    return LabelledEstimate(estimated=est, realized=real, abs_error=abs_errors(est, real))


def abs_errors(estimated: Figures, realized: Figures) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in FIGURES:
        a, b = getattr(estimated, name), getattr(realized, name)
        out[name] = None if a is None or b is None else abs(a - b)
    return out


def recent_pending(conn: sqlite3.Connection, *, window: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per model version, (probability, predicted) of its most recent `window` predictions waiting for a label
    (arrival order: the store's `pending.seq`)."""
    rows = conn.execute(
        "SELECT model_version, probability, predicted FROM (SELECT model_version, probability, predicted, "
        "ROW_NUMBER() OVER (PARTITION BY model_version ORDER BY seq DESC) AS newest FROM pending) "
        "WHERE newest <= ? ORDER BY model_version",
        (window,),
    ).fetchall()
    out: dict[str, tuple[list[float], list[int]]] = {}
    for version, p, y in rows:
        probs, flags = out.setdefault(version, ([], []))
        probs.append(p)
        flags.append(y)
    return {v: (np.asarray(p, dtype=np.float64), np.asarray(y, dtype=int)) for v, (p, y) in out.items()}


def version_estimates(
    conn: sqlite3.Connection,
    windows: Mapping[str, Sequence[WindowRow]],
    *,
    settings: Settings,
    drift_fired: Sequence[str] = (),
) -> dict[str, VersionEstimate]:
    """The report's `estimate`: per model version with waiting predictions or labelled rows (see the module doc).
    `drift_fired`: the drift checks that fired this cycle; named in each estimate's caveat."""
    size = settings.monitoring.estimate.window
    caveat = None
    if drift_fired:
        caveat = (
            f"drift fired ({', '.join(drift_fired)}): the estimate assumes a reading's failure probability is what "
            "the model learned; a drifted (or mis-measured) input breaks that, so trust the realized figures"
        )
    pending = recent_pending(conn, window=size)
    out: dict[str, VersionEstimate] = {}
    for version in sorted(set(pending) | set(windows)):
        unlabelled = None
        if version in pending:
            probs, flags = pending[version]
            unlabelled = estimate(probs, flags, settings=settings)
        rows = sorted(windows.get(version, []), key=lambda r: r.time)[-size:]
        labelled = None
        if rows:
            labelled = compare(
                np.array([r.label for r in rows]),
                np.array([r.probability for r in rows]),
                np.array([r.predicted for r in rows]),
                settings=settings,
            )
        out[version] = VersionEstimate(
            version=version, window=size, unlabelled=unlabelled, labelled=labelled, caveat=caveat
        )
    return out
