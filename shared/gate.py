"""The promotion gate: a candidate replaces the serving model only if it is measurably better.

Both models run (their ONNX files, through shared.onnx_model) on the same recent labelled production
window, which the candidate never trained on, at the serving threshold (deployment.threshold). The
candidate is promoted when its `monitoring.gate.metric` (F1, recall or precision of the failure class)
is at least the serving model's plus `monitoring.gate.margin`, and `monitoring.gate.auto_promote` is
true. Otherwise it stays registered and the pin does not move. The returned dict is stored as `gate`
in the candidate's metadata.json, so every decision can be explained from the disk.

The retrain worker calls `decide`; the serving version is the pin in config.yaml, read fresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from shared.atomic import sha256_bytes
from shared.config import Settings
from shared.errors import DataValidationError, NotFoundError
from shared.features import LABEL, RAW_COLUMNS, encode_readings
from shared.paths import Paths
from shared.pin import pinned_version
from shared.registry import Registry
from shared.schemas import utc_now

log = logging.getLogger(__name__)


class Scorer(Protocol):
    def predict_proba(self, readings: np.ndarray) -> np.ndarray: ...


# model bytes, name -> something with predict_proba(readings [N, 6]) -> [N]
ScorerFactory = Callable[..., Scorer]


def _default_scorer(model_bytes: bytes, *, name: str) -> Scorer:
    from shared.onnx_model import load_session

    return load_session(model_bytes, name=name)


def score(y_true: np.ndarray, proba: np.ndarray, *, threshold: float) -> dict:
    """Failure-class metrics of one model on the window."""
    y = np.asarray(y_true, dtype=int)
    pred = (np.asarray(proba, dtype=np.float64) >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, labels=[1], average=None, zero_division=0)
    accuracy = float((y == pred).mean()) if len(y) else None
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    return {
        "f1": float(f1[0]),
        "precision": float(precision[0]),
        "recall": float(recall[0]),
        "accuracy": accuracy,
        "error_rate": None if accuracy is None else 1.0 - accuracy,
        "confusion_matrix": {"tn": len(y) - tp - fp - fn, "fp": fp, "fn": fn, "tp": tp},
    }


def window_summary(window: pd.DataFrame) -> dict:
    out: dict[str, Any] = {
        "rows": int(len(window)),
        "positives": int(window[LABEL].sum()) if len(window) else 0,
        "first_time": None,
        "last_time": None,
    }
    if len(window) and "time" in window:
        out["first_time"], out["last_time"] = str(window["time"].min()), str(window["time"].max())
    if len(window) and "model_version" in window:
        out["served_by"] = {str(k): int(v) for k, v in window["model_version"].value_counts().sort_index().items()}
    return out


def decide(
    *,
    settings: Settings,
    paths: Paths,
    candidate_bytes: bytes,
    window: pd.DataFrame,
    scorer: ScorerFactory | None = None,
    candidate_version_hint: str | None = None,
) -> dict:
    """Score candidate and serving model on `window` (RAW_COLUMNS + machine_failure); promote or keep."""
    gate = settings.monitoring.gate
    threshold = settings.deployment.threshold
    make = scorer or _default_scorer
    missing = [c for c in RAW_COLUMNS + [LABEL] if c not in window.columns]
    if missing:
        raise DataValidationError(f"gate window lacks columns {missing}")
    result: dict[str, Any] = {
        "decision": "keep",
        "reason": "",
        "metric": gate.metric,
        "margin": gate.margin,
        "auto_promote": gate.auto_promote,
        "threshold": threshold,
        "decided_at": utc_now(),
        "window": window_summary(window),
        "candidate": {"version_hint": candidate_version_hint, "onnx_sha256": sha256_bytes(candidate_bytes)},
        "serving": {"version": None},
    }
    version = pinned_version(settings)
    result["serving"]["version"] = version
    if len(window) == 0:
        return _finish(result, better=False, reason="no labelled production window to compare on")
    if result["window"]["positives"] < gate.min_positives:
        return _finish(
            result,
            better=False,
            reason=(
                f"the window holds {result['window']['positives']} failure(s), fewer than monitoring.gate.min_positives "
                f"({gate.min_positives}): too few to judge a failure-class metric"
            ),
        )
    try:
        readings = encode_readings(window)
    except ValueError as e:
        raise DataValidationError(f"gate window: {e}") from e
    y = window[LABEL].to_numpy(dtype=int)
    result["candidate"] |= score(
        y, make(candidate_bytes, name="candidate").predict_proba(readings), threshold=threshold
    )
    try:
        serving_bytes, serving_md = Registry(paths=paths).load_verified(version)
    except NotFoundError as e:
        result["serving"]["error"] = str(e)
        return _finish(result, better=True, reason=f"no serving model to compare with ({e})")
    result["serving"]["onnx_sha256"] = serving_md["onnx_sha256"]
    result["serving"] |= score(
        y, make(serving_bytes, name=f"serving {version}").predict_proba(readings), threshold=threshold
    )

    cand, serv = result["candidate"][gate.metric], result["serving"][gate.metric]
    result["difference"] = cand - serv
    better = cand - serv >= gate.margin - 1e-12  # "at least the margin", immune to float rounding
    reason = (
        f"candidate {gate.metric} {cand:.4f} vs serving {version} {serv:.4f} on {len(window)} labelled rows "
        f"({result['window']['positives']} failures): {'at least' if better else 'less than'} the margin {gate.margin}"
    )
    return _finish(result, better=better, reason=reason)


def _finish(result: dict, *, better: bool, reason: str) -> dict:
    if better and result["auto_promote"]:
        result["decision"] = "promote"
    elif better:
        reason += "; monitoring.gate.auto_promote is false: registered, not promoted"
    result["reason"] = reason
    log.info("gate: %s (%s)", result["decision"], reason)
    return result
