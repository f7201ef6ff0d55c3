"""The promotion gate: a candidate replaces the serving model only if it is measurably better.

Both models run (their ONNX files, through shared.onnx_model) on the same recent labelled production
window, which the candidate never trained on, each at the threshold it would serve with: deployment.threshold
when config sets one, else the model's own (the candidate's from the trainer, the serving model's from its
metadata.json decision.threshold). `monitoring.gate.metric` scores them: expected_cost (per 1,000 readings at the
decision costs; lower is better) or F1, recall, precision of the failure class. A paired bootstrap
(`monitoring.gate.bootstrap`: the same resampled rows for both models, a seeded generator) gives the interval of
the candidate's improvement; the candidate is promoted when the interval's lower bound is at least
`monitoring.gate.margin`, the shadow does not veto it (services.trainer.shadow_veto: its expected cost on the
labelled logged traffic worse than the served predictions' by more than `monitoring.gate.shadow_cost_margin`) and
`monitoring.gate.auto_promote` is true. Otherwise it stays registered and the pin
does not move. Same candidate, serving model and window: the same decision and interval, run after run.

`decide` returns a `GateDecision`; `GateDecision.model_dump()` is what is stored as `gate` in the candidate's
metadata.json (and `GateDecision.model_validate` reads it back), so every decision can be explained from the
disk. The retrain job (services.trainer.retrain) is the caller; the serving version is the pin in config.yaml,
read fresh. Nothing is written here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer, model_validator
from sklearn.metrics import precision_recall_fscore_support

from services.trainer.decision import Costs, Interval, improvement, paired_bootstrap
from services.trainer.shadow_veto import ShadowCheck
from shared.atomic import sha256_bytes
from shared.config import Settings
from shared.errors import DataValidationError, NotFoundError
from shared.onnx_model import load_session
from shared.paths import Paths
from shared.pin import pinned_version
from shared.registry import Registry, model_threshold
from shared.schemas import utc_now

log = logging.getLogger(__name__)

Decision = Literal["promote", "keep"]
PROMOTE: Decision = "promote"
KEEP: Decision = "keep"
GateMetric = Literal["expected_cost", "f1", "recall", "precision"]  # monitoring.gate.metric


class Scorer(Protocol):
    def predict_proba(self, readings: np.ndarray) -> np.ndarray: ...


# model bytes, name -> something with predict_proba(readings [N, F]) -> [N]
ScorerFactory = Callable[..., Scorer]


def _default_scorer(model_bytes: bytes, *, name: str, features: list[str]) -> Scorer:
    return load_session(model_bytes, name=name, features=features)


class _Record(BaseModel):
    """Frozen; fields named in OMIT_WHEN_NONE are left out of the dump while unknown (the stored format)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    OMIT_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_unknown(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return self._known(handler(self))

    def _known(self, out: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in out.items() if not (k in self.OMIT_WHEN_NONE and v is None)}


class GateScores(_Record):
    """Failure-class metrics and expected cost of one model on the window, at the threshold it ran at."""

    f1: float
    precision: float
    recall: float
    accuracy: float | None
    error_rate: float | None
    confusion_matrix: dict[str, int]  # {"tn", "fp", "fn", "tp"}
    threshold: float | None = None  # None in decisions recorded before each model had its own
    expected_cost: float | None = None  # per 1,000 readings at the decision costs
    OMIT_WHEN_NONE = frozenset({"threshold", "expected_cost"})

    def metric(self, name: GateMetric) -> float:
        values = {
            "f1": self.f1,
            "precision": self.precision,
            "recall": self.recall,
            "expected_cost": self.expected_cost,
        }
        value = values[name]
        if value is None:
            raise ValueError(f"no {name} recorded in these scores")
        return value


class _Side(_Record):
    """One model's side of the decision; its scores, once known, are stored beside its other keys (flat)."""

    scores: GateScores | None = None

    @model_validator(mode="before")
    @classmethod
    def _nest_scores(cls, data: Any) -> Any:
        if isinstance(data, dict) and "scores" not in data and "f1" in data:
            data = dict(data)
            data["scores"] = {k: data.pop(k) for k in list(data) if k in GateScores.model_fields}
        return data

    @model_serializer(mode="wrap")
    def _omit_unknown(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = self._known(handler(self))
        scores = out.pop("scores", None) or {}
        return {**out, **scores}


class CandidateSide(_Side):
    version_hint: str | None  # the version it would get if registered now
    onnx_sha256: str
    OMIT_WHEN_NONE = frozenset({"scores"})


class ServingSide(_Side):
    version: str  # the pin, read when the gate ran
    error: str | None = None  # why there was no serving model to score
    onnx_sha256: str | None = None
    OMIT_WHEN_NONE = frozenset({"scores", "error", "onnx_sha256"})


class WindowSummary(_Record):
    rows: int
    positives: int
    first_time: str | None
    last_time: str | None
    served_by: dict[str, int] | None = None  # version -> rows, when the window says which model served each row
    OMIT_WHEN_NONE = frozenset({"served_by"})


class GateDecision(_Record):
    """The gate's decision with every figure it rests on (metadata.json `gate`)."""

    decision: Decision
    reason: str
    metric: GateMetric
    margin: float
    auto_promote: bool
    threshold: float | None  # deployment.threshold; None: each model at its own (in its scores)
    decided_at: str
    window: WindowSummary
    candidate: CandidateSide
    serving: ServingSide
    # The improvement on `metric` (candidate better: positive; serving cost minus candidate cost for expected_cost),
    # when both were scored, and its paired-bootstrap interval.
    difference: float | None = None
    interval: Interval | None = None
    costs: Costs | None = None
    shadow: ShadowCheck | None = None  # the shadow figures the decision used (None: decided without a shadow)
    OMIT_WHEN_NONE = frozenset({"difference", "interval", "costs", "shadow"})

    @property
    def promote(self) -> bool:
        return self.decision == PROMOTE


def score(y_true: np.ndarray, proba: np.ndarray, *, threshold: float, costs: Costs | None = None) -> GateScores:
    """Failure-class metrics (and, with costs, the expected cost) of one model on the window."""
    y = np.asarray(y_true, dtype=int)
    pred = (np.asarray(proba, dtype=np.float64) >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, labels=[1], average=None, zero_division=0)
    accuracy = float((y == pred).mean()) if len(y) else None
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    return GateScores(
        f1=float(f1[0]),
        precision=float(precision[0]),
        recall=float(recall[0]),
        accuracy=accuracy,
        error_rate=None if accuracy is None else 1.0 - accuracy,
        confusion_matrix={"tn": len(y) - tp - fp - fn, "fp": fp, "fn": fn, "tp": tp},
        threshold=threshold,
        expected_cost=None if costs is None else costs.per_1000(fn=fn, fp=fp, rows=len(y)),
    )


def window_summary(window: pd.DataFrame, label: str) -> WindowSummary:
    rows = int(len(window))
    first_time = last_time = None
    if rows and "time" in window:
        first_time, last_time = str(window["time"].min()), str(window["time"].max())
    served_by = None
    if rows and "model_version" in window:
        served_by = {str(k): int(v) for k, v in window["model_version"].value_counts().sort_index().items()}
    return WindowSummary(
        rows=rows,
        positives=int(window[label].sum()) if rows else 0,
        first_time=first_time,
        last_time=last_time,
        served_by=served_by,
    )


def decide(
    *,
    settings: Settings,
    paths: Paths,
    candidate_bytes: bytes,
    window: pd.DataFrame,
    scorer: ScorerFactory | None = None,
    candidate_version_hint: str | None = None,
    candidate_threshold: float | None = None,
    shadow: ShadowCheck | None = None,
) -> GateDecision:
    """Score candidate and serving model on `window` (the dataset's features and label); promote or keep.

    `candidate_threshold`: the candidate's own (the trainer's choice; default training.threshold), used unless
    deployment.threshold overrides it. `shadow`: the candidate on the logged traffic; its veto keeps a candidate
    the bootstrap would promote."""
    gate = settings.monitoring.gate
    costs = Costs.from_config(settings.decision)
    threshold = settings.deployment.threshold
    cand_threshold = (
        threshold
        if threshold is not None
        else (settings.training.threshold if candidate_threshold is None else candidate_threshold)
    )
    make = scorer or partial(_default_scorer, features=settings.dataset.feature_names)
    ds = settings.dataset
    missing = [c for c in ds.feature_names + [ds.label.name] if c not in window.columns]
    if missing:
        raise DataValidationError(f"gate window lacks columns {missing}")
    decided_at = utc_now()
    summary = window_summary(window, ds.label.name)
    candidate = CandidateSide(version_hint=candidate_version_hint, onnx_sha256=sha256_bytes(candidate_bytes))
    version = pinned_version(settings)
    serving = ServingSide(version=version)

    def finish(
        *, better: bool, reason: str, difference: float | None = None, interval: Interval | None = None
    ) -> GateDecision:
        if shadow is not None:
            reason += f"; shadow: {shadow.reason}"
            better = better and not shadow.vetoes
        promote = better and gate.auto_promote
        if better and not gate.auto_promote:
            reason += "; monitoring.gate.auto_promote is false: registered, not promoted"
        decision = GateDecision(
            decision=PROMOTE if promote else KEEP,
            reason=reason,
            metric=gate.metric,
            margin=gate.margin,
            auto_promote=gate.auto_promote,
            threshold=threshold,
            decided_at=decided_at,
            window=summary,
            candidate=candidate,
            serving=serving,
            difference=difference,
            interval=interval,
            costs=costs,
            shadow=shadow,
        )
        log.info("gate: %s (%s)", decision.decision, reason)
        return decision

    if summary.rows == 0:
        return finish(better=False, reason="no labelled production window to compare on")
    if summary.positives < gate.min_positives:
        return finish(
            better=False,
            reason=(
                f"the window holds {summary.positives} failure(s), fewer than monitoring.gate.min_positives "
                f"({gate.min_positives}): too few to judge a failure-class metric"
            ),
        )
    try:
        readings = ds.encode(window)
    except ValueError as e:
        raise DataValidationError(f"gate window: {e}") from e
    y = window[ds.label.name].to_numpy(dtype=int)
    cand_proba = make(candidate_bytes, name="candidate").predict_proba(readings)
    candidate_scores = score(y, cand_proba, threshold=cand_threshold, costs=costs)
    candidate = candidate.model_copy(update={"scores": candidate_scores})
    try:
        serving_bytes, serving_md = Registry(paths=paths).load_verified(version)
    except NotFoundError as e:
        serving = serving.model_copy(update={"error": str(e)})
        return finish(better=True, reason=f"no serving model to compare with ({e})")
    serv_threshold = threshold if threshold is not None else model_threshold(serving_md)
    serv_proba = make(serving_bytes, name=f"serving {version}").predict_proba(readings)
    serving_scores = score(y, serv_proba, threshold=serv_threshold, costs=costs)
    serving = serving.model_copy(update={"onnx_sha256": serving_md["onnx_sha256"], "scores": serving_scores})

    cand, serv = candidate_scores.metric(gate.metric), serving_scores.metric(gate.metric)
    boot = gate.bootstrap
    interval = paired_bootstrap(
        y,
        np.asarray(cand_proba, dtype=np.float64).reshape(-1) >= cand_threshold,
        np.asarray(serv_proba, dtype=np.float64).reshape(-1) >= serv_threshold,
        metric=gate.metric,
        costs=costs,
        samples=boot.samples,
        seed=boot.seed,
        confidence=boot.confidence,
    )
    better = interval.low >= gate.margin - 1e-12  # "at least the margin", immune to float rounding
    reason = (
        f"candidate {gate.metric} {cand:.4f} vs serving {version} {serv:.4f} on {summary.rows} labelled rows "
        f"({summary.positives} failures): improvement {improvement(gate.metric, cand, serv):.4f}, "
        f"{boot.confidence:.0%} interval [{interval.low:.4f}, {interval.high:.4f}]; its lower bound is "
        f"{'at least' if better else 'less than'} the margin {gate.margin}"
    )
    return finish(better=better, reason=reason, difference=improvement(gate.metric, cand, serv), interval=interval)
