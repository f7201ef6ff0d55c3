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
    rep = drift_report(train, window, dataset=settings.dataset, thresholds=settings.monitoring.thresholds, tests=settings.monitoring.drift, min_samples=settings.monitoring.drift_min_samples)
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
    rep = drift_report(train, window, dataset=settings.dataset, thresholds=settings.monitoring.thresholds, tests=settings.monitoring.drift, min_samples=settings.monitoring.drift_min_samples)
    assert column in rep.flagged
    # The recipe is applied to the later timeframe, so air (and process) temperature drift naturally too;
    # the features neither the recipe nor time touched stay quiet.
    assert not (UNTOUCHED - {column}) & set(rep.flagged)


def test_nothing_is_flagged_below_the_minimum_sample(data):
    settings, paths, train = data
    window = day2(paths, "torque_shift").iloc[: settings.monitoring.drift_min_samples - 1]
    rep = drift_report(train, window, dataset=settings.dataset, thresholds=settings.monitoring.thresholds, tests=settings.monitoring.drift, min_samples=settings.monitoring.drift_min_samples)
    assert rep.status == "insufficient_data" and rep.flagged == []


def test_same_distribution_is_not_flagged(data):
    settings, _, train = data
    shuffled = train.sample(frac=1.0, random_state=0)  # air temperature wanders with time: compare like with like
    rep = drift_report(shuffled.iloc[:6500], shuffled.iloc[6500:], dataset=settings.dataset, thresholds=settings.monitoring.thresholds, tests=settings.monitoring.drift, min_samples=200)
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
    rep = drift_report(train, pd.DataFrame(window), dataset=settings.dataset, thresholds=settings.monitoring.thresholds, tests=settings.monitoring.drift, min_samples=200)
    assert "type" in rep.flagged and rep.features["type"].effect_size["cramers_v"] > 0.1


def _recipes(settings) -> list[str]:
    return ["natural", *(r.name for r in settings.data.day2.recipes)]


def test_each_day2_verdict_holds_when_the_window_doubles(data):
    """The monitor's drift window (window_size, at least drift_min_samples) and twice that: the same features
    flagged, each recipe's own feature among them, and no feature's verdict changes."""
    settings, paths, train = data
    mon = settings.monitoring
    rows = max(mon.window_size, mon.drift_min_samples)
    for name in _recipes(settings):
        df = day2(paths, name)
        assert len(df) >= 2 * rows, name
        small, large = (drift_report(train, df.iloc[-n:], dataset=settings.dataset, thresholds=mon.thresholds,
                                     tests=mon.drift, min_samples=mon.drift_min_samples) for n in (rows, 2 * rows))
        assert small.flagged and small.flagged == large.flagged, (name, small.flagged, large.flagged)
        assert {k: f.verdict for k, f in small.features.items()} == {k: f.verdict for k, f in large.features.items()}
        recipe = next((r for r in settings.data.day2.recipes if r.name == name), None)
        if recipe:
            assert recipe.column in small.flagged
        f = large.features[small.flagged[0]]
        assert (f.n_reference, f.n_production) == (len(train), 2 * rows)
        assert f.p_adjusted is not None and f.p_value is not None and f.p_adjusted >= f.p_value


def test_adjusted_p_values_follow_holm_and_benjamini_hochberg():
    from scipy import stats

    from services.monitor.drift import adjust_pvalues

    p = [0.004, 0.3, None, 0.006, 0.008, 0.0001]
    known = [x for x in p if x is not None]
    bh = adjust_pvalues(p, "bh")
    assert bh[2] is None
    assert [x for x in bh if x is not None] == pytest.approx(list(stats.false_discovery_control(known)))
    holm = adjust_pvalues(p, "holm")
    # Holm by its definition: the i-th smallest of m times (m - i + 1), non-decreasing, capped at 1.
    assert holm == pytest.approx([0.016, 0.3, None, 0.018, 0.018, 0.0005])
    assert adjust_pvalues(p, "none") == p
    # Three borderline tests at alpha 0.01: Benjamini-Hochberg keeps all three, Holm none.
    borderline = [0.004, 0.006, 0.008]
    assert all(x < 0.01 for x in adjust_pvalues(borderline, "bh"))
    assert all(x >= 0.01 for x in adjust_pvalues(borderline, "holm"))


def test_a_borderline_feature_is_flagged_alone_but_not_after_the_correction(data):
    """Synthetic: six features drawn alike, one shifted just enough that its raw p-value lies between alpha / 6
    and alpha. Uncorrected it is flagged; Holm and Benjamini-Hochberg (one small p among six) both refuse it."""
    from tests.ai4i import DATASET

    settings, _, _ = data
    alpha = 0.01
    thresholds = settings.monitoring.thresholds.model_copy(update={"psi": 0.05})
    rng = np.random.default_rng(7)
    categorical = [c for c in DATASET.features if c.name not in {n.name for n in DATASET.numeric}]

    def frame(n):
        df = pd.DataFrame({c.name: rng.normal(size=n) for c in DATASET.numeric})
        for c in categorical:
            df[c.name] = rng.choice(c.levels, size=n)
        return df

    reference, production = frame(5000), frame(300)
    shifted = DATASET.numeric[0].name
    found = None
    for delta in np.arange(0.05, 0.8, 0.01):
        window = production.assign(**{shifted: production[shifted] + delta})
        alone = drift_report(reference, window, dataset=DATASET, thresholds=thresholds,
                             tests=settings.monitoring.drift.model_copy(update={"correction": "none", "alpha": alpha}),
                             min_samples=200)
        f = alone.features[shifted]
        if alpha / len(DATASET.features) < f.p_value < alpha and f.effect_size["psi"] > thresholds.psi:
            found = window, alone
            break
    assert found, "no shift puts the p-value between alpha / m and alpha"
    window, alone = found
    assert alone.flagged == [shifted] and alone.features[shifted].p_adjusted == alone.features[shifted].p_value
    for correction in ("holm", "bh"):
        rep = drift_report(reference, window, dataset=DATASET, thresholds=thresholds,
                           tests=settings.monitoring.drift.model_copy(update={"correction": correction, "alpha": alpha}),
                           min_samples=200)
        f = rep.features[shifted]
        assert rep.flagged == [], correction
        assert f.verdict == "not significant" and f.p_adjusted >= alpha > f.p_value, correction
        assert rep.correction == correction and rep.alpha == alpha
