"""Write prediction and feedback logs the way inference does (PredictionRecord / FeedbackRecord lines),
scored by a real registered ONNX model, so monitor tests need no running service."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from services.monitor.store import MonitorStore
from shared.paths import Paths
from shared.registry import Registry
from tests.ai4i import LABEL, NUMERIC_FEATURES, encode_readings

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def day2(paths: Paths, name: str) -> pd.DataFrame:
    return pd.read_csv(paths.production_version_dir(paths.settings.data.versions.day2) / f"{name}.csv")


def prediction_lines(paths: Paths, df: pd.DataFrame, *, version: str = "v1", start: float = 0.0,
                     ids: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(prediction lines, feedback lines, request ids) for the rows of df, in order, one second apart."""
    model, _ = Registry(paths=paths).load_model(version)
    proba = model.predict_proba(encode_readings(df))
    ids = ids or [uuid.uuid4().hex for _ in range(len(df))]
    types = df["type"].tolist()
    nums = {c: df[c].tolist() for c in NUMERIC_FEATURES}
    labels = df[LABEL].astype(int).tolist()
    preds, fbs = [], []
    for i, rid in enumerate(ids):
        t = start + i
        inputs = {"type": types[i], **{c: nums[c][i] for c in NUMERIC_FEATURES}}
        p = float(proba[i])
        preds.append(json.dumps({"time": stamp(t), "request_id": rid, "model_version": version, "inputs": inputs,
                                 "probability": p, "label": int(p >= 0.5), "threshold": 0.5},
                                sort_keys=True, separators=(",", ":")))
        fbs.append(json.dumps({"time": stamp(t + 0.5), "request_id": rid, "label": labels[i]}, sort_keys=True, separators=(",", ":")))
    return preds, fbs, ids


def open_store(paths: Paths, features: list[str] | None = None) -> MonitorStore:
    """The monitor's store on this volume (created if there is none)."""
    return MonitorStore.open(paths.monitor_store, features=features or paths.settings.dataset.feature_names)


def append(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def write_traffic(paths: Paths, df: pd.DataFrame, *, version: str = "v1", instance: str = "i1", start: float = 0.0,
                  labels: bool = True) -> list[str]:
    preds, fbs, ids = prediction_lines(paths, df, version=version, start=start)
    append(paths.prediction_log_dir / f"{instance}.jsonl", preds)
    if labels:
        append(paths.feedback_log_dir / f"{instance}.jsonl", fbs)
    return ids


def raw_columns_equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return bool(np.allclose(a[NUMERIC_FEATURES].to_numpy(float), b[NUMERIC_FEATURES].to_numpy(float))
                and (a["type"].to_numpy() == b["type"].to_numpy()).all()
                and (a[LABEL].to_numpy() == b[LABEL].to_numpy()).all())
