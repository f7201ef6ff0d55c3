"""Cleaning from the dataset section alone: a small made-up data set (timestamps, text levels, text labels)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from services.prep.clean import clean
from services.prep.recipes import apply_recipe, decimals
from shared.config import DriftRecipe
from shared.dataset import DatasetConfig
from shared.errors import DataValidationError

PUMPS = DatasetConfig.model_validate({
    "name": "pumps",
    "raw_file": "data/raw/pumps.csv",
    "raw_sha256": "0" * 64,
    "order": {"name": "ts", "source": "Timestamp", "kind": "timestamp"},
    "label": {"name": "broken", "source": "Status", "failure": ["BROKEN"], "normal": ["OK"]},
    "features": [
        {"name": "pressure_bar", "source": "Pressure", "kind": "numeric", "unit": "bar", "range": [0.0, 10.0]},
        {"name": "flow_l_s", "source": "Flow", "kind": "numeric", "unit": "l/s", "range": [0, 100]},
        {"name": "site", "source": "Site", "kind": "categorical", "levels": ["north", "south"]},
    ],
    "never_features": [{"name": "pump_id", "source": "Pump"}],
})
WHERE = "pumps.csv"


def _raw(**changes) -> pd.DataFrame:
    df = pd.DataFrame({
        "Pump": ["a", "b", "c", "d"],
        "Timestamp": ["2026-01-01T00:00:03Z", "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z", "2026-01-01T00:00:04Z"],
        "Pressure": [1.5, 2.25, 3.0, 4.5],
        "Flow": [10, 20, 30, 40],
        "Site": ["north", "south", "north", "south"],
        "Status": ["OK", "BROKEN", "OK", "OK"],
        "Comment": ["", "x", "", ""],
    })
    for col, (row, value) in changes.items():
        df[col] = df[col].astype(object)
        df.loc[row, col] = value
    return df


def test_a_dataset_from_config_alone_is_renamed_typed_and_sorted_by_time():
    df, params = clean(_raw(), PUMPS, where=WHERE)
    assert list(df.columns) == ["pump_id", "ts", "pressure_bar", "flow_l_s", "site", "broken"]  # the raw order
    assert df.pump_id.tolist() == ["b", "c", "a", "d"]
    assert df.broken.tolist() == [1, 0, 0, 0] and df.broken.dtype == np.int64
    assert params["label_counts"] == {"failure": 1, "normal": 3}
    assert params["dropped_columns"] == ["Comment"]
    assert params["ranges"] == {"pressure_bar": [0.0, 10.0], "flow_l_s": [0.0, 100.0]}


@pytest.mark.parametrize("changes, message", [
    ({"Pressure": (2, 11.0), "Flow": (3, 400)},
     "2 row(s) hold a value outside its declared range; the first at line 4: pressure_bar = 11.0, range [0, 10]"),
    ({"Flow": (1, -1)}, "1 row(s) hold a value outside its declared range; the first at line 3: flow_l_s = -1"),
    ({"Site": (1, "east")}, "1 row(s) with site not one of its levels ['north', 'south']; the first at line 3: 'east'"),
    ({"Status": (0, "MAYBE")},
     "1 row(s) with broken not among failure ['BROKEN'] / normal ['OK']; the first at line 2"),
    ({"Timestamp": (2, "yesterday")}, "1 row(s) with ts not an ISO 8601 time"),
    ({"Timestamp": (3, "2026-01-01T00:00:01Z")},
     "1 row(s) with ts repeated (the time order must be unique); the first at line 5"),
    ({"Pressure": (1, "high")}, "1 row(s) with pressure_bar not a number; the first at line 3: 'high'"),
    ({"Pressure": (0, float("inf"))}, "1 row(s) with pressure_bar not a finite number; the first at line 2"),
    ({"Flow": (0, None)}, "1 row(s) with flow_l_s missing; the first at line 2"),
])
def test_a_bad_row_is_refused_in_one_line_naming_count_line_column_and_value(changes, message):
    with pytest.raises(DataValidationError) as err:
        clean(_raw(**changes), PUMPS, where=WHERE)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{WHERE}: ") and message in text


def test_a_configured_column_missing_from_the_csv_is_named_with_the_file():
    with pytest.raises(DataValidationError, match=r"pumps.csv: column 'Flow' of dataset pumps is missing"):
        clean(_raw().drop(columns=["Flow"]), PUMPS, where=WHERE)


def test_a_levels_recipe_redraws_a_share_of_a_categorical_feature_reproducibly():
    df, _ = clean(_raw(), PUMPS, where=WHERE)
    big = pd.concat([df] * 500, ignore_index=True)
    recipe = DriftRecipe(name="more_south", column="site", kind="levels", level="south", share=0.5)
    out = apply_recipe(big, recipe, seed=1, dataset=PUMPS)
    assert out.equals(apply_recipe(big, recipe, seed=1, dataset=PUMPS))
    assert 0.70 < (out.site == "south").mean() < 0.80  # half + half of the other half
    assert out.drop(columns="site").equals(big.drop(columns="site"))


def test_a_numeric_recipe_keeps_the_data_precision_and_the_range():
    df, _ = clean(_raw(), PUMPS, where=WHERE)
    recipe = DriftRecipe(name="leak", column="pressure_bar", kind="offset", value=7.0, noise_std=0.5)
    out = apply_recipe(df, recipe, seed=1, dataset=PUMPS)
    assert out.pressure_bar.max() <= 10.0 and decimals(out.pressure_bar.to_numpy()) <= 2
    flow = apply_recipe(df, DriftRecipe(name="f", column="flow_l_s", kind="scale", value=1.33), seed=1, dataset=PUMPS)
    assert flow.flow_l_s.dtype == np.int64 and flow.flow_l_s.tolist() == [27, 40, 13, 53]


def test_a_never_feature_may_be_empty_but_a_feature_may_not():
    df, _ = clean(_raw(Pump=(1, None)), PUMPS, where=WHERE)  # e.g. a failure cause recorded only for failures
    assert df.pump_id.isna().sum() == 1 and len(df) == 4
    with pytest.raises(DataValidationError, match="site missing"):
        clean(_raw(Site=(1, None)), PUMPS, where=WHERE)
