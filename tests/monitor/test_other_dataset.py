"""The monitor, the labelled file, drift, plots and replay over a dataset that is not the default one:
everything follows the dataset section (a timestamp order, text labels, a categorical feature of two levels)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from services.monitor.drift import CategoricalDrift, NumericDrift, drift_report
from services.monitor.ingest import Ingestor
from services.monitor.measure import inputs_frame
from services.monitor.plots import distribution_plot
from services.monitor.replay import Replayer
from services.monitor.report_html import render_html
from shared.labelled import columns, load_labelled
from shared.paths import Paths
from tests.monitor.helpers import append, open_store, stamp
from tests.prep.test_clean import PUMPS


def _pumps_paths(project) -> Paths:
    return Paths.from_settings(project.model_copy(update={"dataset": PUMPS}))


def _frame(n: int, *, shift: float = 0.0, south: float = 0.5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "pressure_bar": np.clip(rng.normal(5 + shift, 1, n), 0, 10).round(2),
        "flow_l_s": rng.integers(10, 90, n),
        "site": np.where(rng.random(n) < south, "south", "north"),
        "broken": (rng.random(n) < 0.1).astype(int),
    })


def test_ingest_joins_rows_of_any_dataset_into_its_labelled_columns(project):
    paths = _pumps_paths(project)
    df = _frame(30)
    preds, fbs = [], []
    for i, row in enumerate(df.itertuples(index=False)):
        inputs = {"pressure_bar": float(row.pressure_bar), "flow_l_s": float(row.flow_l_s), "site": row.site}
        preds.append(json.dumps({"time": stamp(i), "request_id": f"r{i}", "model_version": "v1", "inputs": inputs,
                                 "probability": 0.2, "label": 0, "threshold": 0.5}))
        fbs.append(json.dumps({"time": stamp(i + 0.5), "request_id": f"r{i}", "label": int(row.broken)}))
    preds.append(json.dumps({"time": stamp(99), "request_id": "bad", "model_version": "v1", "probability": 0.2,
                             "inputs": {"pressure_bar": 1.0, "flow_l_s": 2.0, "site": "east"}, "label": 0,
                             "threshold": 0.5}))
    append(paths.prediction_log_dir / "i1.jsonl", preds)
    append(paths.feedback_log_dir / "i1.jsonl", fbs)
    state = open_store(paths, PUMPS.feature_names)
    counts = Ingestor(paths=paths, dataset=PUMPS, window_size=100, drift_window=100).run(state)
    assert (counts.predictions, counts.labelled, counts.malformed) == (30, 30, 1)
    assert "site: 'east' is not one of its levels ['north', 'south']" in counts.malformed_lines[0].reason
    assert state.recent_inputs()[0].values == (float(df.pressure_bar[0]), float(df.flow_l_s[0]), df.site[0])
    got = load_labelled(paths)
    assert list(got.columns) == columns(PUMPS) == ["pressure_bar", "flow_l_s", "site", "broken", "request_id", "time",
                                                   "model_version"]
    assert got.broken.tolist() == df.broken.tolist() and got.site.tolist() == df.site.tolist()
    window = inputs_frame(state.recent_inputs(), PUMPS)
    assert list(window.columns) == ["time", "model_version", "pressure_bar", "flow_l_s", "site"]


def test_drift_covers_each_feature_by_its_kind_with_units_and_plots(project):
    settings = project.model_copy(update={"dataset": PUMPS})
    train, window = _frame(3000), _frame(500, shift=1.5, south=0.8, seed=1)
    rep = drift_report(train, window, dataset=PUMPS, thresholds=settings.monitoring.thresholds, tests=settings.monitoring.drift, min_samples=200)
    assert list(rep.features) == ["pressure_bar", "flow_l_s", "site"]
    pressure, flow, site = rep.features.values()
    assert isinstance(pressure, NumericDrift) and pressure.unit == "bar" and pressure.flagged
    assert isinstance(flow, NumericDrift) and flow.unit == "l/s" and not flow.flagged
    assert isinstance(site, CategoricalDrift) and site.categories == ["north", "south"] and site.flagged
    assert site.effect_size["cramers_v"] > 0.1
    assert rep.flagged == ["pressure_bar", "site"]
    assert distribution_plot(train, window, rep)  # one panel per feature, whatever their number


def test_replay_sends_each_feature_by_name_and_the_label_as_feedback():
    sent = []

    class Session:
        def post(self, url, json, timeout):  # noqa: A002 - requests' keyword
            sent.append((url.rsplit("/", 1)[1], json))
            body = {"request_id": f"r{len(sent)}"}
            return type("R", (), {"status_code": 200, "text": "", "json": lambda self: body})()

    now = [0.0]
    replayer = Replayer(dataset=PUMPS, url="http://x", rate=1000, feedback_delay=0.0, session=Session(),
                        progress=False, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    df = _frame(3)
    result = replayer.run(df)
    assert (result.predicted, result.feedback_sent) == (3, 3)
    predicts = [body for route, body in sent if route == "predict"]
    assert predicts[0] == {"pressure_bar": float(df.pressure_bar[0]), "flow_l_s": float(df.flow_l_s[0]),
                           "site": df.site[0]}
    assert [body["label"] for route, body in sent if route == "feedback"] == df.broken.tolist()


def test_the_html_report_names_features_with_their_units(project):
    from services.monitor.report_model import MonitorReport, ReportSettings

    settings = project.model_copy(update={"dataset": PUMPS})
    train, window = _frame(3000), _frame(500, shift=1.5, seed=1)
    rep = drift_report(train, window, dataset=PUMPS, thresholds=settings.monitoring.thresholds, tests=settings.monitoring.drift, min_samples=200)
    report = MonitorReport(created_at=stamp(0), cycle=1, serving_version="v1", pinned_version="v1", performance={},
                           drift=rep, checks=[], fired=[], settings=ReportSettings(
                               window_size=500, min_labelled=100, drift_min_samples=200,
                               thresholds=settings.monitoring.thresholds, cooldown_s=0.0))
    page = render_html(report, history=[], reference=train, production=window)
    assert "pressure_bar [bar]" in page and "flow_l_s [l/s]" in page and "<td class='l'>site</td>" in page
    assert MonitorReport.model_validate_json(report.model_dump_json()) == report
