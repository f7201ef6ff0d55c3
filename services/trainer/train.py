"""Train a candidate from config.yaml alone, evaluate it by running its ONNX file, register it.

    settings -> data version's train.csv (checked against the manifest)          services.trainer.dataset
             -> chronological hold-out (last training.validation_fraction of the rows in the dataset's order)
             -> features: DatasetConfig.engineer(DatasetConfig.encode(df)) -- the same arithmetic the
                ONNX front graph runs, so the scikit-learn object and the file see identical inputs
             -> the validation model: fit (model_params) on the fit part          services.trainer.estimator
             -> its scores on the hold-out -> calibration map (decision.calibration) fitted on them
                (services.trainer.calibration), put inside the ONNX graph
             -> its calibrated ONNX file on the hold-out -> threshold by decision.threshold_policy
                (services.trainer.decision)
                -> validation metrics at that threshold (metadata `metrics`: the validation model's figures)
             -> refit: the same estimator and seed on ALL training rows, the same calibration map -> ONNX   export
                -> parity with scikit-learn on the hold-out rows (max |dp| <= tolerance, identical labels at the
                   chosen threshold, or the model is refused; the validation model is checked the same way)
                -> production rows, when the data version has them (metadata `production_metrics`: the exported
                   model's figures)                                               evaluate
             -> registry version vN with metadata.json (`decision`: threshold, policy, costs, curve) and a
                model_metadata.log line                                           candidate, shared.registry

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

from services.trainer.calibration import NONE, Calibration, calibration_record, fit_calibration
from services.trainer.candidate import Candidate, decision_record, doc_string, feature_schema
from services.trainer.dataset import (
    data_files,
    labels,
    load_production_table,
    load_training_table,
    readings,
    split_holdout,
)
from services.trainer.decision import Costs, choose_threshold
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


def _fit(settings: Settings, x: np.ndarray, y: np.ndarray, *, where: object) -> tuple[Any, float]:
    if len(np.unique(y)) < 2:
        raise DataValidationError(f"{where}: the training part holds one class only")
    mp = settings.model_params
    estimator = build_estimator(mp)
    t0 = time.perf_counter()
    estimator.fit(x, y, **fit_kwargs(mp, y))
    return estimator, time.perf_counter() - t0


def _check_parity(par: dict, *, which: str, data_version: str, tolerance: float) -> None:
    if not par["ok"]:
        raise ExportError(
            f"ONNX {which} disagrees with scikit-learn on {par['rows']} validation rows of {data_version}: "
            f"max |dp| {par['max_abs_diff']:.3g} (tolerance {tolerance}), {par['label_disagreements']} label(s) differ "
            f"({par['at_threshold']} of them within the tolerance of the threshold)"
        )


def train_candidate(settings: Settings, *, data_version: str) -> Candidate:
    """Fit on the fit part, choose the threshold on the hold-out, refit on all rows, export; nothing is written."""
    check_data_version(data_version)
    paths = Paths.from_settings(settings)
    store = DataStore(paths=paths)
    ds = settings.dataset
    df, train_path = load_training_table(store, paths, data_version, ds)
    fit, val = split_holdout(df, settings.training.validation_fraction, where=train_path)
    derived = settings.features.derived
    mp = settings.model_params
    tolerance = settings.training.parity_tolerance
    files = data_files(store, data_version)
    doc = doc_string(settings, data_version, files)

    def onnx_of(estimator: Any, name: str, cal: Calibration) -> tuple[bytes, Any]:
        model_bytes = export(estimator, dataset=ds, derived=derived, doc_string=doc, calibration=cal)
        return model_bytes, load_session(model_bytes, name=name, features=ds.feature_names)

    # 1. The validation model: fitted on the fit part, scored (its ONNX file) on the hold-out it never saw.
    r_val = readings(val, ds, where=train_path)
    y_val = labels(val, ds, where=train_path)
    x_val = ds.engineer(r_val, derived=derived)
    fitted, _ = _fit(
        settings,
        ds.engineer(readings(fit, ds, where=train_path), derived=derived),
        labels(fit, ds, where=train_path),
        where=train_path,
    )
    _, val_raw = onnx_of(fitted, f"validation model on {data_version}", NONE)
    s_val = val_raw.predict_proba(r_val)
    # The calibration map: fitted on the validation model's scores of rows it never saw (the refit saw them all).
    cal = fit_calibration(settings.decision.calibration, fitted.predict_proba(x_val)[:, 1], y_val)
    val_model = (
        val_raw if cal.method == "none" else onnx_of(fitted, f"calibrated validation model on {data_version}", cal)[1]
    )
    p_val = val_model.predict_proba(r_val)
    choice = choose_threshold(
        y_val,
        p_val,
        policy=settings.decision.threshold_policy,
        costs=Costs.from_config(settings.decision),
        fixed=settings.training.threshold,
    )
    threshold = choice.threshold
    metrics = classification_metrics(y_val, p_val, threshold=threshold)
    val_parity = parity(p_val, cal.apply(fitted.predict_proba(x_val)[:, 1]), threshold=threshold, tolerance=tolerance)
    _check_parity(val_parity, which="validation model", data_version=data_version, tolerance=tolerance)

    # 2. The exported model: the same hyperparameters and seed refitted on every training row.
    estimator, training_seconds = _fit(
        settings,
        ds.engineer(readings(df, ds, where=train_path), derived=derived),
        labels(df, ds, where=train_path),
        where=train_path,
    )
    model_bytes, model = onnx_of(estimator, f"candidate on {data_version}", cal)
    par = parity(
        model.predict_proba(r_val),
        cal.apply(estimator.predict_proba(x_val)[:, 1]),
        threshold=threshold,
        tolerance=tolerance,
    )
    _check_parity(par, which="model", data_version=data_version, tolerance=tolerance)

    production_metrics = None
    production_judged = None
    production = load_production_table(store, paths, data_version, ds)
    if production is not None:
        prod, prod_path = production
        y_prod = labels(prod, ds, where=prod_path)
        r_prod = readings(prod, ds, where=prod_path)
        p_prod = model.predict_proba(r_prod)
        production_metrics = classification_metrics(y_prod, p_prod, threshold=threshold)
        production_metrics["file"] = store.rel(prod_path)
        production_judged = (y_prod, estimator.predict_proba(ds.engineer(r_prod, derived=derived))[:, 1], p_prod)
    calibration = calibration_record(cal, holdout=(y_val, s_val, p_val), production=production_judged)

    log.info(
        "trained %s on %s (%d rows; validation model on %d, %d held out): threshold %.2f (%s), "
        "val f1=%.4f precision=%.4f recall=%.4f cost/1000=%.1f; parity max|dp|=%.2g; calibration %s "
        "(hold-out brier %.4f -> %.4f, ece %.4f -> %.4f)",
        mp.algorithm,
        data_version,
        len(df),
        len(fit),
        len(val),
        threshold,
        choice.policy,
        metrics["f1"],
        metrics["precision"],
        metrics["recall"],
        choice.expected_cost_per_1000,
        par["max_abs_diff"],
        cal.method,
        calibration["holdout"]["before"]["brier"],
        calibration["holdout"]["after"]["brier"],
        calibration["holdout"]["before"]["ece"],
        calibration["holdout"]["after"]["ece"],
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
        decision=decision_record(
            choice, fit_rows=len(fit), all_rows=len(df), validation_parity=val_parity, calibration=calibration
        ),
        data_version=data_version,
        data_files=files,
        config={
            "data_version": data_version,
            "features": settings.section("features"),
            "model_params": settings.section("model_params"),
            "training": settings.section("training"),
            "decision": settings.section("decision"),
        },
        feature_schema=feature_schema(df, ds, derived=derived),
        training_seconds=round(training_seconds, 3),
        estimator=estimator,
        calibration=cal,
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
