"""Decisions in money: the expected cost of a threshold, the trainer's threshold choice, the gate's paired bootstrap.

A reading's decision costs `decision.cost_missed_failure` when a failure goes unflagged, `decision.cost_false_alarm`
when a flag is raised on a normal reading, nothing otherwise (a caught failure's repair is paid either way). Costs
are per 1,000 readings so windows of any size compare.

`choose_threshold` evaluates every threshold of CANDIDATES on labelled probabilities (the trainer: the validation
hold-out, scored by the model fitted before the refit) and picks one by `decision.threshold_policy`: fixed
(training.threshold), max_f1 or min_cost. CANDIDATES is GRID (0.01 .. 0.99 by 0.01) with log-spaced points below it
(1e-4 .. 0.0089) and their mirror above it (0.9911 .. 0.9999), 20 a decade (each 12% from the next): a calibrated
model puts most readings below 0.01 (a sigmoid map squeezes the low scores there), where the grid alone cannot
reach. Log-spaced, not every gap between two hold-out probabilities: the exact optimum of a 30-failure hold-out sits
in the gap beside one reading and moves with it; a 12% step is the grid's own relative step near 0.1.
Ties: the thresholds sharing the best value form runs of neighbouring candidates; the longest run wins (equal
lengths: the higher run), and its middle point (the upper middle of an even run) is chosen: the threshold farthest
(in candidate steps) from a hold-out reading whose decision would flip, so the least sensitive to the refit moving
probabilities a little. Deterministic: same labels and probabilities, same choice; the candidates are rounded
constants, the same on every machine.

`paired_bootstrap` resamples the rows of one window (multinomial weights from a seeded generator, the same rows
for both models) and returns the improvement's interval. Nothing here reads or writes files.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from shared.config import DecisionConfig

Policy = Literal["fixed", "max_f1", "min_cost"]
Metric = Literal["expected_cost", "f1", "recall", "precision"]
GRID: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(1, 100))
PER_DECADE = 20  # log-spaced candidates per decade below 0.01 and above 0.99
# 1e-4 .. 0.00891 (3 significant digits), then GRID, then 1 - those: 0.99109 .. 0.9999. Strictly increasing.
_LOW: tuple[float, ...] = tuple(float(f"{10 ** (k / PER_DECADE - 4):.3g}") for k in range(2 * PER_DECADE))
CANDIDATES: tuple[float, ...] = _LOW + GRID + tuple(round(1 - t, 6) for t in reversed(_LOW))
TIE_RULE = "longest run of tied candidate thresholds (equal runs: the higher), its middle point"
_CHUNK = 250  # bootstrap samples drawn per block (bounds memory at _CHUNK x window rows)


class Costs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    missed_failure: float
    false_alarm: float

    @classmethod
    def from_config(cls, cfg: DecisionConfig) -> Costs:
        return cls(missed_failure=cfg.cost_missed_failure, false_alarm=cfg.cost_false_alarm)

    def per_1000(self, *, fn: float, fp: float, rows: float) -> float:
        return 1000.0 * (self.missed_failure * fn + self.false_alarm * fp) / rows if rows else 0.0


class ThresholdChoice(BaseModel):
    """The threshold a policy chose and what it is expected to cost (metadata.json `decision`, with more keys)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float
    policy: Policy
    costs: Costs
    rows: int
    positives: int
    expected_cost_per_1000: float
    precision: float
    recall: float
    f1: float
    tie_rule: str
    # (threshold, expected cost per 1,000 readings, precision, recall) at every CANDIDATES point (179)
    curve: list[tuple[float, float, float, float]]


def _counts(y: np.ndarray, p: np.ndarray, t: float) -> tuple[int, int, int]:
    pred = p >= t
    return int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum()), int((~pred & (y == 1)).sum())


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def expected_cost(y_true: np.ndarray, proba: np.ndarray, *, threshold: float, costs: Costs) -> float:
    """Expected cost per 1,000 readings of deciding `proba >= threshold` on these labelled rows."""
    y = np.asarray(y_true).astype(int).reshape(-1)
    _, fp, fn = _counts(y, np.asarray(proba, dtype=np.float64).reshape(-1), threshold)
    return costs.per_1000(fn=fn, fp=fp, rows=len(y))


