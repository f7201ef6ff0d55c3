"""Calibration inside the ONNX graph: the same probabilities as scikit-learn's calibrated model, recorded in
metadata.json, thresholds chosen on them, bytes reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator

from services.trainer.calibration import calibration_quality, ece, fit_calibration, reliability
from services.trainer.dataset import labels, load_training_table, readings, split_holdout
from services.trainer.decision import Costs, choose_threshold
from services.trainer.estimator import build_estimator
from services.trainer.export import export
from services.trainer.train import train_candidate
from shared.datastore import DataStore
from shared.onnx_model import load_session
from shared.paths import Paths
from tests.trainer.helpers import with_config
from tests.trainer.test_train import production_rows


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_the_graph_computes_sklearns_calibrated_predict_proba(prepped, method):
    ds = prepped.dataset
    rows = ds.encode(production_rows(prepped))
    labels = production_rows(prepped)[ds.label.name].to_numpy()
    x = ds.engineer(rows, derived=True)
    forest = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(x[:1500], labels[:1500])
    # scikit-learn's own calibrated model, fitted on rows the forest never saw ...
    reference = CalibratedClassifierCV(FrozenEstimator(forest), method=method).fit(x[1500:2200], labels[1500:2200])
    # ... and ours, fitted on the forest's scores of the same rows, then run inside the ONNX file.
    cal = fit_calibration(method, forest.predict_proba(x[1500:2200])[:, 1], labels[1500:2200])
    model = export(forest, dataset=ds, derived=True, doc_string="t", calibration=cal)
    p_onnx = load_session(model, features=ds.feature_names).predict_proba(rows)
    p_sk = reference.predict_proba(x)[:, 1]
    assert np.max(np.abs(p_onnx - p_sk)) <= 1e-5
    assert np.max(np.abs(cal.apply(forest.predict_proba(x)[:, 1]) - p_sk)) <= 1e-12
    # The map really changes the forest's scores (an identity graph would fail here).
    assert np.max(np.abs(p_onnx - forest.predict_proba(x)[:, 1])) > 0.01
    if method == "isotonic":  # interpolated between thresholds (skl2onnx's converter takes the nearest one)
        xs = np.asarray(cal.params["x"])
        inside = (p_sk > 0) & ~np.isin(forest.predict_proba(x)[:, 1], xs)
        assert inside.any()


def test_metadata_records_the_calibration_and_thresholds_are_chosen_on_calibrated_probabilities(prepped):
    assert prepped.decision.calibration == "sigmoid"
    cand = train_candidate(prepped, data_version=prepped.data.version)
    d = cand.decision
    cal = d["calibration"]
    assert cal["method"] == "sigmoid" and set(cal["params"]) == {"a", "b"} and cal["params"]["a"] < 0
    for where, rows in (("holdout", 1400), ("production", 3000)):
        judged = cal[where]
        assert judged["before"]["rows"] == judged["after"]["rows"] == rows
        assert {"brier", "ece"} <= set(judged["after"]) and judged["after"]["bins"] == 10
        assert len(judged["reliability_after"]) == 10 == len(judged["reliability_before"])
        assert sum(b["rows"] for b in judged["reliability_after"]) == rows
    # The map improves calibration on the hold-out it was fitted on and on the production rows it never saw.
    assert cal["holdout"]["after"]["ece"] < cal["holdout"]["before"]["ece"]
    assert cal["production"]["after"]["brier"] < cal["production"]["before"]["brier"]
    # The threshold is the policy's choice on the validation model's CALIBRATED hold-out probabilities.
    ds = prepped.dataset
    paths = Paths.from_settings(prepped)
    df, where = load_training_table(DataStore(paths=paths), paths, prepped.data.version, ds)
    fit, val = split_holdout(df, prepped.training.validation_fraction, where=where)
    forest = build_estimator(prepped.model_params)
    forest.fit(ds.engineer(readings(fit, ds, where=where), derived=True), labels(fit, ds, where=where))
    y_val = labels(val, ds, where=where)
    scores = forest.predict_proba(ds.engineer(readings(val, ds, where=where), derived=True))[:, 1]
    costs = Costs.from_config(prepped.decision)
    calibrated = choose_threshold(
        y_val, fit_calibration("sigmoid", scores, y_val).apply(scores), policy="max_f1", costs=costs, fixed=0.5
    )
    raw = choose_threshold(y_val, scores, policy="max_f1", costs=costs, fixed=0.5)
    assert d["threshold"] == calibrated.threshold and d["f1"] == pytest.approx(calibrated.f1)
    assert [list(c) for c in calibrated.curve] == d["curve"] != [list(c) for c in raw.curve]
    assert d["figures"]["calibration.production"] == "exported"
    assert cand.metrics["threshold"] == d["threshold"] and cand.production_metrics["f1"] >= 0.84


def test_isotonic_is_byte_identical_run_to_run_and_none_leaves_the_forest_raw(prepped):
    iso = with_config(prepped, **{"decision.calibration": "isotonic"})
    first = train_candidate(iso, data_version=iso.data.version)
    second = train_candidate(iso, data_version=iso.data.version)
    assert first.model_bytes == second.model_bytes and first.decision == second.decision
    assert first.decision["calibration"]["method"] == "isotonic" and first.parity["ok"]
    raw = train_candidate(with_config(prepped, **{"decision.calibration": "none"}), data_version=iso.data.version)
    ds = prepped.dataset
    rows = ds.encode(production_rows(prepped))
    p_raw = load_session(raw.model_bytes, features=ds.feature_names).predict_proba(rows)
    forest = raw.estimator.predict_proba(ds.engineer(rows, derived=True))[:, 1]
    assert np.max(np.abs(p_raw - forest)) <= 1e-5
    assert raw.decision["calibration"]["holdout"]["before"] == raw.decision["calibration"]["holdout"]["after"]


def test_calibration_error_and_reliability_on_known_figures():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55])
    table = reliability(y, p)
    assert [b["rows"] for b in table] == [2, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert table[5]["observed_rate"] == 0.5 and table[5]["mean_probability"] == pytest.approx(0.55)
    # |0 - 0.05| * 2 + |0.5 - 0.55| * 2 + |1 - 0.95| * 2, over 6 rows
    assert ece(y, p) == pytest.approx(0.05)
    assert calibration_quality(y, p)["brier"] == pytest.approx((4 * 0.05**2 + 0.55**2 + 0.45**2) / 6)
