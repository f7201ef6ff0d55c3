"""The Parquet form of the prediction and feedback logs: columns, partitions, and the way back to a log line.

A compacted segment (services/monitor/compact.py) becomes one Parquet file per partition, Hive-style, under
`logs.parquet_dir`:
    predictions/day=YYYY-MM-DD/model_version=vN/part-<segment stem>~<sha12>.parquet
    feedback/day=YYYY-MM-DD/part-<segment stem>~<sha12>.parquet
Columns of a prediction file: `time` (timestamp, microseconds, UTC), `request_id`, one column per dataset feature
(the record's `inputs` flattened: a numeric feature float64, a categorical one its level as text), `probability`,
`label` (the served label), `threshold`, and `source_line` (the record's line number in its segment). A feedback
file: `time`, `request_id`, `label`, `source_line`. `day` and `model_version` are in the path only (as Hive
partitioning has it: Spark refuses a column that is both in the files and in the path); an engine reading the folder
with partition discovery adds them. The segment is the file name, so (file, source_line) names the log line.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from shared.dataset import CategoricalColumn, DatasetConfig
from shared.paths import PARQUET_PREFIX, PARQUET_SUFFIX, SHA_SEP
from shared.schemas import FeedbackRecord, PredictionRecord, parse_utc

KIND_DIRS = {"prediction": "predictions", "feedback": "feedback"}  # folder of each kind, under logs.parquet_dir
PARTITIONS = {"prediction": ("day", "model_version"), "feedback": ("day",)}
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # shared.schemas.utc_now's, which the services write
TIME_TYPE = pa.timestamp("us", tz="UTC")
LINE_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


def schema(kind: str, dataset: DatasetConfig) -> pa.Schema:
    if kind == "feedback":
        fields = [("time", TIME_TYPE), ("request_id", pa.string()), ("label", pa.int8()), ("source_line", pa.int64())]
        return pa.schema(fields)
    features = [(c.name, pa.string() if isinstance(c, CategoricalColumn) else pa.float64()) for c in dataset.features]
    return pa.schema(
        [
            ("time", TIME_TYPE),
            ("request_id", pa.string()),
            *features,
            ("probability", pa.float64()),
            ("label", pa.int8()),
            ("threshold", pa.float64()),
            ("source_line", pa.int64()),
        ]
    )


def file_name(segment_name: str, segment_sha256: str) -> str:
    """part-<segment stem>~<its sha256's first 12 digits>.parquet: the segment a file came from, in its name (a re-run
    writes the same name; a later segment of the same name, other content, another)."""
    return f"{PARQUET_PREFIX}{segment_name.removesuffix('.jsonl')}{SHA_SEP}{segment_sha256[:12]}{PARQUET_SUFFIX}"


def partition_dir(kind: str, values: tuple[str, ...]) -> str:
    """The partition folder (relative to logs.parquet_dir) of a kind's partition values."""
    parts = [f"{name}={value}" for name, value in zip(PARTITIONS[kind], values, strict=True)]
    return "/".join([KIND_DIRS[kind], *parts])


def partition_values(path: Path) -> dict[str, str]:
    """name -> value of the `name=value` folders a Parquet file lies in."""
    out = {}
    for part in path.parent.parts:
        name, sep, value = part.partition("=")
        if sep:
            out[name] = value
    return out


_PREDICTION_KEYS = frozenset(PredictionRecord.model_fields)
_FEEDBACK_KEYS = frozenset(FeedbackRecord.model_fields)
_NUMBER = (float, int)


