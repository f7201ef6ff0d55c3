"""Trainer: reproducible, config-driven models whose ONNX file computes the same as scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from services.trainer.export import front_graph
from services.trainer.train import COMMAND_TRIGGER, train_and_register, train_candidate
from shared.datastore import DataStore
from shared.onnx_model import load_session
from shared.paths import Paths
from shared.registry import Registry
from tests.trainer.helpers import ROOT, with_config


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.trainer", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def production_rows(settings) -> pd.DataFrame:
    paths = Paths.from_settings(settings)
    return DataStore(paths=paths).read_table(paths.data_version_dir(settings.data.version) / "production.csv")


def test_same_config_and_data_give_identical_model_and_metrics(prepped):
    first = train_and_register(prepped, trigger=COMMAND_TRIGGER)
    # The second training runs in a fresh process (another hash seed, other object ids) through the CLI.
    proc = run_cli("train", "--config", str(prepped.config_path))
    assert proc.returncode == 0, proc.stderr
    registry = Registry(paths=Paths.from_settings(prepped))
    assert registry.versions() == ["v1", "v2"]
    second = registry.metadata("v2")
    assert second["onnx_sha256"] == first["onnx_sha256"]
    assert registry.load_verified("v1")[0] == registry.load_verified("v2")[0]
    assert second["metrics"] == first["metrics"]
    assert second["production_metrics"] == first["production_metrics"]
    assert second["trigger"]["kind"] == "command" and second["gate"] is None


def test_n_estimators_from_config_changes_the_model_and_metadata(prepped):
    base = train_and_register(prepped, trigger=COMMAND_TRIGGER)
    changed = with_config(prepped, **{"model_params.n_estimators": 20})
    md = train_and_register(changed, trigger=COMMAND_TRIGGER)
    assert md["onnx_sha256"] != base["onnx_sha256"]
    assert md["config"]["model_params"]["n_estimators"] == 20
    assert base["config"]["model_params"]["n_estimators"] == 50


def test_missing_config_exits_with_one_clear_line(tmp_path):
    proc = run_cli("train", "--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.yaml" in lines[0] and "not found" in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_data_version_fails_with_one_line_not_a_traceback(prepped):
    with_config(prepped, **{"data.version": "v9_nothing"})
    proc = run_cli("train", "--config", str(prepped.config_path))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "v9_nothing" in proc.stderr


def test_default_config_scores_f1_above_080_on_production_rows_and_raw_columns_score_lower(prepped):
    physical = train_candidate(prepped, data_version=prepped.data.version)
    prod = physical.production_metrics
    assert prod["rows"] == 3000 and prod["positives"] == 61
    # ONNX file on rows 7001-10000, recomputed here from the file itself.
    rows = production_rows(prepped)
    ds = prepped.dataset
    proba = load_session(physical.model_bytes, features=ds.feature_names).predict_proba(ds.encode(rows))
    assert proba.shape == (3000,)
    assert prod["f1"] >= 0.80, prod
    raw_only = train_candidate(with_config(prepped, **{"features.derived": False}), data_version=prepped.data.version)
    assert raw_only.production_metrics["f1"] < prod["f1"] - 0.05, (raw_only.production_metrics, prod)
    print(
        f"\nproduction rows: physical precision={prod['precision']:.4f} recall={prod['recall']:.4f} "
        f"f1={prod['f1']:.4f}; "
        f"raw columns f1={raw_only.production_metrics['f1']:.4f}"
    )


@pytest.mark.parametrize("algorithm", ["random_forest", "gradient_boosting", "logistic_regression"])
def test_onnx_agrees_with_sklearn_on_the_validation_rows(prepped, algorithm):
    settings = with_config(prepped, **{"model_params.algorithm": algorithm, "model_params.n_estimators": 30})
    cand = train_candidate(settings, data_version=settings.data.version)
    assert cand.parity["rows"] == 1400
    assert cand.parity["max_abs_diff"] <= 1e-5
    assert cand.parity["label_disagreements"] == 0 and cand.parity["label_agreement"] == 1.0
    # And on every production row, recomputed here.
    rows = production_rows(settings)
    ds = settings.dataset
    r = ds.encode(rows)
    p_onnx = load_session(cand.model_bytes, features=ds.feature_names).predict_proba(r)
    p_sk = cand.calibration.apply(cand.estimator.predict_proba(ds.engineer(r, derived=True))[:, 1])
    assert np.max(np.abs(p_onnx - p_sk)) <= 1e-5
    assert np.array_equal(p_onnx >= cand.threshold, p_sk >= cand.threshold)


@pytest.mark.parametrize("derived", [True, False])
def test_front_graph_features_equal_the_dataset_reference(prepped, derived):
    ds = prepped.dataset
    rows = production_rows(prepped)
    readings = ds.encode(rows)
    # Plus edge values: every type code, zeros, extremes of the accepted ranges.
    edges = np.array(
        [[c, 250.0, 400.0, 0.0, 0.0, 0.0] for c in (0.0, 1.0, 2.0)]
        + [[c, 350.0, 250.0, 5000.0, 200.0, 1000.0] for c in (0.0, 1.0, 2.0)],
        dtype=np.float32,
    )
    x = np.concatenate([readings, edges])
    session = ort.InferenceSession(
        front_graph(ds, derived=derived).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (features,) = session.run(None, {"readings": x})
    expected = ds.engineer(x, derived=derived)
    assert features.dtype == np.float32 and features.shape == expected.shape
    assert np.array_equal(features, expected)


def test_metadata_records_lineage_and_round_trips(prepped):
    md = train_and_register(prepped, trigger=COMMAND_TRIGGER)
    paths = Paths.from_settings(prepped)
    registry = Registry(paths=paths)
    assert registry.metadata(md["version"]) == md
    train_rel = f"data/processed/{prepped.data.version}/train.csv"
    entry = DataStore(paths=paths).entry_for_path(paths.train_file(prepped.data.version))
    assert {"path": train_rel, "sha256": entry.sha256, "rows": 7000} in md["data_files"]
    assert md["feature_schema"]["input"]["columns"] == prepped.dataset.feature_names
    assert md["feature_schema"]["ranges"]["torque_nm"]["min"] > 0
    assert set(md["config"]) == {"data_version", "features", "model_params", "training", "decision"}
    assert md["git"]["commit"] and md["library_versions"]["onnxruntime"]
    assert md["metrics"]["rows"] == 1400 and set(md["metrics"]["confusion_matrix"]) == {"tn", "fp", "fn", "tp"}
    log_lines = paths.metadata_log.read_text().splitlines()
    assert len(log_lines) == 1 and " v1 " in log_lines[0] and md["onnx_sha256"] in log_lines[0]
