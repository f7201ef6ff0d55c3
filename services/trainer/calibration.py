"""Probability calibration: a map fitted on held-out scores, run inside the ONNX graph, and how well it calibrates.

`decision.calibration` picks the map: none | sigmoid (Platt: 1 / (1 + exp(a*p + b))) | isotonic (monotone, piecewise
linear between the fitted thresholds, clipped at the ends). The map is fitted by scikit-learn's
CalibratedClassifierCV on a frozen estimator (`fit_calibration`) on the scores of the VALIDATION model on the
chronological hold-out it never saw; the trainer then keeps the same map when it refits the forest on all rows.
Fitting it on the refitted forest's own scores would be leakage: a forest scores its training rows near 0 and 1.

In the ONNX file the map is a few nodes after the class-1 column (`calibration_nodes`, placed by export.tail_graph):
sigmoid as Mul/Add/Neg/Sigmoid, isotonic as y0 + sum_i slope_i * min(max(p - x_i, 0), x_{i+1} - x_i), which is
numpy.interp over the thresholds (what IsotonicRegression.predict computes). skl2onnx's own CalibratedClassifierCV
converter is not used: it does not accept sklearn's FrozenEstimator, and its isotonic graph takes the nearest
threshold's value instead of interpolating (max |dp| 0.16 against predict_proba on a small forest here).

`calibration_quality` gives the Brier score, the expected calibration error (equal-width bins) and the reliability
table of probabilities against labels. Nothing here reads or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

Method = Literal["none", "sigmoid", "isotonic"]
ECE_BINS = 10


class _Scores(ClassifierMixin, BaseEstimator):
    """A 'classifier' whose input is already its class-1 score: lets CalibratedClassifierCV fit a map on scores."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Scores:
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = np.asarray(x, dtype=np.float64).reshape(-1)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.predict_proba(x)[:, 1] >= 0.5).astype(int)


@dataclass(frozen=True)
class Calibration:
    """A fitted map from the model's class-1 score to a calibrated probability (identity for `none`)."""

    method: Method
    params: dict[str, Any]  # sigmoid: {a, b}; isotonic: {x, y}; none: {}
    _model: Any = field(default=None, repr=False, compare=False)  # the fitted CalibratedClassifierCV

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """scikit-learn's calibrated probability of these class-1 scores (float64): the parity reference."""
        p = np.asarray(scores, dtype=np.float64).reshape(-1)
        if self.method == "none":
            return p
        return self._model.predict_proba(p.reshape(-1, 1))[:, 1]

    def record(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params}


NONE = Calibration(method="none", params={})


def fit_calibration(method: Method, scores: np.ndarray, y: np.ndarray) -> Calibration:
    """Fit `method` on held-out (score, label) pairs with CalibratedClassifierCV on a frozen score model."""
    if method == "none":
        return NONE
    p = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    model = CalibratedClassifierCV(FrozenEstimator(_Scores().fit(p, y)), method=method)
    model.fit(p, np.asarray(y).astype(int).reshape(-1))
    fitted = model.calibrated_classifiers_[0].calibrators[0]
    if method == "sigmoid":
        params: dict[str, Any] = {"a": float(fitted.a_), "b": float(fitted.b_)}
    else:
        params = {"x": [float(v) for v in fitted.X_thresholds_], "y": [float(v) for v in fitted.y_thresholds_]}
    return Calibration(method=method, params=params, _model=model)


def _const(name: str, values: Any) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name=name)


