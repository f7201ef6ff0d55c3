"""Label-free estimate: near the realized figures when the probabilities are calibrated, far when they are not,
and in the monitor's report beside the realized figures of the same rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.monitor.estimate import compare, estimate, estimated_confusion
from services.monitor.monitor import Monitor
from services.monitor.report_model import MonitorReport
from shared.config import load_settings
from tests.conftest import ROOT
from tests.monitor.helpers import day2, write_traffic

SETTINGS = load_settings(ROOT / "config.yaml", env={})


def _scores(rng: np.random.Generator, n: int) -> np.ndarray:
    # Mostly near 0, a tail of confident failures: the shape of a failure model's probabilities.
    return np.where(rng.random(n) < 0.93, rng.beta(1, 60, n), rng.beta(5, 2, n))


def test_the_estimate_is_near_the_realized_figures_when_labels_follow_the_probabilities():
    rng = np.random.default_rng(7)
    p = _scores(rng, 20_000)
    y = (rng.random(len(p)) < p).astype(int)  # labels drawn from p: calibrated by construction
    flagged = (p >= 0.5).astype(int)
    got = compare(y, p, flagged, settings=SETTINGS)
    assert got.estimated.rows == got.realized.rows == 20_000
    for name in ("precision", "recall", "f1"):
        assert got.abs_error[name] < 0.02, (name, got)
    assert got.abs_error["expected_cost_per_1000"] < 0.05 * got.realized.expected_cost_per_1000
    assert got.abs_error["f1"] == pytest.approx(abs(got.estimated.f1 - got.realized.f1))


def test_the_estimate_is_far_off_when_the_probabilities_are_miscalibrated():
    rng = np.random.default_rng(8)
    p = _scores(rng, 20_000)
    u = rng.random(len(p))
    flagged = (p >= 0.5).astype(int)
    # Overconfident: a third as many failures as the model says; the estimate's precision is far too high.
    over = compare((u < p / 3).astype(int), p, flagged, settings=SETTINGS)
    assert over.abs_error["precision"] > 0.3 and over.abs_error["f1"] > 0.2, over
    assert over.estimated.precision > over.realized.precision
    # Underconfident (failures at sqrt(p)): many more missed failures than expected; recall far too high.
    under = compare((u < np.sqrt(p)).astype(int), p, flagged, settings=SETTINGS)
    assert under.abs_error["recall"] > 0.3 and under.abs_error["f1"] > 0.2, under
    assert under.estimated.recall > under.realized.recall


def test_the_expected_confusion_matrix_counts_p_and_one_minus_p():
    c = estimated_confusion(np.array([0.9, 0.6, 0.2, 0.0]), np.array([1, 1, 0, 0]))
    assert (c.tp, c.fp, c.fn, c.tn) == pytest.approx((1.5, 0.5, 0.2, 1.8))
    f = estimate(np.array([0.9, 0.6, 0.2, 0.0]), np.array([1, 1, 0, 0]), settings=SETTINGS)
    d = SETTINGS.decision
    assert f.precision == pytest.approx(0.75) and f.recall == pytest.approx(1.5 / 1.7)
    cost = 1000 * (d.cost_missed_failure * 0.2 + d.cost_false_alarm * 0.5) / 4
    assert f.expected_cost_per_1000 == pytest.approx(cost)
    nothing = estimate(np.array([0.0, 0.0]), np.array([0, 0]), settings=SETTINGS)
    assert nothing.precision is None and nothing.recall is None and nothing.f1 is None


def test_the_report_carries_the_estimate_beside_the_realized_figures(trained, paths, redis_client):
    natural = day2(paths, "natural")
    write_traffic(paths, natural.iloc[:600])
    write_traffic(paths, natural.iloc[600:900], start=1000.0, labels=False)  # no label yet
    report = Monitor(settings=trained, redis_client=redis_client).cycle()
    est = report.estimate["v1"]
    assert est.window == trained.monitoring.estimate.window == 500
    assert est.unlabelled is not None and est.unlabelled.rows == 300
    lab = est.labelled
    assert lab is not None and lab.realized.rows == lab.estimated.rows == 500
    # The realized figures are the performance window's (the same 500 labelled rows).
    perf = report.performance["v1"].production
    assert lab.realized.f1 == pytest.approx(perf.f1) and lab.realized.precision == pytest.approx(perf.precision)
    assert lab.abs_error["f1"] == pytest.approx(abs(lab.estimated.f1 - lab.realized.f1))
    assert lab.estimated.confusion.tp != lab.realized.confusion.tp  # the estimate is fractional: not the labels
    # Drift fired this cycle (the later timeframe's air temperature): the estimate says it may not hold.
    drift = [name for name in report.fired if name.startswith("drift:")]
    assert drift and est.caveat is not None and all(name in est.caveat for name in drift)
    # The JSON report loads back unchanged with the estimate; the HTML shows it.
    on_disk = json.loads((paths.volume / report.paths.json_file).read_text())
    assert on_disk["estimate"]["v1"]["labelled"]["abs_error"]["f1"] == pytest.approx(lab.abs_error["f1"])
    assert MonitorReport.model_validate(on_disk) == report
    page = (paths.volume / report.paths.html_file).read_text()
    assert "Label-free estimate" in page and "waiting for labels: estimate" in page and "labelled: realized" in page
    assert "trust the realized figures" in page


def test_waiting_predictions_are_the_newest_per_version_and_no_drift_means_no_caveat():
    import sqlite3

    from services.monitor.estimate import version_estimates
    from services.monitor.rows import WindowRow
    from services.monitor.store import SCHEMA

    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    small = SETTINGS.model_copy(
        update={
            "monitoring": SETTINGS.monitoring.model_copy(
                update={"estimate": SETTINGS.monitoring.estimate.model_copy(update={"window": 3})}
            )
        }
    )
    rows = [
        (f"r{i}", "t", "v1" if i % 2 else "v2", "[]", 0.9 if i >= 4 else 0.1, 1 if i >= 4 else 0) for i in range(10)
    ]
    conn.executemany(
        "INSERT INTO pending (request_id, time, model_version, vals, probability, predicted) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    windows = {"v3": [WindowRow("2026-01-01T00:00:00Z", 1, 1, 0.8)]}
    got = version_estimates(conn, windows, settings=small)
    assert set(got) == {"v1", "v2", "v3"} and all(e.caveat is None for e in got.values())
    # v1 holds rows 1, 3, 5, 7, 9: the newest three (5, 7, 9) are all flagged at 0.9.
    assert got["v1"].unlabelled.rows == 3 and got["v1"].unlabelled.precision == pytest.approx(0.9)
    assert got["v3"].unlabelled is None and got["v3"].labelled.realized.f1 == 1.0
    flagged = version_estimates(conn, windows, settings=small, drift_fired=["drift:torque_nm"])
    assert all("drift:torque_nm" in e.caveat for e in flagged.values())
