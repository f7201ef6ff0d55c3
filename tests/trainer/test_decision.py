"""Threshold choice by policy on the hold-out, the refit on all training rows, and the record metadata.json keeps."""
from __future__ import annotations

import numpy as np
import pytest

from services.trainer.decision import (
    CANDIDATES,
    GRID,
    Costs,
    choose_threshold,
    expected_cost,
    paired_bootstrap,
)
from services.trainer.train import COMMAND_TRIGGER, train_and_register, train_candidate
from shared.onnx_model import load_session
from tests.trainer.helpers import with_config
from tests.trainer.test_train import production_rows

COSTS = Costs(missed_failure=500.0, false_alarm=10.0)


def toy():
    # 4 failures at 0.9, 0.8, 0.6, 0.2; normals at 0.7 and many at 0.1.
    y = np.array([1, 1, 1, 1, 0] + [0] * 95)
    p = np.array([0.9, 0.8, 0.6, 0.2, 0.7] + [0.1] * 95)
    return y, p


def test_max_f1_takes_the_middle_of_the_best_run_of_thresholds():
    y, p = toy()
    choice = choose_threshold(y, p, policy="max_f1", costs=COSTS, fixed=0.5)
    # t in (0.1, 0.2] catches all 4 with one false alarm: F1 0.889, the best, on the run 0.11 .. 0.20.
    assert choice.threshold == 0.16 and choice.f1 == pytest.approx(8 / 9)
    assert choice.recall == 1.0 and choice.precision == 0.8
    assert [t for t, *_ in choice.curve] == list(CANDIDATES) and len(CANDIDATES) == 179
    assert choice.curve[0][0] == 0.0001 and choice.curve[-1][0] == 0.9999


def test_the_candidates_are_the_grid_and_log_spaced_points_beyond_it_fixed_constants():
    assert set(GRID) < set(CANDIDATES) and len(GRID) == 99
    c = np.array(CANDIDATES)
    assert (np.diff(c) > 0).all()
    below = c[c < 0.01]
    assert below[0] == 0.0001 and below[-1] == 0.00891 and len(below) == 40
    assert ((below[1:] / below[:-1] > 1.10) & (below[1:] / below[:-1] < 1.14)).all()  # 20 a decade: 12% steps
    assert (np.round(c + c[::-1], 9) == 1.0).all()  # mirrored about 0.5


def test_min_cost_reaches_below_the_grid_where_calibrated_probabilities_are():
    # A calibrated model's low end: 97 normals at 0.0055, failures at 0.0065, 0.008 and 0.9 (the sigmoid map
    # squeezes low scores below 0.01). Flagging from (0.0055, 0.0065] catches all three and raises no false alarm;
    # the grid alone (0.01 at its lowest) would miss two.
    y = np.array([1, 1, 1] + [0] * 97)
    p = np.array([0.0065, 0.008, 0.9] + [0.0055] * 97)
    choice = choose_threshold(y, p, policy="min_cost", costs=COSTS, fixed=0.5)
    # Tied at cost 0: the candidates 0.00562 and 0.00631; the upper middle of the even run.
    assert choice.threshold == 0.00631 and choice.expected_cost_per_1000 == 0.0 and choice.recall == 1.0
    assert expected_cost(y, p, threshold=GRID[0], costs=COSTS) == pytest.approx(1000 * 2 * 500 / 100)
    again = choose_threshold(y.copy(), p.copy(), policy="min_cost", costs=COSTS, fixed=0.5)
    assert again == choice and again.model_dump_json() == choice.model_dump_json()
    # The mirror: failures at 0.9999-ish ranks above normals at 0.995 are separated above the grid too.
    y_hi = np.array([1, 1] + [0] * 98)
    p_hi = np.array([0.9995, 0.9995] + [0.995] * 97 + [0.1])
    high = choose_threshold(y_hi, p_hi, policy="max_f1", costs=COSTS, fixed=0.5)
    assert 0.995 < high.threshold <= 0.9995 and high.f1 == 1.0


def test_min_cost_weighs_missed_failures_against_false_alarms():
    y, p = toy()
    cheap_alarms = choose_threshold(y, p, policy="min_cost", costs=COSTS, fixed=0.5)
    assert cheap_alarms.threshold == 0.16 and cheap_alarms.expected_cost_per_1000 == pytest.approx(100.0)
    # When a false alarm costs more than a missed failure, flag nothing below the failure at 0.2 ... nor 0.7.
    dear_alarms = choose_threshold(y, p, policy="min_cost", costs=Costs(missed_failure=1, false_alarm=5), fixed=0.5)
    assert dear_alarms.threshold > 0.7 or dear_alarms.expected_cost_per_1000 <= 1000 * (1 + 5) / 100
    assert dear_alarms.expected_cost_per_1000 == min(c for _, c, _, _ in dear_alarms.curve)
    assert expected_cost(y, p, threshold=0.5, costs=COSTS) == pytest.approx(1000 * (500 + 10) / 100)


