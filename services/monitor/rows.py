"""The monitor's rows, named: a prediction waiting for its label, a label waiting for its prediction, an input
in the drift window and a labelled row in a version's performance window.

NamedTuples: as cheap as lists in the ingest loop, and saved in the state file as JSON arrays (field order =
array order). A row's readings are one `values` tuple in the dataset's feature order (config.yaml `dataset:`):
a categorical feature as its level (text), a numeric feature as a float. `Window` summarises a window of rows
in the report.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from shared.dataset import CategoricalColumn, DatasetConfig
from shared.schemas import PredictionRecord

Value = str | float


class InputRow(NamedTuple):
    """One input served (the drift window): when, by which version, the readings in feature order."""

    time: str
    model_version: str
    values: tuple[Value, ...]


class PendingPrediction(NamedTuple):
    """A logged prediction still waiting for its label (state.pending, by request_id)."""

    time: str
    model_version: str
    values: tuple[Value, ...]  # the readings in feature order
    probability: float
    predicted: int  # the served label

    def inputs(self) -> InputRow:
        return InputRow(self.time, self.model_version, self.values)


class OrphanLabel(NamedTuple):
    """A label whose prediction has not been read yet (state.orphans, by request_id)."""

    time: str  # feedback time
    label: int


class WindowRow(NamedTuple):
    """One labelled prediction in its model version's performance window (state.windows)."""

    time: str  # prediction time
    label: int  # the true label
    predicted: int  # the served label
    probability: float


def input_columns(dataset: DatasetConfig) -> list[str]:
    """The drift window's columns: time, model_version and the features in order."""
    return ["time", "model_version", *dataset.feature_names]


def readings(inputs: dict, dataset: DatasetConfig) -> tuple[Value, ...]:
    """A logged prediction's inputs as values in feature order; ValueError/KeyError/TypeError names what is wrong."""
    out: list[Value] = []
    for c in dataset.features:
        if c.name not in inputs:
            raise KeyError(f"inputs lack {c.name}")
        v = inputs[c.name]
        if isinstance(c, CategoricalColumn):
            if not isinstance(v, str) or v not in c.levels:
                raise ValueError(f"{c.name}: {v!r} is not one of its levels {c.levels}")
            out.append(v)
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{c.name}: {v!r} is not a finite number")
            out.append(float(v))
    return tuple(out)


def compact_prediction(rec: PredictionRecord, dataset: DatasetConfig) -> PendingPrediction:
    """The prediction as a pending row; ValueError/KeyError/TypeError if its inputs are not valid readings."""
    values = readings(rec.inputs, dataset)
    probability = float(rec.probability)
    if not math.isfinite(probability):
        raise ValueError("probability must be a finite number")
    return PendingPrediction(rec.time, rec.model_version, values, probability, int(rec.label))


class Window(BaseModel):
    """A window of rows (labelled rows or inputs): how many, its size limit, its first and last time."""

    model_config = ConfigDict(extra="forbid")

    rows: int
    size: int
    first_time: str | None = None
    last_time: str | None = None