def calibration_nodes(cal: Calibration, source: str, out: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """ONNX nodes mapping the [N, 1] float32 score `source` to the calibrated probability `out` (names cw_cal_*)."""
    if cal.method == "none":
        return [helper.make_node("Identity", [source], [out], name="cw_cal_identity")], []
    if cal.method == "sigmoid":
        # sklearn: expit(-(a * p + b))
        inits = [_const("cw_cal_a", cal.params["a"]), _const("cw_cal_b", cal.params["b"])]
        nodes = [
            helper.make_node("Mul", [source, "cw_cal_a"], ["cw_cal_ap"], name="cw_cal_ap"),
            helper.make_node("Add", ["cw_cal_ap", "cw_cal_b"], ["cw_cal_apb"], name="cw_cal_apb"),
            helper.make_node("Neg", ["cw_cal_apb"], ["cw_cal_neg"], name="cw_cal_neg"),
            helper.make_node("Sigmoid", ["cw_cal_neg"], [out], name="cw_cal_sigmoid"),
        ]
        return nodes, inits
    x = np.asarray(cal.params["x"], dtype=np.float64)
    y = np.asarray(cal.params["y"], dtype=np.float64)
    if len(x) == 1:  # a constant map
        inits = [_const("cw_cal_zero", [0.0]), _const("cw_cal_y0", [y[0]])]
        nodes = [
            helper.make_node("Mul", [source, "cw_cal_zero"], ["cw_cal_z"], name="cw_cal_z"),
            helper.make_node("Add", ["cw_cal_z", "cw_cal_y0"], [out], name="cw_cal_const"),
        ]
        return nodes, inits
    width = np.diff(x)
    slope = np.diff(y) / width
    inits = [
        _const("cw_cal_x", x[:-1]),
        _const("cw_cal_w", width),
        _const("cw_cal_slope", slope),
        _const("cw_cal_zero", 0.0),
        _const("cw_cal_y0", [y[0]]),
        numpy_helper.from_array(np.asarray([1], dtype=np.int64), name="cw_cal_axis"),
    ]
    nodes = [
        helper.make_node("Sub", [source, "cw_cal_x"], ["cw_cal_dx"], name="cw_cal_dx"),  # [N, K]
        helper.make_node("Max", ["cw_cal_dx", "cw_cal_zero"], ["cw_cal_lo"], name="cw_cal_lo"),
        helper.make_node("Min", ["cw_cal_lo", "cw_cal_w"], ["cw_cal_seg"], name="cw_cal_seg"),
        helper.make_node("Mul", ["cw_cal_seg", "cw_cal_slope"], ["cw_cal_rise"], name="cw_cal_rise"),
        helper.make_node("ReduceSum", ["cw_cal_rise", "cw_cal_axis"], ["cw_cal_sum"], keepdims=1, name="cw_cal_sum"),
        helper.make_node("Add", ["cw_cal_sum", "cw_cal_y0"], [out], name="cw_cal_isotonic"),
    ]
    return nodes, inits


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    return float(np.mean((p - y) ** 2)) if len(y) else 0.0


def reliability(y: np.ndarray, p: np.ndarray, *, bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Equal-width probability bins: rows, mean probability and observed failure rate in each (empty ones too)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        table.append(
            {
                "low": round(b / bins, 4),
                "high": round((b + 1) / bins, 4),
                "rows": n,
                "mean_probability": float(p[m].mean()) if n else None,
                "observed_rate": float(y[m].mean()) if n else None,
            }
        )
    return table


def ece(y: np.ndarray, p: np.ndarray, *, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the row-weighted mean |observed rate - mean probability| over equal-width bins."""
    table = reliability(y, p, bins=bins)
    n = sum(r["rows"] for r in table)
    if not n:
        return 0.0
    return float(sum(r["rows"] * abs(r["observed_rate"] - r["mean_probability"]) for r in table if r["rows"]) / n)


def calibration_quality(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    return {"rows": int(len(np.asarray(y).reshape(-1))), "brier": brier(y, p), "ece": ece(y, p), "bins": ECE_BINS}


def calibration_record(
    cal: Calibration,
    *,
    holdout: tuple[np.ndarray, np.ndarray, np.ndarray],
    production: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> dict[str, Any]:
    """metadata.json `decision.calibration`: the map, and (labels, raw scores, calibrated probabilities) judged on the
    hold-out (the validation model; in-sample for the map, which was fitted there) and on the production rows (the
    exported model; out-of-sample for both), each before and after the map."""

    def judged(y: np.ndarray, before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
        return {
            "before": calibration_quality(y, before),
            "after": calibration_quality(y, after),
            "reliability_before": reliability(y, before),
            "reliability_after": reliability(y, after),
        }

    y_val = np.asarray(holdout[0]).reshape(-1)
    return {
        **cal.record(),
        "fitted_on": f"the validation model's scores on the hold-out ({len(y_val)} rows, {int(y_val.sum())} failures), "
        "kept unchanged for the refitted model",
        "holdout": {**judged(*holdout), "note": "validation model; the map was fitted on these rows (in-sample)"},
        "production": None if production is None else {**judged(*production), "note": "exported model"},
    }
