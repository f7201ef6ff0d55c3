"""reading.py: the request model, encoder and example built from a dataset section, on made-up data sets (one
feature, several categoricals, none), checked against DatasetConfig.encode, the trainer's encoding."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from services.inference.reading import ReadingSchema
from services.inference.schemas import explain
from shared.dataset import DatasetConfig


def dataset(*features: dict) -> DatasetConfig:
    return DatasetConfig.model_validate({
        "name": "made_up", "raw_file": "data/raw/x.csv", "raw_sha256": "0" * 64,
        "order": {"name": "t", "source": "T", "kind": "integer"},
        "label": {"name": "y", "source": "Y", "failure": [1], "normal": [0]},
        "features": list(features),
    })


SPEED = {"name": "speed", "source": "Speed [m/s]", "kind": "numeric", "unit": "m/s", "range": [-5.0, 5.0]}
COLOUR = {"name": "colour", "source": "Colour", "kind": "categorical", "levels": ["red", "green", "blue"],
          "aliases": ["color"]}
SIZE = {"name": "size", "source": "Size", "kind": "categorical", "levels": ["S", "M", "L", "XL"]}
LOAD = {"name": "load", "source": "Load", "kind": "numeric", "range": [0.0, 1.0]}


@pytest.mark.parametrize("features", [(SPEED,), (COLOUR,), (SPEED, LOAD), (COLOUR, SPEED, SIZE, LOAD),
                                      (SIZE, COLOUR)])
def test_the_encoding_is_the_trainers(features):
    ds = dataset(*features)
    schema = ReadingSchema.build(ds)
    rng = np.random.default_rng(7)
    rows = []
    for _ in range(20):
        row = {}
        for c in ds.features:
            row[c.name] = str(rng.choice(c.levels)) if c.kind == "categorical" else float(rng.uniform(*c.range))
        rows.append(row)
    parsed = [schema.model.model_validate(r).__dict__ for r in rows]
    got = np.array([schema.encode(v) for v in parsed], dtype=np.float32)
    np.testing.assert_array_equal(got, ds.encode(pd.DataFrame(rows)))
    assert schema.probe().shape == (2, len(ds.features))
    np.testing.assert_array_equal(schema.probe()[0], ds.encode(pd.DataFrame([schema.example]))[0])


def test_every_accepted_name_and_the_documented_field():
    schema = ReadingSchema.build(dataset(COLOUR, SPEED))
    for key in ("colour", "Colour", "color"):
        assert schema.model.model_validate({key: "blue", "Speed [m/s]": -1.5}).__dict__ == {"colour": "blue",
                                                                                             "speed": -1.5}
    doc = schema.model.model_json_schema()
    assert doc["properties"]["colour"]["enum"] == ["red", "green", "blue"]
    assert doc["properties"]["speed"]["description"] == "m/s, between -5 and 5 (also accepted as 'Speed [m/s]')."
    assert doc["examples"] == [{"colour": "red", "speed": 0.0}]
    assert schema.by_source(schema.example) == {"Colour": "red", "Speed [m/s]": 0.0}


@pytest.mark.parametrize("value,kind", [("1.0", "float_type"), (True, "float_type"), (float("nan"), "finite_number"),
                                        (5.5, "less_than_equal")])
def test_numbers_are_strict_finite_and_in_range(value, kind):
    schema = ReadingSchema.build(dataset(SPEED))
    with pytest.raises(ValidationError) as e:
        schema.model.model_validate({"speed": value})
    assert e.value.errors()[0]["type"] == kind


def test_an_unknown_level_names_the_field_and_levels():
    schema = ReadingSchema.build(dataset(SIZE, COLOUR))
    with pytest.raises(ValidationError) as e:
        schema.model.model_validate({"size": "XXL", "color": "red"})
    refusal = explain(e.value, schema.accepted)
    assert refusal.status == 422
    assert refusal.detail == "invalid input: size: unknown level 'XXL': expected one of 'S', 'M', 'L' or 'XL'"
