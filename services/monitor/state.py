"""The monitor's state file: where it stopped, and what it must remember between cycles.

Saved atomically after every ingest step, together with the committed length of the labelled file
(shared.labelled), so that a crash anywhere leaves a state that matches what is on disk:
- `offsets`: per log file ("predictions/<name>", "feedback/<name>"), the byte offset after the last
  complete line used;
- `labelled`: bytes and rows of the labelled file committed with these offsets;
- `pending`: predictions still waiting for their label (request_id -> compact row);
- `orphans`: labels whose prediction has not been read yet (another instance's file may be behind);
- `recent_inputs`: the last inputs served (the drift window); `windows`: per model version, the last
  labelled rows (the performance window); `counts`: per model version, predictions and labels seen;
- `history`: one summary per cycle (metrics over time); `last_trigger`: the last retrain message sent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError

from shared.atomic import atomic_write_text
from shared.errors import DataValidationError, explain

log = logging.getLogger(__name__)

STATE_FORMAT = 1


@dataclass
class MonitorState:
    format: int = STATE_FORMAT
    offsets: dict[str, int] = field(default_factory=dict)
    labelled: dict[str, int] = field(default_factory=lambda: {"bytes": 0, "rows": 0})
    # request_id -> [time, model_version, type, air, process, speed, torque, wear, probability, label]
    pending: dict[str, list] = field(default_factory=dict)
    # request_id -> [feedback time, label]
    orphans: dict[str, list] = field(default_factory=dict)
    # [time, model_version, type, air, process, speed, torque, wear], oldest first
    recent_inputs: list[list] = field(default_factory=list)
    # model_version -> [[prediction time, true label, served label, probability], ...] in join order
    windows: dict[str, list[list]] = field(default_factory=dict)
    # model_version -> {"predictions", "labelled", "positives"}
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    # predictions_read, feedback_read, malformed, duplicate_feedback, expired_pending, expired_orphans
    totals: dict[str, int] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    last_trigger: dict[str, Any] | None = None
    cycles: int = 0
    updated_at: str | None = None

    def bump(self, name: str, n: int = 1) -> None:
        self.totals[name] = self.totals.get(name, 0) + n

    def version_counts(self, version: str) -> dict[str, int]:
        return self.counts.setdefault(version, {"predictions": 0, "labelled": 0, "positives": 0})


class _LabelledLength(BaseModel):
    bytes: NonNegativeInt
    rows: NonNegativeInt


class _StateShape(BaseModel):
    """What a state file must hold for a cycle to use it (checked on load: a hand-edited or damaged file
    is refused naming the key, never a crash in the middle of a cycle)."""

    model_config = ConfigDict(extra="ignore")

    format: int
    offsets: dict[str, NonNegativeInt] = {}
    labelled: _LabelledLength = _LabelledLength(bytes=0, rows=0)
    pending: dict[str, tuple[str, str, str, float, float, float, float, float, float, int]] = {}
    orphans: dict[str, tuple[str, int]] = {}
    recent_inputs: list[tuple[str, str, str, float, float, float, float, float]] = []
    windows: dict[str, list[tuple[str, int, int, float]]] = {}
    counts: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    history: list[dict[str, Any]] = []
    last_trigger: dict[str, Any] | None = None
    cycles: NonNegativeInt = 0
    updated_at: str | None = None


def load_state(path: Path) -> MonitorState:
    """The saved state, or a fresh one if there is none. A corrupt state stops the monitor: starting
    over would count every record again."""
    if not path.is_file():
        return MonitorState()
    try:
        raw = json.loads(path.read_bytes())
        if not isinstance(raw, dict):
            raise ValueError(f"top level must be a JSON object, got {type(raw).__name__}")
        if raw.get("format") != STATE_FORMAT:
            raise ValueError(f"format: {raw.get('format')!r}, expected {STATE_FORMAT}")
        _StateShape.model_validate(raw)
        known = set(MonitorState.__dataclass_fields__)
        return MonitorState(**{k: v for k, v in raw.items() if k in known})
    except (ValueError, TypeError, AttributeError, OSError) as e:
        reason = explain(e) if isinstance(e, ValidationError) else str(e)
        raise DataValidationError(
            f"monitor state {path} is unreadable ({reason}); move it aside to start counting from scratch "
            "(the labelled file next to it must then be moved as well)"
        ) from e


def save_state(path: Path, state: MonitorState) -> None:
    atomic_write_text(path, json.dumps(asdict(state), separators=(",", ":"), allow_nan=False))
