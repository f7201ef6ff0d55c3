"""Train a candidate from config.yaml alone, evaluate it by running its ONNX file, register it.

    settings -> data version's train.csv (checked against the manifest)          services.trainer.dataset
             -> chronological hold-out (last training.validation_fraction of the rows in the dataset's order)
             -> features: DatasetConfig.engineer(DatasetConfig.encode(df)) -- the same arithmetic the
                ONNX front graph runs, so the scikit-learn object and the file see identical inputs
             -> fit (model_params)                                                services.trainer.estimator
             -> export ONNX -> metrics from onnxruntime on the hold-out           export, evaluate
             -> parity with scikit-learn (max |dp| <= 1e-5, identical labels, or the model is refused)
             -> registry version vN with metadata.json and a model_metadata.log line   candidate, shared.registry

`train_candidate` stops before the registry (the retrain job gates the candidate first);
`train_and_register` is what the CLI, `bootstrap` and other parts' tests call. Nothing is written before the
registry's own atomic registration, so a crash leaves at most the registry's temporary folder behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from services.trainer.candidate import Candidate, doc_string, feature_schema
from services.trainer.dataset import (
    data_files,
    labels,
    load_production_table,
    load_training_table,
    readings,
    split_holdout,
)
from services.trainer.estimator import build_estimator, fit_kwargs
from services.trainer.evaluate import classification_metrics, parity
from services.trainer.export import export
from services.trainer.gate import GateDecision
from shared.config import Settings
from shared.datastore import DataStore
from shared.errors import ClockworkError, DataValidationError, ExportError
from shared.onnx_model import load_session
from shared.paths import Paths, check_data_version
from shared.registry import Registry

log = logging.getLogger(__name__)

COMMAND_TRIGGER = {"kind": "command", "command": "python -m services.trainer train"}
BOOTSTRAP_TRIGGER = {"kind": "bootstrap", "command": "python -m services.trainer bootstrap"}


def train_candidate(settings: Settings, *, data_version: str) -> Candidate:
    """Fit, export and evaluate one model on `data_version`; nothing is written."""
    check_data_version(data_version)
    paths = Paths.from_settings(settings)
    store = DataStore(paths=paths)
    ds = settings.dataset
    df, train_path = load_training_table(store, paths, data_version, ds)
    fit, val = split_holdout(df, settings.training.validation_fraction, where=train_path)
    derived = settings.features.derived
    mp = settings.model_params
    threshold = settings.training.threshold

    x_fit = ds.engineer(readings(fit, ds, where=train_path), derived=derived)
    y_fit = labels(fit, ds, where=train_path)
    if len(np.unique(y_fit)) < 2:
        raise DataValidationError(f"{train_path}: the training part holds one class only")
    estimator = build_estimator(mp)
    t0 = time.perf_counter()
    estimator.fit(x_fit, y_fit, **fit_kwargs(mp, y_fit))
    training_seconds = time.perf_counter() - t0

    files = data_files(store, data_version)
    model_bytes = export(estimator, dataset=ds, derived=derived, doc_string=doc_string(settings, data_version, files))
    model = load_session(model_bytes, name=f"candidate on {data_version}", features=ds.feature_names)

    # Metrics by running the ONNX file; parity against the scikit-learn object on the same rows.
    r_val = readings(val, ds, where=train_path)
    y_val = labels(val, ds, where=train_path)
    p_onnx = model.predict_proba(r_val)
    p_sk = estimator.predict_proba(ds.engineer(r_val, derived=derived))[:, 1]
    metrics = classification_metrics(y_val, p_onnx, threshold=threshold)
    par = parity(p_onnx, p_sk, threshold=threshold, tolerance=settings.training.parity_tolerance)
    if not par["ok"]:
        raise ExportError(
            f"ONNX model disagrees with scikit-learn on {par['rows']} validation rows of {data_version}: "
            f"max |dp| {par['max_abs_diff']:.3g} (tolerance {settings.training.parity_tolerance}), "
            f"{par['label_disagreements']} label(s) differ"
        )

    production_metrics = None
    production = load_production_table(store, paths, data_version, ds)
    if production is not None:
        prod, prod_path = production
        production_metrics = classification_metrics(
            labels(prod, ds, where=prod_path),
            model.predict_proba(readings(prod, ds, where=prod_path)),
            threshold=threshold,
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
        feature_schema=feature_schema(fit, ds, derived=derived),
        training_seconds=round(training_seconds, 3),
        estimator=estimator,
    )


def train_and_register(
    settings: Settings,
    *,
    trigger: dict,
    data_version: str | None = None,
    gate_fn: Callable[[Candidate], GateDecision | None] | None = None,
) -> dict[str, Any]:
    """Train on `data_version` (default: config's data.version), optionally gate, register; returns metadata."""
    version = data_version or settings.data.version
    candidate = train_candidate(settings, data_version=version)
    gate = gate_fn(candidate) if gate_fn is not None else None
    registry = Registry(paths=Paths.from_settings(settings))
    return registry.register(model_bytes=candidate.model_bytes, metadata=candidate.metadata(trigger=trigger, gate=gate))


def bootstrap(settings: Settings, *, check_only: bool = False) -> int:
    """A first model for a fresh system: train when the registry is empty and lacks the pinned version.

    Returns an exit code. With check_only, 0 means the pinned version is registered and intact (a
    container healthcheck). A registry that holds other versions but not the pinned one is an error to fix
    by hand (pin an existing version), not a reason to train silently.
    """
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
