"""A candidate: a trained, exported and evaluated model not yet registered, and the record it will carry.

`Candidate.metadata` is every metadata.json field except the ones the registry sets; the gate's decision goes in
as `GateDecision.model_dump()` (the stored dict), the threshold decision as `decision_record` (`decision.threshold`
is the model's threshold: what inference and the monitor use unless deployment.threshold overrides it).
`doc_string` is written into the ONNX file. Nothing is written here.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import pandas as pd

from services.trainer.calibration import NONE, Calibration
from services.trainer.decision import ThresholdChoice
from services.trainer.gate import GateDecision
from shared.config import Settings
from shared.dataset import ONNX_INPUT, ONNX_OUTPUT, DatasetConfig
from shared.gitinfo import git_info

LIBRARIES = ["scikit-learn", "onnx", "skl2onnx", "onnxruntime", "numpy", "pandas"]


@dataclass
class Candidate:
    """A trained, exported and evaluated model, not yet registered."""

    model_bytes: bytes
    metrics: dict
    production_metrics: dict | None
    parity: dict
    decision: dict  # metadata.json `decision`: see decision_record
    data_version: str
    data_files: list[dict]
    config: dict
    feature_schema: dict
    training_seconds: float
    estimator: Any = field(repr=False)  # the refitted scikit-learn model (its scores before the calibration map)
    calibration: Calibration = field(default=NONE, repr=False)  # the map the ONNX file applies to them

    @property
    def threshold(self) -> float:
        """The model's decision threshold (metadata.json decision.threshold)."""
        return float(self.decision["threshold"])

    def metadata(self, *, trigger: dict, gate: GateDecision | None) -> dict[str, Any]:
        """Every metadata.json field except the ones the registry sets (version, created_at, sha256, size)."""
        return {
            "data_version": self.data_version,
            "data_files": self.data_files,
            "git": git_info(),
            "config": self.config,
            "feature_schema": self.feature_schema,
            "metrics": self.metrics,
            "production_metrics": self.production_metrics,
            "parity": self.parity,
            "decision": self.decision,
            "library_versions": library_versions(),
            "training_seconds": self.training_seconds,
            "trigger": trigger,
            "gate": None if gate is None else gate.model_dump(mode="json"),
        }


def decision_record(
    choice: ThresholdChoice, *, fit_rows: int, all_rows: int, validation_parity: dict, calibration: dict
) -> dict:
    """metadata.json `decision`: the threshold inference uses (unless deployment.threshold overrides it), how it was
    chosen, and which model each recorded figure belongs to."""
    return {
        **choice.model_dump(mode="json"),
        "selected_on": "validation hold-out, scored by the validation model (calibrated: decision.calibration)",
        "calibration": calibration,
        "models": {
            "validation": f"fitted on the first {fit_rows} training rows; scored the hold-out "
            f"({choice.rows} rows) to choose the threshold",
            "exported": f"the same estimator and seed refitted on all {all_rows} training rows: model.onnx",
        },
        "figures": {
            "metrics": "validation",
            "decision.expected_cost_per_1000": "validation",
            "decision.curve": "validation",
            "parity": "exported (on the hold-out rows)",
            "production_metrics": "exported",
            "calibration.holdout": "validation",
            "calibration.production": "exported",
        },
        "validation_parity": validation_parity,
    }


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib_metadata.version(lib)
        except importlib_metadata.PackageNotFoundError:
            out[lib] = "unknown"
    return out


def feature_schema(fit: pd.DataFrame, ds: DatasetConfig, *, derived: bool) -> dict:
    """What the model takes and returns, and what its training rows (all of them: the exported model's) looked like."""

    def stats(s: pd.Series) -> dict:
        v = s.to_numpy(dtype=np.float64)
        q = np.quantile(v, [0.01, 0.5, 0.99])
        return {
            "min": float(v.min()),
            "max": float(v.max()),
            "mean": float(v.mean()),
            "std": float(v.std()),
            "p01": float(q[0]),
            "p50": float(q[1]),
            "p99": float(q[2]),
        }

    label = ds.label.name
    return {
        "dataset": ds.name,
        "input": {
            "name": ONNX_INPUT,
            "dtype": "float32",
            "shape": [None, len(ds.feature_names)],
            "columns": ds.feature_names,
            "level_codes": {c.name: {lv: j for j, lv in enumerate(c.levels)} for c in ds.categorical},
        },
        "output": {
            "name": ONNX_OUTPUT,
            "dtype": "float32",
            "shape": [None, 1],
            "meaning": f"probability of {label} = failure ({ds.label.failure})",
        },
        "types": {c.name: c.kind for c in ds.features},
        "units": {c.name: c.unit for c in ds.numeric},
        "derived": {d.name: d.expr for d in ds.derived} if derived else {},
        "engineered_in_graph": ds.engineered_names(derived=derived),
        "ranges": {c.name: stats(fit[c.name]) for c in ds.numeric},
        "categories": {c.name: {lv: int((fit[c.name] == lv).sum()) for lv in c.levels} for c in ds.categorical},
        "rows": len(fit),
        "label": {"name": label, "positive_rate": float(fit[label].mean())},
    }


def doc_string(settings: Settings, data_version: str, files: list[dict]) -> str:
    """Written into the ONNX file: what it computes and from what (no time, so the bytes reproduce)."""
    ds = settings.dataset
    derived = settings.features.derived
    codes = {c.name: c.levels for c in ds.categorical}
    return (
        f"Clockwork predictive-maintenance model for data set {ds.name}. Input {ONNX_INPUT}: float32 "
        f"[N, {len(ds.feature_names)}] ({', '.join(ds.feature_names)}; categorical as the index of its level "
        f"{json.dumps(codes, sort_keys=True)}). Output {ONNX_OUTPUT}: float32 [N, 1], probability of "
        f"{ds.label.name} = failure. Features computed in the graph: "
        f"{', '.join(ds.engineered_names(derived=derived))}. "
        f"model_params: {json.dumps(settings.section('model_params'), sort_keys=True)}. "
        f"Data version {data_version}: " + "; ".join(f"{f['path']} sha256 {f['sha256']}" for f in files)
    )