def _middle_of_longest_run(indices: list[int]) -> int:
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    best = max(runs, key=lambda r: (len(r), r[0]))
    return best[len(best) // 2]


def choose_threshold(
    y_true: np.ndarray, proba: np.ndarray, *, policy: Policy, costs: Costs, fixed: float
) -> ThresholdChoice:
    """The threshold `policy` picks on these labelled probabilities, with the whole cost curve."""
    y = np.asarray(y_true).astype(int).reshape(-1)
    p = np.asarray(proba, dtype=np.float64).reshape(-1)
    n = len(y)
    points = []
    for t in CANDIDATES:
        tp, fp, fn = _counts(y, p, t)
        precision, recall, f1 = _prf(tp, fp, fn)
        points.append((t, costs.per_1000(fn=fn, fp=fp, rows=n), precision, recall, f1))
    if policy == "fixed":
        threshold = float(fixed)
    else:
        # Rounded so that float noise never splits a tie; cost is minimised, F1 maximised.
        score = [round(-c if policy == "min_cost" else f1, 9) for _, c, _, _, f1 in points]
        best = max(score)
        threshold = CANDIDATES[_middle_of_longest_run([i for i, s in enumerate(score) if s == best])]
    tp, fp, fn = _counts(y, p, threshold)
    precision, recall, f1 = _prf(tp, fp, fn)
    return ThresholdChoice(
        threshold=threshold,
        policy=policy,
        costs=costs,
        rows=n,
        positives=int(y.sum()),
        expected_cost_per_1000=costs.per_1000(fn=fn, fp=fp, rows=n),
        precision=precision,
        recall=recall,
        f1=f1,
        tie_rule=TIE_RULE if policy != "fixed" else "none: training.threshold",
        curve=[(t, round(c, 4), round(pr, 4), round(rc, 4)) for t, c, pr, rc, _ in points],
    )


class Interval(BaseModel):
    """The paired bootstrap's interval of the improvement (candidate better: positive)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: float
    high: float
    confidence: float
    samples: int
    seed: int


def _metric_of_counts(metric: Metric, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, rows: int, costs: Costs):
    if metric == "expected_cost":
        return 1000.0 * (costs.missed_failure * fn + costs.false_alarm * fp) / rows
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        if metric == "precision":
            return precision
        if metric == "recall":
            return recall
        return np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)


def improvement(metric: Metric, candidate: float, serving: float) -> float:
    """Candidate better is positive: lower cost, or higher F1/precision/recall."""
    return serving - candidate if metric == "expected_cost" else candidate - serving


def paired_bootstrap(
    y_true: np.ndarray,
    pred_candidate: np.ndarray,
    pred_serving: np.ndarray,
    *,
    metric: Metric,
    costs: Costs,
    samples: int,
    seed: int,
    confidence: float,
) -> Interval:
    """Both models' decisions on the same resampled rows; the percentile interval of the improvement."""
    y = np.asarray(y_true).astype(int).reshape(-1)
    n = len(y)
    rng = np.random.default_rng(seed)
    cols = []
    for pred in (np.asarray(pred_candidate).astype(bool), np.asarray(pred_serving).astype(bool)):
        cols += [pred & (y == 1), pred & (y == 0), ~pred & (y == 1)]
    indicators = np.stack(cols, axis=1).astype(np.float64)  # [n, 6]: tp, fp, fn of candidate, then serving
    diffs = []
    for start in range(0, samples, _CHUNK):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(_CHUNK, samples - start))
        c = weights @ indicators
        cand = _metric_of_counts(metric, c[:, 0], c[:, 1], c[:, 2], n, costs)
        serv = _metric_of_counts(metric, c[:, 3], c[:, 4], c[:, 5], n, costs)
        diffs.append(serv - cand if metric == "expected_cost" else cand - serv)
    d = np.concatenate(diffs)
    low, high = np.quantile(d, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(low=float(low), high=float(high), confidence=confidence, samples=samples, seed=seed)
