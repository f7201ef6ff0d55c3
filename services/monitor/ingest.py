"""Ingest: new log lines -> joined labelled rows, exactly once across crashes; cost follows the new bytes.

A cycle's `run` reads every prediction and feedback log up to the size it had when the run began (lines appended
later wait for the next cycle, so a cycle ends however fast the logs grow), in bounded steps. One step reads a
batch of new complete lines from each file, parses them, joins them with each other and with what waits in the
store (services.monitor.join: the store is asked only about request_ids it holds, never the whole table in
memory), then inside ONE store transaction (services.monitor.store)
1. updates pending, orphans, the drift and performance windows, the counts and totals;
2. appends the joined rows to the labelled file and fsyncs it;
3. records the new offsets and the labelled file's new committed length, and commits.
A crash before the commit rolls 1 and 3 back; the bytes 2 left beyond the committed length are cut on the next
start (`recover_labelled`), and the same lines are read again from the old offsets and joined the same way.
So no record is lost and none is counted twice.

Where a step's time goes (bench.monitor_bench, docs/benchmarks.md): per prediction line an orjson parse and its
field checks (services.monitor.rows.PredictionParser); per label line the same a block at a time
(services.monitor.blocks), and only up to the watermark; per joined row its labelled line (one orjson call for
the step's rows); per prediction left waiting one row inserted (and, beyond max_pending, one deleted). The
cyclic garbage collector is paused during a step (see `step`).
"""

from __future__ import annotations

import gc
import logging
import os
from collections import Counter
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter
from pathlib import Path

from pydantic import ValidationError

