"""The dataset section: its schema checks, derived-feature expressions, and parity with the ONNX front graph."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from shared.dataset import DatasetConfig
from shared.errors import explain
from shared.expressions import parse_expr
from tests.conftest import ROOT

AI4I = yaml.safe_load((ROOT / "config.yaml").read_text())["dataset"]


def _with(**changes) -> dict:
    d = yaml.safe_load(yaml.safe_dump(AI4I))
    for key, value in changes.items():
        d[key] = value
    return d


def _refusal(d: dict) -> str:
    with pytest.raises(ValidationError) as err:
        DatasetConfig.model_validate(d)
    return explain(err.value)


def test_the_default_dataset_is_valid_and_orders_the_model_input():
    ds = DatasetConfig.model_validate(AI4I)
    assert ds.feature_names[0] == "type" and len(ds.feature_names) == 6
    assert ds.column("torque_nm").accepted_names == ["torque_nm", "Torque [Nm]"]
    assert ds.engineered_names(derived=True)[-3:] == ["temp_diff_k", "power_w", "strain_nm_min"]


def test_derived_features_compute_in_float32_in_the_written_order():
    ds = DatasetConfig.model_validate(AI4I)
    df = pd.DataFrame({"type": ["L", "H"], "air_temperature_k": [298.1, 300.0], "process_temperature_k": [308.6, 311.2],
                       "rotational_speed_rpm": [1551.0, 1400.0], "torque_nm": [42.8, 60.1], "tool_wear_min": [0.0, 210.0]})
    x = ds.encode(df)
    out = ds.engineer(x, derived=True)
    torque, speed = np.float32(df.torque_nm.to_numpy(np.float32)), df.rotational_speed_rpm.to_numpy(np.float32)
    expected_power = torque * speed * np.float32(2 * np.pi / 60)
    assert out.dtype == np.float32
    assert np.array_equal(out[:, -2], expected_power)
    assert out[:, 5:8].tolist() == [[1, 0, 0], [0, 0, 1]]  # one-hot of L and H


@pytest.mark.parametrize("derived, reason", [
    ({"name": "x", "expr": "torque_nm / rotational_speed_rpm"}, "divides by rotational_speed_rpm, which can be 0"),
    ({"name": "x", "expr": "torque_nm / (tool_wear_min - 5)"}, "can be 0 within the declared ranges"),
    ({"name": "x", "expr": "torque_nm * humidity"}, "unknown column 'humidity'"),
    ({"name": "x", "expr": "torque_nm * twf"}, "uses twf, which is never a feature"),
    ({"name": "x", "expr": "torque_nm * type"}, "categorical feature"),
    ({"name": "x", "expr": "torque_nm ** 2"}, "unsupported syntax"),
    ({"name": "x", "expr": "__import__('os')"}, "unsupported syntax"),
    ({"name": "x", "expr": "torque_nm *"}, "is not valid"),
    ({"name": "x", "expr": "2 * pi"}, "uses no column"),
])
def test_bad_derived_features_are_refused_naming_the_feature_and_why(derived, reason):
    message = _refusal(_with(derived=[derived]))
    assert "derived feature x" in message and reason in message, message


def test_a_division_by_a_column_that_cannot_be_zero_is_fine():
    d = _with(derived=[{"name": "speed_per_k", "expr": "rotational_speed_rpm / air_temperature_k"}])
    assert DatasetConfig.model_validate(d).derived[0].name == "speed_per_k"


def test_a_leakage_column_as_a_feature_is_refused():
    feats = AI4I["features"] + [{"name": "twf", "source": "TWF", "kind": "numeric", "range": [0, 1]}]
    assert "twf" in _refusal(_with(features=feats)) and "unique" in _refusal(_with(features=feats))


def test_label_values_other_than_the_declared_ones_are_named():
    ds = DatasetConfig.model_validate(AI4I)
    with pytest.raises(ValueError, match=r"1 row\(s\) hold values other than the declared failure \[1\] / normal \[0\]: \['2'\]"):
        ds.label.encode(pd.Series([0, 1, 2]))
    strings = ds.label.model_copy(update={"failure": ["yes"], "normal": ["no"]})
    assert strings.encode(pd.Series(["no", "yes", " yes"])).tolist() == [0, 1, 1]


def test_expression_interval_arithmetic():
    e = parse_expr("(a - b) / (c + 1)", numeric={"a", "b", "c"})
    assert e.interval({"a": (0, 10), "b": (0, 5), "c": (1, 3)}) == (-2.5, 5.0)
