"""The monitor's rows, named: a prediction waiting for its label, a label waiting for its prediction, an input
in the drift window and a labelled row in a version's performance window.

NamedTuples: as cheap as lists in the ingest loop; the store (services.monitor.store) keeps them as table rows
(the readings as one JSON array). A row's readings are one `values` tuple in the dataset's feature order
(config.yaml `dataset:`): a categorical feature as its level (text), a numeric feature as a float. `Window`
summarises a window of rows in the report. `parse_prediction` / `parse_feedback` read one log line (a fast path
for the usual shape; the pydantic record for any other, so both accept the same lines and errors name the key).
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import partial
from operator import itemgetter
from typing import NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict

from shared.dataset import CategoricalColumn, DatasetConfig
from shared.schemas import FeedbackRecord, PredictionRecord, ShadowScore, parse_utc

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


_PREDICTION_KEYS = frozenset(PredictionRecord.model_fields) - {"shadow"}
_SHADOWED_KEYS = _PREDICTION_KEYS | {"shadow"}  # a line the live shadow scored too (deployment.shadow_version)
_SHADOW_KEYS = frozenset(ShadowScore.model_fields)
_FEEDBACK_KEYS = frozenset(FeedbackRecord.model_fields)
_NUMBER = (float, int)
_PREDICTION_NAMES = ("time", "request_id", "model_version", "inputs", "probability", "label", "threshold")
assert frozenset(_PREDICTION_NAMES) == _PREDICTION_KEYS  # the fast path reads every key of the record
_PREDICTION_FIELDS = itemgetter(*_PREDICTION_NAMES)
_pending = partial(tuple.__new__, PendingPrediction)  # PendingPrediction(*fields) without a Python frame


def _plain_shadow(d: dict) -> bool:
    """The line's `shadow` is plainly a ShadowScore (else the line takes the full check)."""
    sh = d["shadow"]
    return (
        type(sh) is dict
        and sh.keys() == _SHADOW_KEYS
        and type(sh["model_version"]) is str
        and type(sh["probability"]) in _NUMBER
        and type(sh["label"]) is int
        and type(sh["threshold"]) in _NUMBER
    )


class PredictionParser:
    """Reads prediction log lines of one dataset: (request_id, pending row) per line. A line in the usual shape
    is read with orjson and checked field by field; any other goes through PredictionRecord, whose error (pydantic
    ValidationError, ValueError, KeyError, TypeError) names what is wrong. Both accept the same lines."""

    def __init__(self, dataset: DatasetConfig) -> None:
        self.dataset = dataset
        self.specs = [
            (c.name, frozenset(c.levels) if isinstance(c, CategoricalColumn) else None) for c in dataset.features
        ]
        self._last_time = ""  # the last time text found valid (lines of one batch share theirs)

    def __call__(self, line: bytes) -> tuple[str, PendingPrediction]:
        try:
            d = orjson.loads(line)
            if type(d) is dict and (
                len(d) == len(_PREDICTION_KEYS)  # and each key (KeyError below): exactly the keys
                or (len(d) == len(_SHADOWED_KEYS) and "shadow" in d and _plain_shadow(d))
            ):
                t, rid, version, inputs, prob, label, threshold = _PREDICTION_FIELDS(d)
                if (
                    type(t) is str
                    and type(rid) is str
                    and type(version) is str
                    and type(inputs) is dict
                    and type(prob) in _NUMBER
                    and type(label) is int
                    and type(threshold) in _NUMBER
                ):
                    if t != self._last_time:
                        parse_utc(t)
                        self._last_time = t
                    values = self._values(inputs)
                    probability = float(prob)
                    if values is not None and probability - probability == 0.0:  # finite
                        return rid, _pending((t, version, values, probability, label))
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
            pass
        rec = PredictionRecord.model_validate_json(line)
        row = compact_prediction(rec, self.dataset)
        parse_utc(rec.time)
        return rec.request_id, row

    def _values(self, inputs: dict) -> tuple[Value, ...] | None:
        """The readings if each is plainly valid (a finite float or int, a known level); else None."""
        out: list[Value] = []
        for name, levels in self.specs:
            v = inputs[name]
            if levels is None:
                if type(v) is float and v - v == 0.0:
                    out.append(v)
                elif type(v) is int:
                    out.append(float(v))
                else:
                    return None
            elif type(v) is str and v in levels:
                out.append(v)
            else:
                return None
        return tuple(out)


def parse_prediction(line: bytes, dataset: DatasetConfig) -> tuple[str, PendingPrediction]:
    """(request_id, pending row) of one prediction log line (see PredictionParser, which a loop should reuse)."""
    return PredictionParser(dataset)(line)


def parse_feedback(line: bytes) -> tuple[str, OrphanLabel, datetime]:
    """(request_id, label, its time) of one feedback log line: the fast path of FeedbackRecord (same verdicts,
    its errors)."""
    try:
        d = orjson.loads(line)
        if type(d) is dict and d.keys() == _FEEDBACK_KEYS:
            t, rid, label = d["time"], d["request_id"], d["label"]
            if type(t) is str and type(rid) is str and type(label) is int and label in (0, 1):
                return rid, OrphanLabel(t, label), parse_utc(t)
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
        pass
    rec = FeedbackRecord.model_validate_json(line)
    return rec.request_id, OrphanLabel(rec.time, rec.label), parse_utc(rec.time)


class Window(BaseModel):
    """A window of rows (labelled rows or inputs): how many, its size limit, its first and last time."""

    model_config = ConfigDict(extra="forbid")

    rows: int
    size: int
    first_time: str | None = None
    last_time: str | None = None
