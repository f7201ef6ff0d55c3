"""A candidate: a trained, exported and evaluated model not yet registered, and the record it will carry.

`Candidate.metadata` is every metadata.json field except the ones the registry sets; the gate's decision goes in
as `GateDecision.model_dump()` (the stored dict). `doc_string` is written into the ONNX file. Nothing is written
here.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import pandas as pd

from services.trainer.gate import GateDecision
from shared.config import Settings
from shared.features import LABEL, NUMERIC_FEATURES, ONNX_INPUT, ONNX_OUTPUT, RAW_COLUMNS, TYPE_CODES, engineered_names
from shared.gitinfo import git_info

LIBRARIES = ["scikit-learn", "onnx", "skl2onnx", "onnxruntime", "numpy", "pandas"]


@dataclass
class Candidate:
    """A trained, exported and evaluated model, not yet registered."""

    model_bytes: bytes
    metrics: dict
    production_metrics: dict | None
    parity: dict
    data_version: str
    data_files: list[dict]
    config: dict
    feature_schema: dict
    training_seconds: float
    estimator: Any = field(repr=False)

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
            "library_versions": library_versions(),
            "training_seconds": self.training_seconds,
            "trigger": trigger,
            "gate": None if gate is None else gate.model_dump(mode="json"),
        }


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib_metadata.version(lib)
        except importlib_metadata.PackageNotFoundError:
            out[lib] = "unknown"
    return out


def feature_schema(fit: pd.DataFrame, *, physical: bool) -> dict:
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

    return {
        "input": {
            "name": ONNX_INPUT,
            "dtype": "float32",
            "shape": [None, len(RAW_COLUMNS)],
            "columns": RAW_COLUMNS,
            "type_codes": TYPE_CODES,
        },
        "output": {
            "name": ONNX_OUTPUT,
            "dtype": "float32",
            "shape": [None, 1],
            "meaning": f"probability of {LABEL} = 1",
        },
        "types": {c: ("categorical" if c == "type" else "float") for c in RAW_COLUMNS},
        "engineered_in_graph": engineered_names(physical=physical),
        "ranges": {c: stats(fit[c]) for c in NUMERIC_FEATURES},
        "categories": {"type": {k: int((fit["type"] == k).sum()) for k in TYPE_CODES}},
        "rows": len(fit),
        "label": {"name": LABEL, "positive_rate": float(fit[LABEL].mean())},
    }


def doc_string(settings: Settings, data_version: str, files: list[dict]) -> str:
    """Written into the ONNX file: what it computes and from what (no time, so the bytes reproduce)."""
    physical = settings.features.physical
    return (
        f"Clockwork predictive-maintenance model. Input {ONNX_INPUT}: float32 [N, {len(RAW_COLUMNS)}] "
        f"({', '.join(RAW_COLUMNS)}; type coded {json.dumps(TYPE_CODES, sort_keys=True)}). Output {ONNX_OUTPUT}: "
        f"float32 [N, 1], probability of machine failure. Features computed in the graph: "
        f"{', '.join(engineered_names(physical=physical))}. "
        f"model_params: {json.dumps(settings.section('model_params'), sort_keys=True)}. "
        f"Data version {data_version}: " + "; ".join(f"{f['path']} sha256 {f['sha256']}" for f in files)
    )
