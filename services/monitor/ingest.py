"""Ingest: new log lines -> joined labelled rows, exactly once across crashes; cost follows the new bytes.

A cycle's `run` reads every prediction and feedback log up to the size it had when the run began (lines appended
later wait for the next cycle, so a cycle ends however fast the logs grow), in bounded steps. One step reads a
batch of new complete lines from each file, parses them, looks the batch's request_ids up in the store (pending
predictions, orphan labels: index lookups, never the whole table in memory), joins, then inside ONE store
transaction (services.monitor.store)
1. updates pending, orphans, the drift and performance windows, the counts and totals;
2. appends the joined rows to the labelled file and fsyncs it;
3. records the new offsets and the labelled file's new committed length, and commits.
A crash before the commit rolls 1 and 3 back; the bytes 2 left beyond the committed length are cut on the next
start (`recover_labelled`), and the same lines are read again from the old offsets and joined the same way.
So no record is lost and none is counted twice.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
from pydantic import ValidationError

from services.monitor.batch import MAX_MALFORMED_LISTED, Batch, StepCounts, newest
from services.monitor.reader import Chunk, LineAt, LogDir, count_newlines
from services.monitor.report_model import MalformedLine
from services.monitor.rows import (
    OrphanLabel,
    PendingPrediction,
    PredictionParser,
    WindowRow,
    parse_feedback,
)
from services.monitor.store import MonitorStore
from shared.atomic import append_bytes
from shared.dataset import DatasetConfig
from shared.errors import IntegrityError, explain
from shared.paths import Paths
from shared.schemas import parse_utc

log = logging.getLogger(__name__)

# Bytes read per log file per step: bounds memory and the work lost to a crash.
BATCH_BYTES = 4 << 20
# Defaults of the caps on predictions kept waiting for a label and labels waiting for their prediction
# (monitoring.max_pending / max_orphans in config.yaml); beyond them the oldest are dropped and counted
# (expired_pending, expired_orphans) so the store cannot grow forever.
MAX_PENDING = 200_000
MAX_ORPHANS = 50_000


class Ingestor:
    """Reads the logs from the store's offsets and keeps the store and the labelled file in step."""

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
        self.features = dataset.feature_names
        self.label_name = dataset.label.name
        self.predictions = LogDir(paths.prediction_log_dir, "predictions")
        self.feedback = LogDir(paths.feedback_log_dir, "feedback")
        self.window_size = window_size
        self.drift_window = drift_window
        self.batch_bytes = batch_bytes
        self._line_numbers: dict[tuple[str, int], int] = {}
        self.parse_prediction = PredictionParser(dataset)

    def backlog_bytes(self, store: MonitorStore) -> int:
        offsets = store.offsets()
        return self.predictions.pending_bytes(offsets) + self.feedback.pending_bytes(offsets)

    def run(self, store: MonitorStore, *, max_steps: int = 100_000) -> StepCounts:
        """Steps until every log is read up to the size it had when the run began (or max_steps)."""
        limits = self.predictions.sizes() | self.feedback.sizes()
        total = StepCounts()
        for _ in range(max_steps):
            counts, advanced = self.step(store, limits=limits)
            total.add(counts)
            if not advanced:
                break
        return total

    def step(self, store: MonitorStore, *, limits: dict[str, int] | None = None) -> tuple[StepCounts, bool]:
        """One bounded batch: read, join, store, append, commit. Returns the counts and whether any offset moved.

        Labels are read only up to the prediction watermark: a label is never older than its prediction,
        so a label stamped at or before the earliest "last prediction read" of the prediction files still
        behind finds its prediction already read. Catching up on a backlog therefore keeps few labels
        waiting for their prediction, and pending predictions stay about one feedback delay's worth.
        """
        offsets = store.offsets()
        pred_chunks = self.predictions.read(offsets, max_bytes=self.batch_bytes, limits=limits)
        fb_chunks = self.feedback.read(offsets, max_bytes=self.batch_bytes, limits=limits)
        if not pred_chunks and not fb_chunks:
            return StepCounts(), False
        batch = Batch()
        new_offsets: dict[str, int] = {}
        preds: dict[str, PendingPrediction] = {}
        watermark = _LATEST
        parse = self.parse_prediction
        for chunk in pred_chunks:
            last_time = None
            pos = chunk.start
            for i, line in enumerate(chunk.lines):
                start, pos = pos, pos + len(line) + 1
                if not line.strip():
                    continue
                try:
                    rid, row = parse(line)
                except (ValidationError, ValueError, KeyError, TypeError) as e:
                    self._malformed(LineAt(chunk, i, start), line, e, batch.counts)
                    continue
                preds[rid] = row  # a request_id logged twice in one batch: the last one counts, as a dict would
                batch.inputs.append(row)
                last_time = row.time
            new_offsets[chunk.key] = chunk.end
            limit = limits.get(chunk.key) if limits else None
            if chunk.end < (_size(chunk.path) if limit is None else limit):  # still behind: labels wait for it
                watermark = min(watermark, parse_utc(last_time) if last_time else _EARLIEST)
        batch.counts.predictions = len(batch.inputs)
        for row in batch.inputs:
            batch.version(row.model_version).predictions += 1
        labels: list[tuple[str, OrphanLabel, str]] = []
        for chunk in fb_chunks:
            path, pos = str(chunk.path), chunk.start
            for i, line in enumerate(chunk.lines):
                if line.strip():
                    try:
                        rid, label, when = parse_feedback(line)
                    except (ValidationError, ValueError) as e:
                        self._malformed(LineAt(chunk, i, pos), line, e, batch.counts)
                    else:
                        if when > watermark:
                            break  # newer than the predictions read: it waits (with the lines after it)
                        labels.append((rid, label, path))
                pos += len(line) + 1
            if pos != chunk.start:
                new_offsets[chunk.key] = pos
        batch.counts.feedback = len(labels)
        if not new_offsets:
            return batch.counts, False
        with store.step():
            fresh = self._store_predictions(store, preds, batch)
            self._store_labels(store, labels, batch, fresh)
            store.put_pending(fresh)  # what is still waiting (a label in this batch never touches the table)
            self._trim(store, batch)
            self._append(store, batch.joined)
            store.set_offsets(new_offsets)
            store.add_counts(batch.versions)
            c = batch.counts
            batch.totals |= {"predictions_read": c.predictions, "feedback_read": c.feedback, "malformed": c.malformed}
            store.add_totals(batch.totals)
        batch.counts.labelled = len(batch.joined)
        return batch.counts, True

    # --- joining (the batch against the store) -------------------------------------------------
    def _store_predictions(
        self, store: MonitorStore, preds: dict[str, PendingPrediction], batch: Batch
    ) -> dict[str, PendingPrediction]:
        """A prediction whose label is already waiting joins it; returns the others (they wait for theirs)."""
        if not preds:
            return {}
        orphans = store.orphans_among(list(preds))
        waiting = {}
        for rid, row in preds.items():
            label = orphans.pop(rid, None)
            if label is None:
                waiting[rid] = row
            else:
                self._join(batch, rid, row, label)
        store.drop("orphans", [rid for rid in preds if rid not in waiting])
        return waiting

    def _store_labels(
        self,
        store: MonitorStore,
        labels: list[tuple[str, OrphanLabel, str]],
        batch: Batch,
        fresh: dict[str, PendingPrediction],
    ) -> None:
        """A label whose prediction waits (in this batch's `fresh` ones, taken out of it, or in the store) joins it;
        a second label for a waiting orphan's request_id is ignored; the others wait for their prediction."""
        if not labels:
            return
        ids = list({rid: None for rid, _, _ in labels})
        pending = store.pending_among([rid for rid in ids if rid not in fresh])
        known = set(store.orphans_among(ids))
        joined: list[str] = []
        orphans: dict[str, OrphanLabel] = {}
        for rid, label, path in labels:
            row = fresh.pop(rid, None) or pending.pop(rid, None)
            if row is not None:
                self._join(batch, rid, row, label)
                joined.append(rid)  # (a copy logged in an earlier batch may wait in the store: it goes too)
            elif rid in known:
                batch.totals["duplicate_feedback"] = batch.totals.get("duplicate_feedback", 0) + 1
                log.warning("second label for request_id %s in %s ignored (the first one counts)", rid, path)
            else:
                orphans[rid] = label
                known.add(rid)
        store.drop("pending", joined)
        store.put_orphans(orphans)

    def _join(self, batch: Batch, request_id: str, row: PendingPrediction, label: OrphanLabel) -> None:
        y = int(label.label)
        record = dict(zip(self.features, row.values, strict=True))
        record |= {
            "time": row.time,
            "request_id": request_id,
            "model_version": row.model_version,
            self.label_name: y,
            "probability": float(row.probability),
            "predicted": int(row.predicted),
            "feedback_time": label.time,
        }
        batch.joined.append(orjson.dumps(record, option=_LINE))
        batch.windows.setdefault(row.model_version, []).append(
            WindowRow(row.time, y, int(row.predicted), float(row.probability))
        )
        c = batch.version(row.model_version)
        c.labelled += 1
        c.positives += y

    def _trim(self, store: MonitorStore, batch: Batch) -> None:
        # Keep the most recent by prediction time (files are read one after another, not in time order): rows
        # of the batch older than its own newest `keep` can never be kept, so they are not even stored.
        store.add_inputs([r.inputs() for r in newest(batch.inputs, self.drift_window)], keep=self.drift_window)
        for version, rows in batch.windows.items():
            store.add_window_rows(version, newest(rows, self.window_size), keep=self.window_size)
        for table, cap in (("pending", self.max_pending), ("orphans", self.max_orphans)):
            dropped = store.keep_newest(table, cap)
            if dropped:
                batch.totals[f"expired_{table}"] = dropped
                log.warning("%d %s dropped (more than %d waiting)", dropped, table, cap)

    def _append(self, store: MonitorStore, joined: list[bytes]) -> None:
        if not joined:
            return
        size, rows = store.labelled_length()
        path = self.paths.labelled_file
        on_disk = path.stat().st_size if path.is_file() else 0
        if on_disk != size:
            raise IntegrityError(f"{path} holds {on_disk} bytes, the monitor store {store.path} committed {size}")
        data = b"".join(joined)
        append_bytes(path, data)
        store.set_labelled_length(size + len(data), rows + len(joined))

    # --- malformed lines ---------------------------------------------------------------------------
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


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


_LINE = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
_LATEST = datetime.max.replace(tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _rel(paths: Paths, path: Path) -> str:
    try:
        return path.resolve().relative_to(paths.volume.resolve()).as_posix()
    except ValueError:
        return str(path)
