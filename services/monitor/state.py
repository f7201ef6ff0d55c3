"""The monitor's state file: where it stopped, and what it must remember between cycles.

Saved atomically after every ingest step, together with the committed length of the labelled file
(shared.labelled), so that a crash anywhere leaves a state that matches what is on disk:
- `offsets`: per log file ("predictions/<name>", "feedback/<name>"), the byte offset after the last
  complete line used;
- `labelled`: bytes and rows of the labelled file committed with these offsets;
- `pending`: predictions still waiting for their label (request_id -> PendingPrediction);
- `orphans`: labels whose prediction has not been read yet (another instance's file may be behind);
- `recent_inputs`: the last inputs served (the drift window); `windows`: per model version, the last
  labelled rows (the performance window); `counts`: per model version, predictions and labels seen;
- `history`: one summary per cycle (metrics over time); `last_trigger`: the last retrain message sent.

One pydantic model is both the in-memory state and the file's schema: `load_state` validates the file
through it (a hand-edited or damaged file is refused naming the key, never a crash in the middle of a
cycle) and `save_state` writes its JSON. Rows are NamedTuples (services.monitor.rows), saved as JSON arrays
whose readings are one nested array in feature order (format 2; `features` names them). A format 1 file (the
readings spread flat in the row) is read and saved as format 2; a state whose features are not the dataset's
is refused (`check_features`). `recover_labelled` cuts the labelled file back to the committed length on start
(bytes beyond it are an interrupted step's, read again from the saved offsets).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from services.monitor.report_model import HistoryEntry, TriggerRecord
from services.monitor.rows import InputRow, OrphanLabel, PendingPrediction, WindowRow
from shared.atomic import atomic_write_bytes
from shared.errors import DataValidationError, IntegrityError, explain
from shared.labelled import labelled_file
from shared.paths import Paths

log = logging.getLogger(__name__)

STATE_FORMAT = 2
READABLE_FORMATS = (1, 2)


class LabelledLength(BaseModel):
    """The labelled file's committed length (shared.labelled reads these two keys)."""

    bytes: NonNegativeInt
    rows: NonNegativeInt


class VersionCounts(BaseModel):
    predictions: NonNegativeInt = 0
    labelled: NonNegativeInt = 0
    positives: NonNegativeInt = 0


class MonitorState(BaseModel):
    # Keys a newer monitor may add are ignored, not refused (the format number says when that is not safe).
    model_config = ConfigDict(extra="ignore")

    format: int = STATE_FORMAT
    features: list[str] | None = None  # the readings' names, in order (None: a format 1 file, not recorded)
    offsets: dict[str, NonNegativeInt] = Field(default_factory=dict)
    labelled: LabelledLength = Field(default_factory=lambda: LabelledLength(bytes=0, rows=0))
    pending: dict[str, PendingPrediction] = Field(default_factory=dict)
    orphans: dict[str, OrphanLabel] = Field(default_factory=dict)
    recent_inputs: list[InputRow] = Field(default_factory=list)  # oldest first after each step's trim
    windows: dict[str, list[WindowRow]] = Field(default_factory=dict)  # model_version -> rows, join order
    counts: dict[str, VersionCounts] = Field(default_factory=dict)
    # predictions_read, feedback_read, malformed, duplicate_feedback, expired_pending, expired_orphans
    totals: dict[str, int] = Field(default_factory=dict)
    history: list[HistoryEntry] = Field(default_factory=list)
    last_trigger: TriggerRecord | None = None
    cycles: NonNegativeInt = 0
    updated_at: str | None = None

    def bump(self, name: str, n: int = 1) -> None:
        self.totals[name] = self.totals.get(name, 0) + n

    def version_counts(self, version: str) -> VersionCounts:
        counts = self.counts.get(version)
        if counts is None:
            counts = self.counts[version] = VersionCounts()
        return counts


def load_state(path: Path) -> MonitorState:
    """The saved state, or a fresh one if there is none. A corrupt state stops the monitor: starting
    over would count every record again."""
    if not path.is_file():
        return MonitorState()
    try:
        raw = json.loads(path.read_bytes())
        if not isinstance(raw, dict):
            raise ValueError(f"top level must be a JSON object, got {type(raw).__name__}")
        if raw.get("format") not in READABLE_FORMATS:
            raise ValueError(f"format: {raw.get('format')!r}, expected one of {list(READABLE_FORMATS)}")
        if raw["format"] == 1:
            raw = _from_format_1(raw)
        return MonitorState.model_validate(raw)
    except (ValueError, TypeError, OSError) as e:
        reason = explain(e) if isinstance(e, ValidationError) else str(e)
        raise DataValidationError(
            f"monitor state {path} is unreadable ({reason}); move it aside to start counting from scratch "
            "(the labelled file next to it must then be moved as well)"
        ) from e


def _from_format_1(raw: dict) -> dict:
    """Format 1 rows spread the readings flat: [time, version, *readings, probability, predicted] (pending) and
    [time, version, *readings] (recent_inputs). Nest them; a row too short to hold readings is left for the
    validation to name."""
    raw = dict(raw, format=STATE_FORMAT)
    pending = raw.get("pending")
    if isinstance(pending, dict):
        raw["pending"] = {
            k: [*r[:2], r[2:-2], *r[-2:]] if isinstance(r, list) and len(r) > 4 else r for k, r in pending.items()
        }
    inputs = raw.get("recent_inputs")
    if isinstance(inputs, list):
        raw["recent_inputs"] = [[*r[:2], r[2:]] if isinstance(r, list) and len(r) > 2 else r for r in inputs]
    return raw


def check_features(path: Path, state: MonitorState, features: list[str]) -> None:
    """Refuse a state whose rows hold other readings than the dataset's features (the dataset changed)."""
    counts = {len(r.values) for r in state.pending.values()} | {len(r.values) for r in state.recent_inputs}
    if (state.features is not None and state.features != features) or counts - {len(features)}:
        held = state.features if state.features is not None else f"{sorted(counts)} value(s) per row"
        raise DataValidationError(
            f"monitor state {path} holds readings of {held}, not of the dataset's features {features}; move it "
            "aside (with the labelled file next to it) to start counting from scratch"
        )
    state.features = list(features)


def save_state(path: Path, state: MonitorState) -> None:
    atomic_write_bytes(path, state.model_dump_json().encode("utf-8"))


def recover_labelled(paths: Paths, state: MonitorState) -> int:
    """Cut the labelled file back to its committed length; returns the bytes dropped."""
    path = labelled_file(paths)
    committed = state.labelled.bytes
    size = path.stat().st_size if path.is_file() else 0
    if size < committed:
        raise IntegrityError(
            f"{path} holds {size} bytes but the monitor state {paths.monitor_state} committed {committed}: "
            "labelled rows were lost outside the monitor"
        )
    if size > committed:
        with open(path, "r+b") as f:
            f.truncate(committed)
            f.flush()
            os.fsync(f.fileno())
        log.warning(
            "dropped %d uncommitted bytes from %s (an interrupted cycle); their records are read again",
            size - committed,
            path,
        )
    return size - committed
