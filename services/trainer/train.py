"""Train a candidate from config.yaml alone, evaluate it by running its ONNX file, register it.

    settings -> data version's train.csv (checked against the manifest)
             -> chronological hold-out (last training.validation_fraction of the rows by udi)
             -> features: shared.features.engineer(encode_readings(df)) -- the same arithmetic the
                ONNX front graph runs, so the scikit-learn object and the file see identical inputs
             -> fit (model_params) -> export ONNX -> metrics from onnxruntime on the hold-out
             -> parity with scikit-learn (max |dp| <= 1e-5, identical labels, or the model is refused)
             -> registry version vN with metadata.json and a model_metadata.log line

`train_candidate` stops before the registry (the retrain worker gates the candidate first);
`train_and_register` is what the CLI, the worker and other parts' tests call.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from services.trainer.evaluate import classification_metrics, parity
from services.trainer.export import export
from shared.config import ModelParams, Settings
from shared.datastore import DataStore
from shared.errors import DataValidationError, ExportError, NotFoundError
from shared.features import (
    LABEL,
    NUMERIC_FEATURES,
    ONNX_INPUT,
    ONNX_OUTPUT,
    RAW_COLUMNS,
    TYPE_CODES,
    assert_no_forbidden,
    encode_readings,
    engineer,
    engineered_names,
)
from shared.gitinfo import git_info
from shared.onnx_model import load_session
from shared.paths import Paths, check_data_version
from shared.registry import Registry

log = logging.getLogger(__name__)

PRODUCTION_FILE = "production.csv"
LIBRARIES = ["scikit-learn", "onnx", "skl2onnx", "onnxruntime", "numpy", "pandas"]
COMMAND_TRIGGER = {"kind": "command", "command": "python -m services.trainer train"}


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

    def metadata(self, *, trigger: dict, gate: dict | None) -> dict:
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
            "gate": gate,
        }


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib_metadata.version(lib)
        except importlib_metadata.PackageNotFoundError:
            out[lib] = "unknown"
    return out


# --- the model ------------------------------------------------------------------------------------
def build_estimator(mp: ModelParams):
    """The scikit-learn estimator named by model_params (logistic regression gets a scaler in front)."""
    class_weight = None if mp.class_weight == "none" else mp.class_weight
    if mp.algorithm == "random_forest":
        return RandomForestClassifier(
            n_estimators=mp.n_estimators,
            max_depth=mp.max_depth,
            class_weight=class_weight,
            random_state=mp.random_state,
            n_jobs=1,
        )
    if mp.algorithm == "gradient_boosting":
        # No class_weight in GradientBoostingClassifier: weights go in as sample weights (see fit_kwargs).
        return GradientBoostingClassifier(
            n_estimators=mp.n_estimators,
            max_depth=mp.max_depth,
            learning_rate=mp.learning_rate,
            random_state=mp.random_state,
        )
    if mp.algorithm == "logistic_regression":
        lr_weight = None if class_weight is None else "balanced"
        return Pipeline(
            [
                ("scale", StandardScaler()),
                (
                    "classifier",
                    LogisticRegression(C=mp.c, class_weight=lr_weight, max_iter=5000, random_state=mp.random_state),
                ),
            ]
        )
    raise ValueError(f"unknown algorithm {mp.algorithm!r}")  # config validation makes this unreachable


def fit_kwargs(mp: ModelParams, y: np.ndarray) -> dict:
    if mp.algorithm == "gradient_boosting" and mp.class_weight != "none":
        return {"sample_weight": compute_sample_weight("balanced", y)}
    return {}


# --- the data -------------------------------------------------------------------------------------
def chronological(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in time order: by udi where every row has one, else file order (retrain data appends newer rows)."""
    if "udi" in df.columns and df["udi"].notna().all():
        return df.sort_values("udi", kind="stable").reset_index(drop=True)
    return df.reset_index(drop=True)


