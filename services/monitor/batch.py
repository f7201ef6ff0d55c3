"""One ingest step's results before they are stored: the counts a cycle reports and what the step derived
(labelled lines, window rows, per-version counts, totals). Plain data; services.monitor.ingest fills it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.monitor.report_model import MalformedLine
from services.monitor.rows import PendingPrediction, WindowRow
from services.monitor.store import VersionCounts

# Malformed lines named one by one in a cycle's report (all of them are counted and logged).
MAX_MALFORMED_LISTED = 20


@dataclass
class StepCounts:
    predictions: int = 0
    feedback: int = 0
    labelled: int = 0
    malformed: int = 0
    # The first MAX_MALFORMED_LISTED malformed lines.
    malformed_lines: list[MalformedLine] = field(default_factory=list)

    def add(self, other: StepCounts) -> None:
        self.predictions += other.predictions
        self.feedback += other.feedback
        self.labelled += other.labelled
        self.malformed += other.malformed
        self.malformed_lines.extend(other.malformed_lines[: MAX_MALFORMED_LISTED - len(self.malformed_lines)])

    @property
    def lines(self) -> int:
        return self.predictions + self.feedback + self.malformed


@dataclass
class Batch:
    """What one step derived from its lines, before it is stored."""

    counts: StepCounts = field(default_factory=StepCounts)
    joined: list[bytes] = field(default_factory=list)  # labelled lines
    inputs: list[PendingPrediction] = field(default_factory=list)  # every valid prediction, in log order
    windows: dict[str, list[WindowRow]] = field(default_factory=dict)
    versions: dict[str, VersionCounts] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def version(self, name: str) -> VersionCounts:
        c = self.versions.get(name)
        if c is None:
            c = self.versions[name] = VersionCounts()
        return c


def newest(rows: list, keep: int) -> list:
    """The `keep` most recent rows by time (ties: the later one), oldest first."""
    if len(rows) <= keep:
        return rows
    return sorted(rows, key=by_time)[-keep:]


def by_time(row: PendingPrediction | WindowRow) -> str:
    return row.time
