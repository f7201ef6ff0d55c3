"""The pump_fleet example: a deterministic simulator whose CSV matches its config (dataset, front graph, drift)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import pytest

from examples.pump_fleet import simulate
from examples.pump_fleet.check import learnability
from shared.config import load_settings
from shared.dataset import CategoricalColumn
from shared.schemas import parse_utc
from tests.conftest import ROOT

CONFIG = ROOT / "examples" / "pump_fleet" / "config.yaml"


@pytest.fixture(scope="module")
def settings():
    return load_settings(CONFIG, env={})


@pytest.fixture(scope="module")
def raw(settings) -> pd.DataFrame:
    return pd.read_csv(settings.volume / settings.dataset.raw_file, keep_default_na=False)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_bytes():
    first = simulate.simulate(rows=2000, seed=7)
    assert simulate.simulate(rows=2000, seed=7) == first
    assert simulate.simulate(rows=2000, seed=8) != first


def test_the_committed_file_is_what_the_simulator_writes_and_its_sha256_is_the_configs(settings, tmp_path):
    committed = (settings.volume / settings.dataset.raw_file).read_bytes()
    digest = hashlib.sha256(committed).hexdigest()
    assert digest == settings.dataset.raw_sha256
    out = tmp_path / "deep" / "pump_fleet.csv"
    assert simulate.main(["--out", str(out)]) == 0
    assert out.read_bytes() == committed


def test_write_replaces_a_file_whole_and_refuses_too_few_rows(tmp_path):
    out = tmp_path / "raw.csv"
    out.write_text("old")
    simulate.write(out, rows=150, seed=1)
    assert out.read_bytes() == simulate.simulate(rows=150, seed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["raw.csv"]  # no temp file left beside it
    with pytest.raises(ValueError, match="rows must be at least 100"):
        simulate.simulate(rows=10)
    assert simulate.main(["--out", str(out), "--rows", "10"]) == 2


def test_every_source_column_is_present_and_nothing_else(settings, raw):
    ds = settings.dataset
    assert list(raw.columns) == simulate.HEADER
    assert set(raw.columns) == set(ds.source_to_name)
    assert len(raw) == simulate.DEFAULT_ROWS >= 20_000
    assert settings.data.train_rows + settings.data.production_rows == len(raw)


def test_numeric_readings_hold_their_declared_ranges(settings, raw):
    for col in settings.dataset.numeric:
        values = raw[col.source]
        assert values.dtype.kind == "f", col.source
        low, high = col.range
        assert values.between(low, high).all(), f"{col.source}: {values.min()}..{values.max()} outside {col.range}"


def test_categorical_levels_are_declared_and_all_used(settings, raw):
    (model,) = settings.dataset.categorical
    assert isinstance(model, CategoricalColumn) and len(model.levels) > 3
    assert sorted(raw[model.source].unique()) == sorted(model.levels)


def test_timestamps_are_iso_8601_and_strictly_increasing(settings, raw):
    order = settings.dataset.order
    assert order.kind == "timestamp"
    times = pd.Series([parse_utc(t) for t in raw[order.source]])
    assert times.is_monotonic_increasing and times.is_unique


def test_label_values_are_declared_and_the_failure_rate_is_a_few_percent(settings, raw):
    ds = settings.dataset
    y = ds.label.encode(raw[ds.label.source])  # raises on an undeclared value
    assert set(raw[ds.label.source]) == {"yes", "no"}
    assert 0.02 <= y.mean() <= 0.06
    train, production = y.iloc[: settings.data.train_rows], y.iloc[settings.data.train_rows :]
    assert 0.02 <= train.mean() <= 0.06 and 0.02 <= production.mean() <= 0.06


def test_the_failure_cause_is_the_label_in_disguise_and_never_a_feature(settings, raw):
    ds = settings.dataset
    kept = {c.source for c in ds.never_features}
    assert kept == {"Pump ID", "Failure cause"}
    assert not kept & {c.source for c in ds.features}
    failed = raw[ds.label.source] == "yes"
    assert (raw["Failure cause"] != "").equals(failed)


def test_derived_features_are_finite_on_every_row(settings, raw):
    ds = settings.dataset
    cleaned = raw.rename(columns=ds.source_to_name)
    engineered = ds.engineer(ds.encode(cleaned), derived=True)
    assert pd.DataFrame(engineered).notna().all().all()
    assert abs(engineered).max() < 1e6


def test_a_forest_learns_failure_from_one_reading_through_the_derived_features(settings):
    result = learnability(settings)
    assert result["f1_derived"] > 0.8, result
    assert result["f1_derived"] > result["f1_raw"] + 0.3, result


def test_the_csv_is_plain_utf8_with_unix_line_ends():
    data = simulate.simulate(rows=200, seed=3)
    text = data.decode("utf-8")
    assert "\r" not in text and text.endswith("\n")
    assert len(pd.read_csv(io.StringIO(text))) == 200


def test_the_onnx_front_graph_computes_the_reference_features_on_the_example(settings, raw):
    import onnxruntime as ort

    from services.trainer.export import front_graph

    ds = settings.dataset
    x = ds.encode(raw.rename(columns=ds.source_to_name))
    graph = front_graph(ds, derived=True)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(None, {"readings": x})[0], ds.engineer(x, derived=True))


def _recipes(settings) -> list[dict]:
    """The day-2 recipes of the example's config."""
    assert settings.data.day2.recipes, "the example declares its drift recipes"
    return [r.model_dump() for r in settings.data.day2.recipes]


def test_the_drift_recipes_name_its_columns_and_a_vibration_offset_is_flagged_where_nature_is_not(settings, raw):
    from services.monitor.drift import numeric_drift

    recipes = _recipes(settings)
    numeric = {c.name for c in settings.dataset.numeric}
    assert recipes and all(r["column"] in numeric and r["kind"] in ("offset", "scale") for r in recipes), recipes
    (offset,) = [r for r in recipes if r["column"] == "vibration_rms_mm_s" and r["kind"] == "offset"]
    column = raw["Vibration RMS [mm/s]"].to_numpy(dtype=float)
    train, window = column[: settings.data.train_rows], column[settings.data.train_rows :][:1000]
    thresholds = settings.monitoring.thresholds
    assert not numeric_drift(train, window, thresholds=thresholds, alpha=settings.monitoring.drift.alpha).flagged
    noise = np.random.default_rng(0).normal(0.0, offset["noise_std"], len(window))
    assert numeric_drift(train, window + offset["value"] + noise, thresholds=thresholds,
                         alpha=settings.monitoring.drift.alpha).flagged
