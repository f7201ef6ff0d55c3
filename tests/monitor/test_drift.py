"""Drift per feature with the default thresholds of config.yaml, on the real day-2 data sets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from services.monitor.drift import drift_report, psi
from shared.datastore import DataStore
from shared.paths import Paths
from tests.monitor.helpers import day2

UNTOUCHED = {"rotational_speed_rpm", "torque_nm", "tool_wear_min"}


@pytest.fixture(scope="module")
def data(prepped_template):
    from shared.config import load_settings

    settings = load_settings(prepped_template / "config.yaml", env={})
    paths = Paths.from_settings(settings)
    train = DataStore(paths=paths).read_table(paths.train_file(settings.data.version))
    return settings, paths, train


@pytest.mark.parametrize("rows", [500, 3000])
def test_natural_split_flags_air_temperature_not_speed_torque_or_wear(data, rows):
    settings, paths, train = data
    window = day2(paths, "natural").iloc[-rows:]
    rep = drift_report(train, window, dataset=settings.dataset, thresholds=settings.monitoring.thresholds, min_samples=settings.monitoring.drift_min_samples)
    assert rep.status == "ok"
    assert "air_temperature_k" in rep.flagged
    assert not UNTOUCHED & set(rep.flagged)
    assert "type" not in rep.flagged
    f = rep.features["air_temperature_k"]
    assert f.n_reference == 7000 and f.n_production == rows
    assert f.effect_size["psi"] > settings.monitoring.thresholds.psi and f.p_value < 1e-10


@pytest.mark.parametrize("recipe,column", [("torque_shift", "torque_nm"), ("accelerated_tool_wear", "tool_wear_min"),
                                           ("air_temp_calibration", "air_temperature_k")])
def test_a_drift_recipe_flags_its_feature_and_not_the_untouched_ones(data, recipe, column):
    settings, paths, train = data
    window = day2(paths, recipe).iloc[-500:]
    rep = drift_report(train, window, dataset=settings.dataset, thresholds=settings.monitoring.thresholds, min_samples=settings.monitoring.drift_min_samples)
    assert column in rep.flagged
    # The recipe is applied to the later timeframe, so air (and process) temperature drift naturally too;
    # the features neither the recipe nor time touched stay quiet.
    assert not (UNTOUCHED - {column}) & set(rep.flagged)


def test_nothing_is_flagged_below_the_minimum_sample(data):
    settings, paths, train = data
    window = day2(paths, "torque_shift").iloc[: settings.monitoring.drift_min_samples - 1]
    rep = drift_report(train, window, dataset=settings.dataset, thresholds=settings.monitoring.thresholds, min_samples=settings.monitoring.drift_min_samples)
    assert rep.status == "insufficient_data" and rep.flagged == []


def test_same_distribution_is_not_flagged(data):
    settings, _, train = data
    shuffled = train.sample(frac=1.0, random_state=0)  # air temperature wanders with time: compare like with like
    rep = drift_report(shuffled.iloc[:6500], shuffled.iloc[6500:], dataset=settings.dataset, thresholds=settings.monitoring.thresholds, min_samples=200)
    assert rep.flagged == []


def test_psi_uses_ten_training_quantile_bins_and_is_zero_for_identical_samples():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=5000)
    value, edges, ref_share, _ = psi(ref, ref)
    assert value == pytest.approx(0.0, abs=1e-12)
    assert len(edges) == 9 and np.allclose(ref_share, 0.1, atol=1e-3)
    shifted, *_ = psi(ref, ref + 1.0)
    assert shifted > 0.5


def test_type_shift_is_flagged_by_chi_square(data):
    settings, paths, train = data
    window = day2(paths, "natural").iloc[-500:].copy()
    window["type"] = np.where(np.arange(500) % 2 == 0, "H", window["type"])
    rep = drift_report(train, pd.DataFrame(window), dataset=settings.dataset, thresholds=settings.monitoring.thresholds, min_samples=200)
    assert "type" in rep.flagged and rep.features["type"].effect_size["cramers_v"] > 0.1
