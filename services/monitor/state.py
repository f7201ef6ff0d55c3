"""The monitor's state file: the small things a cycle remembers (the per-line state lives in the store).

Format 3, written atomically at the end of each cycle:
- `features`: the readings' names, in order (the store checks its rows against the dataset the same way);
- `history`: one summary per cycle (metrics over time); `last_trigger`: the last retrain message sent;
- `cycles`, `updated_at`.
Offsets, pending predictions, orphan labels, the windows, the counts and the labelled file's committed length
live in the store (services.monitor.store), updated in place by each ingest step. A crash between the last
step's commit and the end of the cycle loses at most that cycle's history point.

Formats 1 and 2 (before the store) held all of it in this file: `load_state` reads them as a `LegacyState`, and
`seed_store` copies their offsets, waiting records, windows, counts, totals and committed length into a new
store in the transaction that creates it (so a volume carries on from where it stopped); the file is then
saved as format 3. One pydantic model per format is both the in-memory state and the file's schema:
`load_state` validates the file through it (a hand-edited or damaged file is refused naming the key, never a
crash in the middle of a cycle). `recover_labelled` cuts the labelled file back to the committed length on
start (bytes beyond it are an interrupted step's, read again from the stored offsets).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from services.monitor.report_model import HistoryEntry, TriggerRecord
from services.monitor.rows import InputRow, OrphanLabel, PendingPrediction, WindowRow
from services.monitor.store import MonitorStore, VersionCounts
from shared.atomic import atomic_write_bytes
from shared.errors import DataValidationError, IntegrityError, explain
from shared.labelled import labelled_file
from shared.paths import Paths

log = logging.getLogger(__name__)

STATE_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
MOVE_ASIDE = "move it aside (with the store and the labelled file next to it) to start counting from scratch"


class LabelledLength(BaseModel):
    """The labelled file's committed length (a format 1/2 state file; the store holds it now)."""

    bytes: NonNegativeInt
    rows: NonNegativeInt


class MonitorState(BaseModel):
    # Keys a newer monitor may add are ignored, not refused (the format number says when that is not safe).
    model_config = ConfigDict(extra="ignore")

    format: int = STATE_FORMAT
    features: list[str] | None = None  # the readings' names, in order (None: a format 1 file, not recorded)
    history: list[HistoryEntry] = Field(default_factory=list)
    last_trigger: TriggerRecord | None = None
    cycles: NonNegativeInt = 0
    updated_at: str | None = None

    def small(self) -> MonitorState:
        """This state as format 3 (what a cycle saves)."""
        return MonitorState.model_validate(self.model_dump(include=set(MonitorState.model_fields)) | {"format": 3})


class LegacyState(MonitorState):
    """A format 1/2 state file: the small things and everything the store holds now."""

    offsets: dict[str, NonNegativeInt] = Field(default_factory=dict)
    labelled: LabelledLength = Field(default_factory=lambda: LabelledLength(bytes=0, rows=0))
    pending: dict[str, PendingPrediction] = Field(default_factory=dict)
    orphans: dict[str, OrphanLabel] = Field(default_factory=dict)
    recent_inputs: list[InputRow] = Field(default_factory=list)
    windows: dict[str, list[WindowRow]] = Field(default_factory=dict)
    counts: dict[str, VersionCounts] = Field(default_factory=dict)
    totals: dict[str, int] = Field(default_factory=dict)


def load_state(path: Path) -> MonitorState:
    """The saved state (a LegacyState for a format 1/2 file), or a fresh one if there is none. A corrupt state
    stops the monitor: starting over would count every record again."""
    if not path.is_file():
        return MonitorState()
    try:
        raw = json.loads(path.read_bytes())
        if not isinstance(raw, dict):
            raise ValueError(f"top level must be a JSON object, got {type(raw).__name__}")
        if raw.get("format") not in READABLE_FORMATS:
            raise ValueError(f"format: {raw.get('format')!r}, expected one of {list(READABLE_FORMATS)}")
        if raw["format"] == 3:
            return MonitorState.model_validate(raw)
        if raw["format"] == 1:
            raw = _from_format_1(raw)
        return LegacyState.model_validate(raw)
    except (ValueError, TypeError, OSError) as e:
        reason = explain(e) if isinstance(e, ValidationError) else str(e)
        raise DataValidationError(f"monitor state {path} is unreadable ({reason}); {MOVE_ASIDE}") from e


def _from_format_1(raw: dict) -> dict:
    """Format 1 rows spread the readings flat: [time, version, *readings, probability, predicted] (pending) and
    [time, version, *readings] (recent_inputs). Nest them; a row too short to hold readings is left for the
    validation to name."""
    raw = dict(raw, format=2)
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
    counts: set[int] = set()
    if isinstance(state, LegacyState):
        counts = {len(r.values) for r in state.pending.values()} | {len(r.values) for r in state.recent_inputs}
    if (state.features is not None and state.features != features) or counts - {len(features)}:
        held = state.features if state.features is not None else f"{sorted(counts)} value(s) per row"
        raise DataValidationError(
            f"monitor state {path} holds readings of {held}, not of the dataset's features {features}; {MOVE_ASIDE}"
        )
    state.features = list(features)


def seed_store(state: MonitorState):
    """What a new store starts from: a format 1/2 state's records (None for a format 3 state: nothing)."""
    if not isinstance(state, LegacyState):
        return None

    def seed(store: MonitorStore) -> None:
        store.set_offsets(state.offsets)
        store.set_labelled_length(state.labelled.bytes, state.labelled.rows)
        store.put_pending(state.pending)
        store.put_orphans(state.orphans)
        store.add_inputs(state.recent_inputs, keep=max(len(state.recent_inputs), 1))
        for version, rows in state.windows.items():
            store.add_window_rows(version, rows, keep=max(len(rows), 1))
        store.add_counts(state.counts)
        store.add_totals(state.totals)
        log.warning("monitor state (format %d) moved into the store %s", state.format, store.path)

    return seed


def save_state(path: Path, state: MonitorState) -> None:
    atomic_write_bytes(path, state.small().model_dump_json().encode("utf-8"))


def recover_labelled(paths: Paths, committed: int) -> int:
    """Cut the labelled file back to its committed length (the store's); returns the bytes dropped."""
    path = labelled_file(paths)
    size = path.stat().st_size if path.is_file() else 0
    if size < committed:
        raise IntegrityError(
            f"{path} holds {size} bytes but the monitor store {paths.monitor_store} committed {committed}: "
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