def split_holdout(df: pd.DataFrame, fraction: float, *, where: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_val = int(round(len(df) * fraction))
    if n_val < 1 or len(df) - n_val < 2:
        raise DataValidationError(
            f"{where}: {len(df)} rows cannot be split with training.validation_fraction={fraction}"
        )
    return df.iloc[: len(df) - n_val].reset_index(drop=True), df.iloc[len(df) - n_val :].reset_index(drop=True)


def labels(df: pd.DataFrame, *, where: Path) -> np.ndarray:
    if LABEL not in df.columns:
        raise DataValidationError(f"{where}: label column {LABEL!r} missing")
    y = df[LABEL]
    if y.isna().any() or not y.isin([0, 1]).all():
        raise DataValidationError(f"{where}: {LABEL} must be 0/1 on every row")
    return y.to_numpy(dtype=np.int64)


def readings(df: pd.DataFrame, *, where: Path) -> np.ndarray:
    missing = [c for c in RAW_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(f"{where}: columns {missing} missing")
    if df[RAW_COLUMNS].isna().any().any():
        raise DataValidationError(f"{where}: missing values in {RAW_COLUMNS}")
    try:
        return encode_readings(df)
    except ValueError as e:
        raise DataValidationError(f"{where}: {e}") from e


def check_table(df: pd.DataFrame, *, where: Path) -> pd.DataFrame:
    """The columns and cell values training relies on, checked before anything is fitted: the first bad cell
    is named by its line in the file (the header is line 1), its column and what it holds. Returns df."""
    missing = [c for c in RAW_COLUMNS + [LABEL] if c not in df.columns]
    if missing:
        raise DataValidationError(f"{where}: columns {missing} missing")

    def fail(bad: pd.Series, col: str, why: str) -> None:
        i = int(np.flatnonzero(bad.to_numpy())[0])
        value = df[col].iloc[i]
        value = value.item() if isinstance(value, np.generic) else value
        more = f" ({int(bad.sum())} rows in all)" if bad.sum() > 1 else ""
        raise DataValidationError(f"{where}: line {i + 2}: column {col}: {why.format(value=repr(value))}{more}")

    for col in RAW_COLUMNS + [LABEL]:
        empty = df[col].isna()
        if empty.any():
            fail(empty, col, "no value")
    # udi orders the rows in time; rows appended by a retrain have none (NaN), but a value must be a number.
    for col in NUMERIC_FEATURES + [LABEL] + (["udi"] if "udi" in df.columns else []):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = df[col].notna() & ~np.isfinite(values.astype(np.float64))
        if bad.any():
            fail(bad, col, "{value} is not a finite number")
    bad = ~df["type"].isin(list(TYPE_CODES))
    if bad.any():
        fail(bad, "type", "{value} is not one of " + ", ".join(sorted(TYPE_CODES)))
    bad = ~pd.to_numeric(df[LABEL]).isin([0, 1])
    if bad.any():
        fail(bad, LABEL, "{value} is not 0 or 1")
    return df


def data_files(store: DataStore, data_version: str) -> list[dict]:
    latest: dict[str, Any] = {}
    for e in store.entries_for(data_version):
        latest[e.path] = e
    return [{"path": e.path, "sha256": e.sha256, "rows": e.rows} for e in latest.values()]


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
        f"{', '.join(engineered_names(physical=physical))}. model_params: {json.dumps(settings.section('model_params'), sort_keys=True)}. "
        f"Data version {data_version}: " + "; ".join(f"{f['path']} sha256 {f['sha256']}" for f in files)
    )


# --- training -------------------------------------------------------------------------------------
def train_candidate(settings: Settings, *, data_version: str) -> Candidate:
    """Fit, export and evaluate one model on `data_version`; nothing is written."""
    check_data_version(data_version)
    paths = Paths.from_settings(settings)
    store = DataStore(paths=paths)
    train_path = paths.train_file(data_version)
    if not train_path.is_file():
        raise NotFoundError(f"training data not found: {train_path} (data version {data_version}); run prep first")
    df = chronological(check_table(store.read_table(train_path), where=train_path))
    fit, val = split_holdout(df, settings.training.validation_fraction, where=train_path)
    physical = settings.features.physical
    mp = settings.model_params
    threshold = settings.training.threshold
    assert_no_forbidden(engineered_names(physical=physical))

    x_fit = engineer(readings(fit, where=train_path), physical=physical)
    y_fit = labels(fit, where=train_path)
    if len(np.unique(y_fit)) < 2:
        raise DataValidationError(f"{train_path}: the training part holds one class only")
    estimator = build_estimator(mp)
    t0 = time.perf_counter()
    estimator.fit(x_fit, y_fit, **fit_kwargs(mp, y_fit))
    training_seconds = time.perf_counter() - t0

    files = data_files(store, data_version)
    model_bytes = export(estimator, physical=physical, doc_string=doc_string(settings, data_version, files))
    model = load_session(model_bytes, name=f"candidate on {data_version}")

    # Metrics by running the ONNX file; parity against the scikit-learn object on the same rows.
    r_val = readings(val, where=train_path)
    y_val = labels(val, where=train_path)
    p_onnx = model.predict_proba(r_val)
    p_sk = estimator.predict_proba(engineer(r_val, physical=physical))[:, 1]
    metrics = classification_metrics(y_val, p_onnx, threshold=threshold)
    par = parity(p_onnx, p_sk, threshold=threshold, tolerance=settings.training.parity_tolerance)
    if not par["ok"]:
        raise ExportError(
            f"ONNX model disagrees with scikit-learn on {par['rows']} validation rows of {data_version}: "
            f"max |dp| {par['max_abs_diff']:.3g} (tolerance {settings.training.parity_tolerance}), {par['label_disagreements']} label(s) differ"
        )

    production_metrics = None
    prod_path = paths.data_version_dir(data_version) / PRODUCTION_FILE
    if prod_path.is_file():
        prod = check_table(store.read_table(prod_path), where=prod_path)
        production_metrics = classification_metrics(
            labels(prod, where=prod_path), model.predict_proba(readings(prod, where=prod_path)), threshold=threshold
        )
        production_metrics["file"] = store.rel(prod_path)

    log.info(
        "trained %s on %s (%d rows, %d held out) in %.2fs: val f1=%.4f precision=%.4f recall=%.4f; parity max|dp|=%.2g",
        mp.algorithm,
        data_version,
        len(fit),
        len(val),
        training_seconds,
        metrics["f1"],
        metrics["precision"],
        metrics["recall"],
        par["max_abs_diff"],
    )
    if production_metrics:
        log.info(
            "production rows %s: f1=%.4f precision=%.4f recall=%.4f",
            production_metrics["file"],
            production_metrics["f1"],
            production_metrics["precision"],
            production_metrics["recall"],
        )
    return Candidate(
        model_bytes=model_bytes,
        metrics=metrics,
        production_metrics=production_metrics,
        parity=par,
        data_version=data_version,
        data_files=files,
        config={
            "data_version": data_version,
            "features": settings.section("features"),
            "model_params": settings.section("model_params"),
            "training": settings.section("training"),
        },
        feature_schema=feature_schema(fit, physical=physical),
        training_seconds=round(training_seconds, 3),
        estimator=estimator,
    )


def train_and_register(
    settings: Settings,
    *,
    trigger: dict,
    data_version: str | None = None,
    gate_fn: Callable[[Candidate], dict | None] | None = None,
) -> dict:
    """Train on `data_version` (default: config's data.version), optionally gate, register; returns metadata."""
    version = data_version or settings.data.version
    candidate = train_candidate(settings, data_version=version)
    gate = gate_fn(candidate) if gate_fn is not None else None
    registry = Registry(paths=Paths.from_settings(settings))
    return registry.register(model_bytes=candidate.model_bytes, metadata=candidate.metadata(trigger=trigger, gate=gate))


BOOTSTRAP_TRIGGER = {"kind": "bootstrap", "command": "python -m services.trainer bootstrap"}


def bootstrap(settings: Settings, *, check_only: bool = False) -> int:
    """A first model for a fresh system: train when the registry is empty and lacks the pinned version.

    Returns an exit code. With check_only, 0 means the pinned version is registered and intact (a
    container healthcheck). A registry that holds other versions but not the pinned one is an error to fix
    by hand (pin an existing version), not a reason to train silently.
    """
    from shared.errors import ClockworkError

    pinned = settings.deployment.model_version
    registry = Registry(paths=Paths.from_settings(settings))
    try:
        registry.load_verified(pinned)
        log.info("bootstrap: pinned %s is registered and intact", pinned)
        return 0
    except ClockworkError as e:
        if check_only:
            log.info("bootstrap check: %s", e)
            return 1
        existing = registry.versions()
        if existing:
            log.error(
                "bootstrap: pinned %s cannot be served (%s); the registry holds %s: pin one of them "
                "(python -m services.inference promote vN)",
                pinned,
                e,
                existing,
            )
            return 1
    md = train_and_register(settings, trigger=BOOTSTRAP_TRIGGER)
    if md["version"] != pinned:
        log.error("bootstrap: trained %s but config.yaml pins %s", md["version"], pinned)
        return 1
    log.info("bootstrap: registered %s (validation f1=%.4f)", md["version"], md["metrics"]["f1"])
    return 0
