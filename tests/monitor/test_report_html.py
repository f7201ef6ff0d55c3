"""The HTML report's words and figures: the drift headline, readable times, the PSI axis."""
from __future__ import annotations

import base64
import io
import re

import pytest

from services.monitor.drift import drift_report
from services.monitor.report_html import drift_headline, render_html
from services.monitor.report_model import DriftPoint, HistoryEntry, MonitorReport, ReportSettings
from shared.config import load_settings
from shared.datastore import DataStore
from shared.paths import Paths
from tests.monitor.helpers import day2, stamp


@pytest.fixture(scope="module")
def data(prepped_template):
    settings = load_settings(prepped_template / "config.yaml", env={})
    paths = Paths.from_settings(settings)
    return settings, paths, DataStore(paths=paths).read_table(paths.train_file(settings.data.version))


def report_for(settings, drift) -> MonitorReport:
    mon = settings.monitoring
    return MonitorReport(created_at=stamp(0.123456), cycle=3, serving_version="v1", pinned_version="v1",
                         performance={}, drift=drift, checks=[], fired=[], settings=ReportSettings(
                             window_size=mon.window_size, min_labelled=mon.min_labelled,
                             drift_min_samples=mon.drift_min_samples, thresholds=mon.thresholds, drift=mon.drift,
                             cooldown_s=mon.cooldown_s))


def test_the_drift_headline_counts_flagged_features_and_never_says_ok_beside_them(data):
    settings, paths, train = data
    mon = settings.monitoring
    window = day2(paths, "torque_shift").iloc[-500:]
    drifted = drift_report(train, window, dataset=settings.dataset, thresholds=mon.thresholds, tests=mon.drift,
                           min_samples=mon.drift_min_samples)
    n = len(drifted.flagged)
    assert n >= 2
    head = drift_headline(drifted)
    assert f"Drift: {n} of {len(settings.dataset.features)} features flagged" in head
    assert not re.search(r"\bok\b", head) and "class='bad'" in head
    quiet = train.sample(frac=1.0, random_state=0)
    calm = drift_report(quiet.iloc[:6500], quiet.iloc[6500:], dataset=settings.dataset, thresholds=mon.thresholds,
                        tests=mon.drift, min_samples=200)
    assert "none of" in drift_headline(calm) and "class='ok'" in drift_headline(calm)
    page = render_html(report_for(settings, drifted), history=[], reference=train, production=window)
    assert "status ok" not in page and page.count(f"{n} of {len(settings.dataset.features)} features flagged") == 2
    # Per feature: sample sizes, raw and adjusted p-value, verdict.
    for text in ("n reference", "n window", "p raw", f"p ({mon.drift.correction})", "verdict", ">drift<"):
        assert text in page, text
    # Times read as times: no raw ISO stamp with microseconds on the page.
    assert stamp(0.123456) not in page and "2026-01-01 00:00:00 UTC" in page


def test_the_psi_axis_shows_a_psi_of_six_with_room_above_it(data):
    """A PSI of 6.3 (the natural air-temperature drift) is drawn inside the axes, with tick labels beyond it."""
    from PIL import Image

    settings, _, _ = data
    history = [HistoryEntry(time=stamp(60 * i), serving_version="v1", versions={}, fired=[], trigger=None,
                            drift={"a": DriftPoint(psi=psi, flagged=psi > 0.2), "b": DriftPoint(psi=0.01, flagged=False)})
               for i, psi in enumerate([0.05, 6.3, 4.9])]
    from services.monitor.plots import history_figure, history_plot

    fig = history_figure(history, psi_threshold=settings.monitoring.thresholds.psi)
    drift_axes = fig.axes[1]
    bottom, top = drift_axes.get_ylim()
    assert bottom == 0 and top >= 1.5 * 6.3
    labels = [t.get_text() for t in drift_axes.get_yticklabels()]
    assert {"0.2", "1", "5"} <= set(labels), labels
    png = history_plot(history, psi_threshold=settings.monitoring.thresholds.psi)
    image = Image.open(io.BytesIO(base64.b64decode(png)))
    assert image.size[0] <= 1216  # fits the page at 1280 px without scaling up
