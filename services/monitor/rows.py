"""The monitor's rows, named: a prediction waiting for its label, a label waiting for its prediction, an input
in the drift window and a labelled row in a version's performance window.

NamedTuples: as cheap as the lists they replace in the ingest loop, and saved in the state file as the same
JSON arrays (field order = array order), so state files written before them load unchanged. `Window`
summarises a window of them in the report.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from shared.features import NUMERIC_FEATURES, TYPE_CODES
from shared.schemas import PredictionRecord


class InputRow(NamedTuple):
    """One input served (the drift window): when, by which version, the six raw readings."""

    time: str
    model_version: str
    type: str
    air_temperature_k: float
    process_temperature_k: float
    rotational_speed_rpm: float
    torque_nm: float
    tool_wear_min: float


class PendingPrediction(NamedTuple):
    """A logged prediction still waiting for its label (state.pending, by request_id)."""

    time: str
    model_version: str
    type: str
    air_temperature_k: float
    process_temperature_k: float
    rotational_speed_rpm: float
    torque_nm: float
    tool_wear_min: float
    probability: float
    predicted: int  # the served label

    def inputs(self) -> InputRow:
        return InputRow(
            self.time,
            self.model_version,
            self.type,
            self.air_temperature_k,
            self.process_temperature_k,
            self.rotational_speed_rpm,
            self.torque_nm,
            self.tool_wear_min,
        )


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


# The drift window's columns: time, model_version and the model's raw inputs (shared.features.RAW_COLUMNS).
INPUT_COLUMNS = list(InputRow._fields)


def compact_prediction(rec: PredictionRecord) -> PendingPrediction:
    """The prediction as a pending row; ValueError/KeyError/TypeError if its inputs are not six valid readings."""
    inputs = rec.inputs
    ptype = inputs["type"]
    if ptype not in TYPE_CODES:
        raise ValueError(f"unknown product type {ptype!r}")
    air, process, speed, torque, wear = (float(inputs[c]) for c in NUMERIC_FEATURES)
    probability = float(rec.probability)
    if not all(map(math.isfinite, (air, process, speed, torque, wear, probability))):
        raise ValueError("inputs and probability must be finite numbers")
    return PendingPrediction(
        rec.time, rec.model_version, ptype, air, process, speed, torque, wear, probability, int(rec.label)
    )


class Window(BaseModel):
    """A window of rows (labelled rows or inputs): how many, its size limit, its first and last time."""

    model_config = ConfigDict(extra="forbid")

    rows: int
    size: int
    first_time: str | None = None
    last_time: str | None = None