from services.monitor.batch import MAX_MALFORMED_LISTED, Batch, StepCounts, newest
from services.monitor.blocks import FEEDBACK_BLOCK, BlockParser
from services.monitor.join import Joiner
from services.monitor.reader import Chunk, LineAt, LogDir, count_newlines
from services.monitor.report_model import MalformedLine
from services.monitor.rows import OrphanLabel, PendingPrediction, PredictionParser, parse_feedback
from services.monitor.store import MonitorStore
from shared.atomic import append_bytes
from shared.dataset import DatasetConfig
from shared.errors import IntegrityError, explain
from shared.paths import Paths

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
        self.predictions = LogDir(paths.prediction_log_dir, "predictions")
        self.feedback = LogDir(paths.feedback_log_dir, "feedback")
        self.window_size = window_size
        self.drift_window = drift_window
        self.batch_bytes = batch_bytes
        self._line_numbers: dict[tuple[str, int], int] = {}
        self.parse_prediction = PredictionParser(dataset)
        self.blocks = BlockParser()
        self.joiner = Joiner(dataset)

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

        Python's cyclic garbage collector is paused during a step: a step allocates some 10^5 short-lived
        containers (parsed lines, rows), none in a reference cycle, and the collector would otherwise walk the
        monitor's whole heap (pandas, sklearn, the reference data) again and again for nothing (the code before
        the pause took 21-24 CPU seconds over the benchmark's million labelled predictions with it, 14-15
        without). Whatever a step leaves is collected after it as usual.
        """
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._step(store, limits)
        finally:
            if enabled:
                gc.enable()

    def _step(self, store: MonitorStore, limits: dict[str, int] | None) -> tuple[StepCounts, bool]:
        offsets = store.offsets()
        pred_chunks = self.predictions.read(offsets, max_bytes=self.batch_bytes, limits=limits)
        fb_chunks = self.feedback.read(offsets, max_bytes=self.batch_bytes, limits=limits)
        if not pred_chunks and not fb_chunks:
            return StepCounts(), False
        batch = Batch()
        new_offsets: dict[str, int] = {}
        preds: dict[str, PendingPrediction] = {}  # a request_id logged twice in one batch: the last one counts
        watermark = _LATEST
        for chunk in pred_chunks:
            last_time = self._read_predictions(chunk, preds, batch)
            new_offsets[chunk.key] = chunk.end
            limit = limits.get(chunk.key) if limits else None
            if chunk.end < (_size(chunk.path) if limit is None else limit):  # still behind: labels wait for it
                watermark = min(watermark, self.blocks.when(last_time) if last_time else _EARLIEST)
        batch.counts.predictions = len(batch.inputs)
        for version, n in Counter(map(_VERSION, batch.inputs)).items():
            batch.version(version).predictions += n
        labels: list[tuple[str, OrphanLabel, str]] = []
        for chunk in fb_chunks:
            pos = self._read_feedback(chunk, watermark, labels, batch)
            if pos != chunk.start:
                new_offsets[chunk.key] = pos
        batch.counts.feedback = len(labels)
        if not new_offsets:
            return batch.counts, False
        with store.step():
            fresh = self.joiner.predictions(store, preds, batch)
            self.joiner.labels(store, labels, batch, fresh)
            store.put_pending(fresh)  # what is still waiting (a label in this batch never touches the table)
            self._trim(store, batch)
            self._append(store, batch)
            store.set_offsets(new_offsets)
            store.add_counts(batch.versions)
            c = batch.counts
            batch.totals |= {"predictions_read": c.predictions, "feedback_read": c.feedback, "malformed": c.malformed}
            store.add_totals(batch.totals)
        batch.counts.labelled = len(batch.joined)
        return batch.counts, True

    # --- parsing ----------------------------------------------------------------------------------
    def _read_predictions(self, chunk: Chunk, preds: dict[str, PendingPrediction], batch: Batch) -> str | None:
        """Adds the chunk's valid predictions to `preds` and `batch.inputs`; returns the last one's time."""
        parse, inputs, lines = self.parse_prediction, batch.inputs, chunk.lines
        first = len(inputs)
        at, pos = 0, chunk.start  # a line's offset, counted forward only when a malformed line needs it
        for i, line in enumerate(lines):
            try:
                rid, row = parse(line)
            except (ValidationError, ValueError, KeyError, TypeError) as e:
                if line.strip():  # (a blank line is skipped, not malformed)
                    pos += sum(map(len, lines[at:i])) + i - at
                    at = i
                    self._malformed(LineAt(chunk, i, pos), line, e, batch.counts)
                continue
            preds[rid] = row
            inputs.append(row)
        return inputs[-1].time if len(inputs) > first else None

    def _read_feedback(
        self, chunk: Chunk, watermark: datetime, labels: list[tuple[str, OrphanLabel, str]], batch: Batch
    ) -> int:
        """Adds the chunk's valid labels up to the first one newer than `watermark` (it waits, with the lines
        after it) to `labels`; returns the offset after the last line used. Splits and parses a block of lines
        at a time (services.monitor.blocks), line by line where a block is not plain."""
        data = chunk.data
        if data is None:
            return chunk.start
        path, blocks = str(chunk.path), self.blocks
        pos, index = 0, 0  # the next line: its start in data, its number in the chunk
        stop = blocks.first_late(data, watermark)  # the first block ends with the line starting there
        while pos <= len(data):
            end = data.find(b"\n", min(stop, len(data)))
            end = len(data) if end < 0 else end
            part = data[pos:end].split(b"\n")
            block = blocks.feedback(part)
            if block is None:
                for k, line in enumerate(part):
                    if line.strip():
                        try:
                            rid, label, when = parse_feedback(line)
                        except (ValidationError, ValueError) as e:
                            self._malformed(LineAt(chunk, index + k, chunk.start + pos), line, e, batch.counts)
                        else:
                            if when > watermark:
                                return chunk.start + pos  # newer than the predictions read: it waits, with the rest
                            labels.append((rid, label, path))
                    pos += len(line) + 1
            else:
                ids, rows = block
                late = {t for t in set(map(_TIME, rows)) if blocks.when(t) > watermark}
                n = list(map(late.__contains__, map(_TIME, rows))).index(True) if late else len(rows)
                labels.extend(zip(ids[:n], rows[:n], repeat(path)))
                if n < len(rows):
                    return chunk.start + pos + sum(map(len, part[:n])) + n
                pos = end + 1
            index += len(part)
            stop = pos + FEEDBACK_BLOCK
        return chunk.end

    # --- storing ---------------------------------------------------------------------------------
    def _trim(self, store: MonitorStore, batch: Batch) -> None:
        # Keep the most recent by prediction time (files are read one after another, not in time order): rows
        # of the batch older than its own newest `keep` can never be kept, so they are not even stored.
        store.add_inputs([r.inputs() for r in newest(batch.inputs, self.drift_window)], keep=self.drift_window)
        for version, rows in self.joiner.windows(batch.joined, self.window_size).items():
            store.add_window_rows(version, rows, keep=self.window_size)
        for table, cap in (("pending", self.max_pending), ("orphans", self.max_orphans)):
            dropped = store.keep_newest(table, cap)
            if dropped:
                batch.totals[f"expired_{table}"] = dropped
                log.warning("%d %s dropped (more than %d waiting)", dropped, table, cap)

    def _append(self, store: MonitorStore, batch: Batch) -> None:
        """Append the joined rows' labelled lines, fsynced; record the file's new committed length."""
        if not batch.joined:
            return
        self.joiner.count(batch)
        size, rows = store.labelled_length()
        path = self.paths.labelled_file
        on_disk = path.stat().st_size if path.is_file() else 0
        if on_disk != size:
            raise IntegrityError(f"{path} holds {on_disk} bytes, the monitor store {store.path} committed {size}")
        data = self.joiner.labelled(batch.joined)
        append_bytes(path, data)
        store.set_labelled_length(size + len(data), rows + len(batch.joined))

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


_VERSION = attrgetter("model_version")
_TIME = attrgetter("time")
_LATEST = datetime.max.replace(tzinfo=UTC)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _rel(paths: Paths, path: Path) -> str:
    try:
        return path.resolve().relative_to(paths.volume.resolve()).as_posix()
    except ValueError:
        return str(path)
