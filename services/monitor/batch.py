"""One ingest step's results before they are stored: the counts a cycle reports and what the step derived
(the joined rows, per-version counts, totals). Plain data; services.monitor.ingest and .join fill it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter

from services.monitor.report_model import MalformedLine
from services.monitor.rows import OrphanLabel, PendingPrediction
from services.monitor.store import VersionCounts

# Malformed lines named one by one in a cycle's report (all of them are counted and logged).
MAX_MALFORMED_LISTED = 20


Joined = tuple[str, PendingPrediction, OrphanLabel]  # request_id, its prediction, its label


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
    inputs: list[PendingPrediction] = field(default_factory=list)  # every valid prediction, in log order
    joined: list[Joined] = field(default_factory=list)  # in join order
    versions: dict[str, VersionCounts] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def version(self, name: str) -> VersionCounts:
        c = self.versions.get(name)
        if c is None:
            c = self.versions[name] = VersionCounts()
        return c


def newest(rows: list, keep: int) -> list:
    """The `keep` most recent rows by time (ties: the later one), oldest first (all of them, as they are, if
    there are no more)."""
    if len(rows) <= keep:
        return rows
    return sorted(rows, key=by_time)[-keep:]


by_time = itemgetter(0)  # the time of a PendingPrediction, InputRow or WindowRow (their first field)
