"""Labelled production data: logged predictions joined with their late ground truth.

The monitor (services.monitor) is the one writer. It appends `labelled_record(dataset)` lines to
`<labelled_dir>/labelled.jsonl`, fsyncs them, and then records the file's committed length (bytes and rows)
in its store (`monitoring.store_file`, SQLite: the `meta` rows `labelled_bytes` and `labelled_rows`), in the
same transaction as the log offsets that produced them. Bytes beyond the committed length belong to a step
that has not committed (or crashed); the monitor truncates them on its next start and readers here never see
them. So a reader gets every labelled row exactly once, whatever the monitor was doing. A volume the monitor
has not opened since the store came has no store yet: its committed length is then the `labelled` section of
the state file (`monitoring.state_file`), as before.

The retrain worker calls `load_labelled(paths)` to build a new data version and the gate's window.

A line's keys follow the dataset section of config.yaml: time, request_id, model_version, each feature by
its name (a categorical one as its level, a numeric one as a number), the label by its name (0 / 1), then
probability, predicted and feedback_time. `labelled_record(dataset)` is the line's pydantic model.
"""

from __future__ import annotations

import json
import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from shared.dataset import CategoricalColumn, DatasetConfig
from shared.errors import DataValidationError, explain
from shared.paths import Paths

ID_COLUMNS = ["request_id", "time", "model_version"]
EXTRA_COLUMNS = ["probability", "predicted", "feedback_time"]
# The monitor store's meta keys holding the committed length (services.monitor.store writes them).
LABELLED_BYTES_KEY = "labelled_bytes"
LABELLED_ROWS_KEY = "labelled_rows"


class LabelledLine(BaseModel):
    """The base of a dataset's labelled record: unknown keys refused, written as one sorted JSON line."""

    model_config = ConfigDict(extra="forbid")

    def to_line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def columns(dataset: DatasetConfig, *, full: bool = False) -> list[str]:
    """The columns every caller can rely on (CONTRACTS.md): the features, the label, request_id, time and
    model_version; `full` adds the served probability and label and the feedback time."""
    return [*dataset.feature_names, dataset.label.name, *ID_COLUMNS] + (EXTRA_COLUMNS if full else [])


def labelled_record(dataset: DatasetConfig) -> type[LabelledLine]:
    """The pydantic model of one labelled line for this dataset (built once per dataset section)."""
    return _record_model(dataset.model_dump_json())


@lru_cache(maxsize=8)
def _record_model(dataset_json: str) -> type[LabelledLine]:
    dataset = DatasetConfig.model_validate_json(dataset_json)
    fields: dict[str, Any] = {"time": (str, ...), "request_id": (str, ...), "model_version": (str, ...)}
    for c in dataset.features:
        kind: Any = Literal[tuple(c.levels)] if isinstance(c, CategoricalColumn) else float
        fields[c.name] = (kind, ...)
    fields[dataset.label.name] = (Literal[0, 1], ...)  # the true label (feedback)
    fields |= {"probability": (float, ...), "predicted": (int, ...), "feedback_time": (str, ...)}
    model: type[LabelledLine] = create_model(f"LabelledRecord_{dataset.name}", __base__=LabelledLine, **fields)
    return model


def labelled_file(paths: Paths) -> Path:
    return paths.labelled_file


def committed_length(paths: Paths) -> tuple[int, int]:
    """(bytes, rows) of the labelled file committed by the monitor's last finished step; (0, 0) if none."""
    if paths.monitor_store.is_file():
        return _store_length(paths.monitor_store)
    state_path = paths.monitor_state
    if not state_path.is_file():
        return 0, 0
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        section = state["labelled"]
        return int(section["bytes"]), int(section["rows"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataValidationError(f"{state_path}: monitor state has no valid 'labelled' section: {e}") from e


def _store_length(path: Path) -> tuple[int, int]:
    """The committed length in the monitor's store, read through a read-only connection (the monitor may be
    writing: WAL lets this read see the last commit)."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if not conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                return 0, 0  # created, its first transaction not committed yet: nothing labelled
            rows = dict(
                conn.execute("SELECT key, value FROM meta WHERE key IN (?, ?)", (LABELLED_BYTES_KEY, LABELLED_ROWS_KEY))
            )
        finally:
            conn.close()
        return int(json.loads(rows.get(LABELLED_BYTES_KEY, "0"))), int(json.loads(rows.get(LABELLED_ROWS_KEY, "0")))
    except (sqlite3.Error, ValueError, TypeError) as e:
        raise DataValidationError(f"{path}: monitor store has no readable committed length: {e}") from e


def read_committed_lines(paths: Paths) -> list[bytes]:
    """The committed lines of the labelled file, in the order they were written."""
    size, rows = committed_length(paths)
    if size == 0:
        return []
    path = labelled_file(paths)
    if not path.is_file():
        raise DataValidationError(f"{path}: missing, but the monitor records {rows} labelled rows ({size} bytes)")
    with open(path, "rb") as f:
        data = f.read(size)
    if len(data) < size:
        raise DataValidationError(f"{path}: {len(data)} bytes on disk, shorter than the committed {size} bytes")
    lines = data.splitlines()
    if len(lines) != rows:
        raise DataValidationError(f"{path}: {len(lines)} committed lines, the monitor records {rows}")
    return lines


def load_labelled(paths: Paths, *, full: bool = False) -> pd.DataFrame:
    """Labelled production rows, oldest prediction first; an empty frame (same columns) if none.

    Columns: `columns(dataset, full=full)` for the dataset section of the settings `paths` was built from.
    """
    dataset = paths.settings.dataset
    names = columns(dataset, full=full)
    lines = read_committed_lines(paths)
    if not lines:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(dataset, c)) for c in names})
    model = labelled_record(dataset)
    records = []
    for n, line in enumerate(lines, start=1):
        try:
            records.append(model.model_validate_json(line).model_dump())
        except ValidationError as e:
            raise DataValidationError(f"{labelled_file(paths)}:{n}: malformed labelled record: {explain(e)}") from e
    df = pd.DataFrame.from_records(records, columns=names)
    return df.sort_values("time", kind="stable").reset_index(drop=True)


def _dtype(dataset: DatasetConfig, column: str) -> str:
    if column in (dataset.label.name, "predicted"):
        return "int64"
    if column in (*ID_COLUMNS, "feedback_time") or column in {c.name for c in dataset.categorical}:
        return "object"
    return "float64"
