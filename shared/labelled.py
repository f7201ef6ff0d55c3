"""Labelled production data: logged predictions joined with their late ground truth.

The monitor (services.monitor) is the one writer. It appends `LabelledRecord` lines to
`<labelled_dir>/labelled.jsonl` and then records the file's committed length (bytes and rows) in its
state file (`monitoring.state_file`), written atomically. Bytes beyond the committed length belong to a
cycle that has not finished (or crashed); the monitor truncates them on its next start and readers here
never see them. So a reader gets every labelled row exactly once, whatever the monitor was doing.

The retrain worker calls `load_labelled(paths)` to build a new data version and the gate's window.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from shared.errors import DataValidationError, explain
from shared.features import LABEL, RAW_COLUMNS
from shared.paths import Paths
from shared.schemas import LabelledRecord

# The columns every caller can rely on (CONTRACTS.md); `full=True` adds the served probability and label.
COLUMNS = RAW_COLUMNS + [LABEL, "request_id", "time", "model_version"]
EXTRA_COLUMNS = ["probability", "predicted", "feedback_time"]


def labelled_file(paths: Paths) -> Path:
    return paths.labelled_file


def committed_length(paths: Paths) -> tuple[int, int]:
    """(bytes, rows) of the labelled file committed by the monitor's last finished step; (0, 0) if none."""
    state_path = paths.monitor_state
    if not state_path.is_file():
        return 0, 0
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        section = state["labelled"]
        return int(section["bytes"]), int(section["rows"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataValidationError(f"{state_path}: monitor state has no valid 'labelled' section: {e}") from e


def read_committed_lines(paths: Paths) -> list[bytes]:
    """The committed lines of the labelled file, in the order they were written."""
    size, rows = committed_length(paths)
    if size == 0:
        return []
    path = labelled_file(paths)
    if not path.is_file():
        raise DataValidationError(f"{path}: missing, but the monitor state records {rows} labelled rows ({size} bytes)")
    with open(path, "rb") as f:
        data = f.read(size)
    if len(data) < size:
        raise DataValidationError(f"{path}: {len(data)} bytes on disk, shorter than the committed {size} bytes")
    lines = data.splitlines()
    if len(lines) != rows:
        raise DataValidationError(f"{path}: {len(lines)} committed lines, the monitor state records {rows}")
    return lines


def load_labelled(paths: Paths, *, full: bool = False) -> pd.DataFrame:
    """Labelled production rows, oldest prediction first; an empty frame (same columns) if none.

    Columns: RAW_COLUMNS + machine_failure + request_id + time + model_version
    (+ probability, predicted, feedback_time when `full`).
    """
    columns = COLUMNS + (EXTRA_COLUMNS if full else [])
    lines = read_committed_lines(paths)
    if not lines:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in columns})
    records = []
    for n, line in enumerate(lines, start=1):
        try:
            records.append(LabelledRecord.model_validate_json(line).model_dump())
        except ValidationError as e:
            raise DataValidationError(f"{labelled_file(paths)}:{n}: malformed labelled record: {explain(e)}") from e
    df = pd.DataFrame.from_records(records, columns=columns)
    return df.sort_values("time", kind="stable").reset_index(drop=True)


def _dtype(column: str) -> str:
    if column in (LABEL, "predicted"):
        return "int64"
    if column in ("type", "request_id", "time", "model_version", "feedback_time"):
        return "object"
    return "float64"