def test_fixed_policy_keeps_the_configured_threshold_and_ties_go_to_the_longer_then_higher_run():
    y, p = toy()
    assert choose_threshold(y, p, policy="fixed", costs=COSTS, fixed=0.42).threshold == 0.42
    # Two separate runs of equal best cost: both models flag nothing useful; the higher run wins.
    y2 = np.array([0, 0])
    p2 = np.array([0.305, 0.605])  # cost 0 for t > 0.605: run 0.61 .. 0.9999 (the longest, 79 candidates)
    assert choose_threshold(y2, p2, policy="min_cost", costs=COSTS, fixed=0.5).threshold == CANDIDATES[100 + 39]
    # Equal costs 1 : 1, a failure at 0.255 and a normal at 0.745: flagging both or neither costs one error each,
    # on two runs of 65 candidates (0.0001 .. 0.25 and 0.75 .. 0.9999); the higher run, its middle point.
    even = Costs(missed_failure=1.0, false_alarm=1.0)
    both = choose_threshold(np.array([1, 0]), np.array([0.255, 0.745]), policy="min_cost", costs=even, fixed=0.5)
    assert both.threshold == CANDIDATES[-33] and 0.99 < both.threshold


def test_the_bootstrap_is_seeded_and_paired():
    y, p = toy()
    a = paired_bootstrap(y, p >= 0.5, p >= 0.15, metric="expected_cost", costs=COSTS, samples=500, seed=1,
                         confidence=0.9)
    b = paired_bootstrap(y, p >= 0.5, p >= 0.15, metric="expected_cost", costs=COSTS, samples=500, seed=1,
                         confidence=0.9)
    # The candidate (0.5) misses a failure the serving model catches; resamples without that row tie.
    assert a == b and a.low < a.high == 0.0
    same = paired_bootstrap(y, p >= 0.5, p >= 0.5, metric="f1", costs=COSTS, samples=500, seed=1, confidence=0.9)
    assert same.low == same.high == 0.0


def test_the_exported_model_is_refitted_on_all_rows_and_figures_say_which_model(prepped):
    cand = train_candidate(prepped, data_version=prepped.data.version)
    d = cand.decision
    assert d["policy"] == prepped.decision.threshold_policy == "max_f1"
    assert cand.threshold == d["threshold"] and d["rows"] == 1400 and cand.metrics["rows"] == 1400
    assert cand.metrics["threshold"] == d["threshold"] == cand.production_metrics["threshold"]
    assert cand.metrics["f1"] == pytest.approx(d["f1"]) and d["figures"]["metrics"] == "validation"
    assert d["figures"]["production_metrics"] == "exported" and "7000" in d["models"]["exported"]
    assert cand.feature_schema["rows"] == 7000
    # The exported estimator saw every training row (its trees' bootstrap draws 7000 rows), the validation model 5600.
    assert {t.tree_.n_node_samples[0] for t in cand.estimator.estimators_} <= set(range(4000, 7001))
    assert cand.parity["ok"] and d["validation_parity"]["ok"] and cand.parity["rows"] == 1400
    ds = prepped.dataset
    rows = ds.encode(production_rows(prepped))
    exported = load_session(cand.model_bytes, features=ds.feature_names).predict_proba(rows)
    sklearn_scores = cand.estimator.predict_proba(ds.engineer(rows, derived=True))[:, 1]
    assert np.allclose(exported, cand.calibration.apply(sklearn_scores), atol=1e-5)
    # Production rows 7001-10000 at the chosen threshold (docs/decisions.md): F1 >= 0.84 at precision >= 0.95.
    prod = cand.production_metrics
    assert prod["f1"] >= 0.84 and prod["precision"] >= 0.95, prod


def test_min_cost_costs_less_on_production_than_max_f1_and_the_fixed_threshold(prepped):
    costs = Costs.from_config(prepped.decision)
    per_policy = {}
    for policy in ("min_cost", "max_f1", "fixed"):
        cand = train_candidate(with_config(prepped, **{"decision.threshold_policy": policy}),
                               data_version=prepped.data.version)
        cm = cand.production_metrics["confusion_matrix"]
        rows = sum(cm.values())
        per_policy[policy] = (cand.model_bytes, costs.per_1000(fn=cm["fn"], fp=cm["fp"], rows=rows))
    assert len({m for m, _ in per_policy.values()}) == 1  # the same model: only the threshold differs
    assert per_policy["min_cost"][1] < per_policy["max_f1"][1] and per_policy["min_cost"][1] < per_policy["fixed"][1]


def test_metadata_records_the_decision_and_the_models_are_byte_identical_run_to_run(prepped):
    first = train_and_register(prepped, trigger=COMMAND_TRIGGER)
    second = train_and_register(prepped, trigger=COMMAND_TRIGGER)
    assert first["onnx_sha256"] == second["onnx_sha256"] and first["decision"] == second["decision"]
    d = first["decision"]
    assert set(d) >= {"threshold", "policy", "costs", "expected_cost_per_1000", "curve", "figures", "models"}
    assert d["costs"] == {"missed_failure": 500.0, "false_alarm": 10.0}
    assert all(len(point) == 4 for point in d["curve"])
    assert first["config"]["decision"]["threshold_policy"] == "max_f1"


def test_parity_tolerates_rounding_at_the_threshold_only():
    from services.trainer.evaluate import parity

    sk = np.array([0.5, 0.2, 0.9])
    onnx = np.array([0.49999997, 0.2, 0.9])  # float32 rounding puts one row just below the threshold
    ok = parity(onnx, sk, threshold=0.5, tolerance=1e-5)
    assert ok["ok"] and ok["label_disagreements"] == 1 and ok["at_threshold"] == 1
    bad = parity(np.array([0.4999, 0.2, 0.9]), sk, threshold=0.5, tolerance=1e-5)
    assert not bad["ok"] and bad["at_threshold"] == 0
