"""Ingest: new log lines -> joined labelled rows, exactly once across crashes.

One step reads a bounded batch of new complete lines from every prediction and feedback log, joins
labels to predictions, then
1. appends the joined rows to the labelled file and fsyncs it,
2. saves the state (new offsets, the labelled file's new committed length, pending predictions and the
   windows) atomically.
A crash after 1 and before 2 leaves bytes beyond the committed length: `state.recover_labelled` truncates them
on the next start, and the same lines are read again from the old offsets and joined the same way.
A crash before 1 or after 2 needs nothing. So no record is lost and none is counted twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from services.monitor.reader import Chunk, LineAt, LogDir, count_newlines, file_size
from services.monitor.report_model import MalformedLine
from services.monitor.rows import InputRow, OrphanLabel, PendingPrediction, WindowRow, compact_prediction
from services.monitor.state import LabelledLength, MonitorState, save_state
from shared.atomic import append_bytes
from shared.dataset import DatasetConfig
from shared.errors import explain
from shared.labelled import LabelledLine, labelled_record
from shared.paths import Paths
from shared.schemas import FeedbackRecord, PredictionRecord, parse_utc

log = logging.getLogger(__name__)

# Bytes read per log file per step: bounds memory and the work lost to a crash.
BATCH_BYTES = 2 << 20
# Defaults of the caps on predictions kept waiting for a label and labels waiting for their prediction
# (monitoring.max_pending / max_orphans in config.yaml); beyond them the oldest are dropped and counted
# (expired_pending, expired_orphans) so the state cannot grow forever.
MAX_PENDING = 200_000
MAX_ORPHANS = 50_000
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


class Ingestor:
    """Reads the logs from the state's offsets and keeps the state and the labelled file in step."""

    def __init__(
        self,
        *,
        paths: Paths,
        dataset: DatasetConfig,
        window_size: int,
        drift_window: int,
        batch_bytes: int = BATCH_BYTES,
        max_pending: int = MAX_PENDING,
        max_orphans: int = MAX_ORPHANS,
    ) -> None:
        self.max_pending = max_pending
        self.max_orphans = max_orphans
        self.paths = paths
        self.dataset = dataset
        self.record = labelled_record(dataset)
        self.predictions = LogDir(paths.prediction_log_dir, "predictions")
        self.feedback = LogDir(paths.feedback_log_dir, "feedback")
        self.window_size = window_size
        self.drift_window = drift_window
        self.batch_bytes = batch_bytes
        self._line_numbers: dict[tuple[str, int], int] = {}

    def backlog_bytes(self, state: MonitorState) -> int:
        return self.predictions.pending_bytes(state.offsets) + self.feedback.pending_bytes(state.offsets)

    def run(self, state: MonitorState, *, max_steps: int = 10_000) -> StepCounts:
        """Steps until the logs are read up to their complete lines (or max_steps)."""
        total = StepCounts()
        for _ in range(max_steps):
            counts, advanced = self.step(state)
            total.add(counts)
            if not advanced:
                break
        return total

    def step(self, state: MonitorState) -> tuple[StepCounts, bool]:
        """One bounded batch: read, join, append, commit. Returns the counts and whether any offset moved.

        Labels are read only up to the prediction watermark: a label is never older than its prediction,
        so a label stamped at or before the earliest "last prediction read" of the prediction files still
        behind finds its prediction already read. Catching up on a backlog therefore keeps few labels
        waiting for their prediction, and pending predictions stay about one feedback delay's worth.
        """
        pred_chunks = self.predictions.read(state.offsets, max_bytes=self.batch_bytes)
        fb_chunks = self.feedback.read(state.offsets, max_bytes=self.batch_bytes)
        if not pred_chunks and not fb_chunks:
            return StepCounts(), False
        counts = StepCounts()
        joined: list[LabelledLine] = []
        new_offsets: dict[str, int] = {}
        watermark = _LATEST
        for chunk in pred_chunks:
            last_time = None
            for i, (line, end) in enumerate(chunk.positions()):
                if line.strip():
                    last_time = (
                        self._prediction(state, line, LineAt(chunk, i, end - len(line) - 1), counts, joined)
                        or last_time
                    )
            new_offsets[chunk.key] = chunk.end
            if chunk.end < file_size(chunk.path):  # this file is still behind: labels must wait for it
                watermark = min(watermark, parse_utc(last_time) if last_time else _EARLIEST)
        for chunk in fb_chunks:
            reached = chunk.start
            for i, (line, end) in enumerate(chunk.positions()):
                if line.strip() and not self._feedback(
                    state, line, LineAt(chunk, i, end - len(line) - 1), counts, joined, watermark=watermark
                ):
                    break
                reached = end
            if reached != chunk.start:
                new_offsets[chunk.key] = reached
        if not new_offsets:
            return counts, False
        self._trim(state)
        self._append(state, joined)
        state.offsets.update(new_offsets)
        counts.labelled = len(joined)
        state.bump("predictions_read", counts.predictions)
        state.bump("feedback_read", counts.feedback)
        state.bump("malformed", counts.malformed)
        save_state(self.paths.monitor_state, state)
        return counts, True

    # --- joining ---------------------------------------------------------------------------
    def _prediction(
        self,
        state: MonitorState,
        line: bytes,
        where: LineAt,
        counts: StepCounts,
        joined: list[LabelledLine],
    ) -> str | None:
        """Take one prediction line; returns its time (None if malformed)."""
        try:
            rec = PredictionRecord.model_validate_json(line)
            row = compact_prediction(rec, self.dataset)
            parse_utc(rec.time)
        except (ValidationError, ValueError, KeyError, TypeError) as e:
            self._malformed(where, line, e, counts)
            return None
        counts.predictions += 1
        state.version_counts(rec.model_version).predictions += 1
        state.recent_inputs.append(row.inputs())
        orphan = state.orphans.pop(rec.request_id, None)
        if orphan is not None:
            joined.append(self._join(state, rec.request_id, row, orphan))
        else:
            state.pending[rec.request_id] = row
        return rec.time

    def _feedback(
        self,
        state: MonitorState,
        line: bytes,
        where: LineAt,
        counts: StepCounts,
        joined: list[LabelledLine],
        *,
        watermark: datetime,
    ) -> bool:
        """Take one label line; False (not taken) if it is newer than the prediction watermark."""
        chunk = where.chunk
        try:
            rec = FeedbackRecord.model_validate_json(line)
            when = parse_utc(rec.time)
        except (ValidationError, ValueError) as e:
            self._malformed(where, line, e, counts)
            return True
        if when > watermark:
            return False
        counts.feedback += 1
        row = state.pending.pop(rec.request_id, None)
        if row is not None:
            joined.append(self._join(state, rec.request_id, row, OrphanLabel(rec.time, rec.label)))
        elif rec.request_id in state.orphans:
            state.bump("duplicate_feedback")
            log.warning(
                "second label for request_id %s in %s ignored (the first one counts)", rec.request_id, chunk.path
            )
        else:
            state.orphans[rec.request_id] = OrphanLabel(rec.time, rec.label)
        return True

    def _malformed(self, where: LineAt, line: bytes, err: Exception, counts: StepCounts) -> None:
        """Count, log and list a line that is not a valid record: file, line number, byte offset and why.
        The line stays in its log file; the report points to it."""
        chunk, offset = where.chunk, where.offset
        line_no = self._first_line(chunk) + where.line_index
        reason = explain(err) if isinstance(err, ValidationError) else " ".join(str(err).split())
        counts.malformed += 1
        rel = _rel(self.paths, chunk.path)
        if len(counts.malformed_lines) < MAX_MALFORMED_LISTED:
            counts.malformed_lines.append(MalformedLine(file=rel, line=line_no, offset=offset, reason=reason[:300]))
        log.warning(
            "%s:%d (byte %d): malformed %s record skipped: %s: %r",
            chunk.path,
            line_no,
            offset,
            chunk.key.split("/", 1)[0].rstrip("s"),
            reason[:300],
            line[:120],
        )

    def _first_line(self, chunk: Chunk) -> int:
        """The line number of the chunk's first line (newlines before chunk.start, counted once per chunk)."""
        key = (chunk.key, chunk.start)
        if key not in self._line_numbers:
            self._line_numbers = {key: 1 + count_newlines(chunk.path, chunk.start)}
        return self._line_numbers[key]

    def _join(self, state: MonitorState, request_id: str, row: PendingPrediction, label: OrphanLabel) -> LabelledLine:
        y = int(label.label)
        rec = self.record.model_validate(
            {
                "time": row.time,
                "request_id": request_id,
                "model_version": row.model_version,
                **dict(zip(self.dataset.feature_names, row.values, strict=True)),
                self.dataset.label.name: y,
                "probability": row.probability,
                "predicted": row.predicted,
                "feedback_time": label.time,
            }
        )
        state.windows.setdefault(row.model_version, []).append(
            WindowRow(row.time, y, int(row.predicted), float(row.probability))
        )
        c = state.version_counts(row.model_version)
        c.labelled += 1
        c.positives += y
        return rec

    def _trim(self, state: MonitorState) -> None:
        # Keep the most recent by prediction time (files are read one after another, not in time order).
        if len(state.recent_inputs) > self.drift_window:
            state.recent_inputs.sort(key=_by_time)
            del state.recent_inputs[: len(state.recent_inputs) - self.drift_window]
        for rows in state.windows.values():
            if len(rows) > self.window_size:
                rows.sort(key=_by_time)
                del rows[: len(rows) - self.window_size]
        _drop_oldest(state, state.pending, self.max_pending, "pending")
        _drop_oldest(state, state.orphans, self.max_orphans, "orphans")

    def _append(self, state: MonitorState, joined: list[LabelledLine]) -> None:
        if not joined:
            return
        data = "".join(r.to_line() + "\n" for r in joined).encode("utf-8")
        append_bytes(self.paths.labelled_file, data)
        state.labelled = LabelledLength(bytes=state.labelled.bytes + len(data), rows=state.labelled.rows + len(joined))


def _by_time(row: InputRow | WindowRow) -> str:
    return row.time


def _drop_oldest(state: MonitorState, table: dict, cap: int, what: str) -> None:
    """Keep the newest `cap` entries of a waiting table (insertion order), counting what is dropped."""
    excess = len(table) - cap
    if excess > 0:
        for key in list(table)[:excess]:
            del table[key]
        state.bump(f"expired_{what}", excess)
        log.warning("%d %s dropped (more than %d waiting)", excess, what, cap)


_LATEST = datetime.max.replace(tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _rel(paths: Paths, path: Path) -> str:
    try:
        return path.resolve().relative_to(paths.volume.resolve()).as_posix()
    except ValueError:
        return str(path)
