"""Failure-class metrics from probabilities, and ONNX-vs-scikit-learn parity."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, *, threshold: float) -> dict:
    """accuracy, error rate, precision/recall/F1 of the failure class, ROC-AUC, log loss, confusion matrix."""
    y = np.asarray(y_true).astype(int).reshape(-1)
    p = np.asarray(proba, dtype=np.float64).reshape(-1)
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    n = len(y)
    accuracy = (tp + tn) / n if n else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    two_classes = n > 0 and 0 < y.sum() < n
    return {
        "rows": n,
        "positives": int(y.sum()),
        "threshold": float(threshold),
        "accuracy": float(accuracy),
        "error_rate": float(1 - accuracy) if n else 0.0,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": float(roc_auc_score(y, p)) if two_classes else None,
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])) if n else None,
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }


def parity(onnx_proba: np.ndarray, sklearn_proba: np.ndarray, *, threshold: float, tolerance: float) -> dict:
    """ONNX (float32) against scikit-learn (float64) on the same rows.

    ok: max |dp| within the tolerance and identical labels, except on rows whose probabilities lie within the
    tolerance of the threshold (`at_threshold`): there float rounding alone decides the side, and an unweighted
    forest puts probabilities exactly on thresholds such as 0.5.
    """
    a = np.asarray(onnx_proba, dtype=np.float64).reshape(-1)
    b = np.asarray(sklearn_proba, dtype=np.float64).reshape(-1)
    max_abs = float(np.max(np.abs(a - b))) if len(a) else 0.0
    same = (a >= threshold) == (b >= threshold)
    agree = int(same.sum())
    borderline = (np.abs(a - threshold) <= tolerance) & (np.abs(b - threshold) <= tolerance)
    return {
        "rows": len(a),
        "max_abs_diff": max_abs,
        "label_agreement": agree / len(a) if len(a) else 1.0,
        "label_disagreements": len(a) - agree,
        "at_threshold": int((~same & borderline).sum()),
        "tolerance": tolerance,
        "ok": max_abs <= tolerance and bool(np.all(same | borderline)),
    }