class RowParser:
    """One log line -> (partition values, row of the kind's columns); ValueError (or pydantic's ValidationError)
    names what is wrong with a line that is not a valid record. A line in the writer's usual shape is read with
    orjson and checked field by field; any other goes through the record's schema (both accept the same lines)."""

    def __init__(self, kind: str, dataset: DatasetConfig) -> None:
        self.kind = kind
        self.features = [(c.name, frozenset(c.levels) if isinstance(c, CategoricalColumn) else None)
                         for c in dataset.features]  # fmt: skip
        self._time: tuple[str, datetime, str] = ("", datetime.min, "")  # the last time text, parsed, its day

    def __call__(self, line: bytes, line_no: int) -> tuple[tuple[str, ...], dict[str, Any]]:
        row = self._fast(line, line_no)
        if row is not None:
            return row
        if self.kind == "feedback":
            fb = FeedbackRecord.model_validate_json(line)
            t, day = self._parse_time(fb.time)
            return (day,), {"time": t, "request_id": fb.request_id, "label": fb.label, "source_line": line_no}
        rec = PredictionRecord.model_validate_json(line)
        t, day = self._parse_time(rec.time)
        out: dict[str, Any] = {"time": t, "request_id": rec.request_id}
        for name, levels in self.features:
            v = rec.inputs.get(name)
            if levels is not None:
                if not isinstance(v, str) or v not in levels:
                    raise ValueError(f"inputs.{name}: {v!r} is not one of its levels {sorted(levels)}")
            elif isinstance(v, bool) or not isinstance(v, _NUMBER) or not math.isfinite(v):
                raise ValueError(f"inputs.{name}: {v!r} is not a finite number")
            out[name] = v
        if not math.isfinite(rec.probability):
            raise ValueError("probability is not a finite number")
        if rec.label not in (0, 1):
            raise ValueError(f"label {rec.label!r} is not 0 or 1")
        out |= {"probability": rec.probability, "label": rec.label, "threshold": rec.threshold, "source_line": line_no}
        return (day, rec.model_version), out

    def _fast(self, line: bytes, line_no: int) -> tuple[tuple[str, ...], dict[str, Any]] | None:
        """The row of a line in the usual shape, or None (the caller then goes through the schema)."""
        try:
            d = orjson.loads(line)
            if type(d) is not dict or type(d.get("time")) is not str or type(d.get("request_id")) is not str:
                return None
            if self.kind == "feedback":
                if d.keys() != _FEEDBACK_KEYS or d["label"] not in (0, 1) or type(d["label"]) is not int:
                    return None
                t, day = self._parse_time(d["time"])
                return (day,), {"time": t, "request_id": d["request_id"], "label": d["label"], "source_line": line_no}
            if d.keys() != _PREDICTION_KEYS or type(d["model_version"]) is not str or d["label"] not in (0, 1):
                return None
            if type(d["label"]) is not int:
                return None
            inputs, prob, threshold = d["inputs"], d["probability"], d["threshold"]
            if type(inputs) is not dict or type(prob) not in _NUMBER or type(threshold) not in _NUMBER:
                return None
            if prob - prob != 0.0:
                return None  # not finite
            t, day = self._parse_time(d["time"])
            out: dict[str, Any] = {"time": t, "request_id": d["request_id"]}
            for name, levels in self.features:
                v = inputs[name]
                if levels is None:
                    if type(v) not in _NUMBER or v - v != 0.0:
                        return None
                elif type(v) is not str or v not in levels:
                    return None
                out[name] = v
            out |= {"probability": prob, "label": d["label"], "threshold": threshold, "source_line": line_no}
            return (day, d["model_version"]), out
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
            return None

    def _parse_time(self, text: str) -> tuple[datetime, str]:
        if text != self._time[0]:
            t = parse_utc(text)
            self._time = (text, t, t.strftime("%Y-%m-%d"))
        return self._time[1], self._time[2]


def to_table(rows: list[dict[str, Any]], table_schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=table_schema)


def find_rows(path: Path, request_id: str, line: int | None = None) -> list[dict[str, Any]]:
    """The rows of one Parquet file that name `request_id` (and, given, come from `line` of the segment)."""
    filters: list[tuple[str, str, Any]] = [("request_id", "=", request_id)]
    if line is not None:
        filters.append(("source_line", "=", line))
    return pq.read_table(path, filters=filters).to_pylist()


def to_line(kind: str, row: dict[str, Any], path: Path) -> bytes:
    """The log line a row of the Parquet file at `path` was compacted from, in the writer's form (sorted keys,
    compact JSON): what lineage reads back. A reading that was an integer comes back as a float."""
    t: datetime = row["time"]
    record: dict[str, Any] = {"time": t.strftime(TIME_FORMAT), "request_id": row["request_id"], "label": row["label"]}
    if kind == "prediction":
        reserved = {"time", "request_id", "probability", "label", "threshold", "source_line"}
        record |= {
            "model_version": partition_values(path).get("model_version", ""),
            "inputs": {k: v for k, v in row.items() if k not in reserved},
            "probability": row["probability"],
            "threshold": row["threshold"],
        }
    return orjson.dumps(record, option=LINE_OPTS)
