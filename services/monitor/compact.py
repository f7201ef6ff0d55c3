"""Compaction: closed log segments -> Parquet partitions any engine reads, listed with their sha256 in a manifest.

A segment (services/inference/logs.py) is closed when its instance has a newer one, or (logs.rotate_daily) when it is
from an earlier UTC day and no process holds it. A closed segment is compacted once the monitor's store has read it to
its last complete line AND the lineage index has indexed it that far (the index catches up on that file alone: a
compaction never reads the open segments). Per segment:
1. its lines are parsed into the kind's columns (shared.logtables) and written, one Parquet file per partition
   (`day`, and `model_version` for predictions), each to a fixed temp name, fsynced and renamed to
   `part-<segment stem>.parquet` (a re-run writes the same names: never a second copy of a row); lines that are not
   valid records (and a torn tail) go verbatim to `<kind dir>/_malformed/<segment>` (the engines skip `_` folders);
2. one manifest line (shared.schemas.CompactionEntry: the segment, its sha256, every file with its sha256 and rows)
   is appended and fsynced: the commit point;
3. the lineage index moves the segment to its compacted files (shared.lineage_index.mark_compacted);
4. the segment is removed (unless logs.keep_segments) and its offset dropped from the monitor store.
A kill anywhere leaves the segment (before 2) or a listed compaction (after 2); the next run redoes 1 or finishes
3-4 from the manifest line, and never duplicates rows. Then retention (logs.retention_days): each `day=` partition
older than that is listed in an ExpiryEntry line, then removed.
One compaction at a time: the manifest's lock (shared.atomic.locked), taken without waiting.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from pydantic import ValidationError

from services.monitor.store import MonitorStore
from shared import logtables
from shared.atomic import append_line, atomic_write_bytes, fsync_dir, locked, sha256_file
from shared.config import Settings
from shared.errors import ClockworkError, explain
from shared.lineage_index import LineageIndex
from shared.paths import LOG_SUFFIX, Paths, parse_segment
from shared.schemas import CompactionEntry, ExpiryEntry, ParquetFile, utc_now

log = logging.getLogger(__name__)

ROWS_PER_GROUP = 50_000  # rows parsed before they are written out as a row group (bounds memory)
MALFORMED_DIR = "_malformed"
STORE_KINDS = {"prediction": "predictions", "feedback": "feedback"}  # the monitor store's offset key prefixes


@dataclass
class CompactSummary:
    segments: list[str] = field(default_factory=list)  # compacted in this run
    finished: list[str] = field(default_factory=list)  # listed by an earlier run, finished now
    rows: int = 0
    files: int = 0
    waiting: dict[str, str] = field(default_factory=dict)  # closed segment -> what it waits for
    expired: list[str] = field(default_factory=list)  # "<kind>/day=..." removed by retention
    busy: bool = False

    def summary(self) -> dict:
        return {"segments": self.segments, "finished": self.finished, "rows": self.rows, "files": self.files,
                "waiting": self.waiting, "expired": self.expired, "busy": self.busy}  # fmt: skip


@dataclass(frozen=True)
class Segment:
    kind: str
    path: Path
    held_fd: int | None  # a flock this run holds on an idle instance's newest segment

    @property
    def key(self) -> str:
        return f"{STORE_KINDS[self.kind]}/{self.path.name}"


class Compactor:
    def __init__(self, *, settings: Settings, paths: Paths) -> None:
        self.settings = settings
        self.paths = paths
        self.index = LineageIndex(paths)

    def run(self, store: MonitorStore, *, now: datetime | None = None) -> CompactSummary:
        """Compact every closed, read and indexed segment, then apply retention. `store`: the monitor's, open."""
        out = CompactSummary()
        now = now or datetime.now(UTC)
        manifest = self.paths.parquet_manifest
        try:
            with locked(manifest, blocking=False):
                done = self.listed()
                for seg in self.closed_segments(now):
                    try:
                        self._one(seg, store, done, out)
                    finally:
                        if seg.held_fd is not None:
                            os.close(seg.held_fd)
                self.expire(now, out)
        except BlockingIOError:
            out.busy = True
            log.warning("compaction: another compaction holds %s; skipped", manifest)
        if out.segments or out.finished or out.expired:
            log.info("compaction: %s", out.summary())
        return out

    # --- which segments ---------------------------------------------------------------------------
    def closed_segments(self, now: datetime) -> Iterator[Segment]:
        today = now.strftime("%Y-%m-%d")
        dirs = {"prediction": self.paths.prediction_log_dir, "feedback": self.paths.feedback_log_dir}
        for kind, directory in dirs.items():
            if not directory.is_dir():
                continue
            by_instance: dict[str, list[tuple[int, Path]]] = {}
            for p in directory.iterdir():
                parsed = parse_segment(p.name)
                if parsed and p.name.endswith(LOG_SUFFIX) and p.is_file():
                    by_instance.setdefault(parsed[0], []).append((parsed[1], p))
            for instance in sorted(by_instance):
                found = sorted(by_instance[instance])
                for _, path in found[:-1]:
                    yield Segment(kind, path, None)
                newest = found[-1][1]
                if self.settings.logs.rotate_daily:
                    fd = _idle_since_before(newest, today)
                    if fd is not None:
                        yield Segment(kind, newest, fd)

    def listed(self) -> dict[str, CompactionEntry]:
        """segment (relative path) -> its compaction entry in the manifest."""
        out: dict[str, CompactionEntry] = {}
        path = self.paths.parquet_manifest
        if not path.is_file():
            return out
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if '"event":"compact"' not in line:
                continue
            try:
                entry = CompactionEntry.model_validate_json(line)
            except ValidationError as e:
                raise ClockworkError(f"{path}:{n}: not a compaction entry: {explain(e)}") from e
            out[entry.segment] = entry
        return out

    # --- one segment ------------------------------------------------------------------------------
    def _one(self, seg: Segment, store: MonitorStore, done: dict[str, CompactionEntry], out: CompactSummary) -> None:
        rel = self.rel(seg.path)
        entry = done.get(rel)
        if entry is not None and self.settings.logs.keep_segments:
            if self.index.indexed_to(seg.kind, seg.path.name) == -1 and _size(seg.path) == entry.segment_bytes:
                return  # compacted and kept (the index matched its head): nothing left to do, nothing to hash
        if entry is not None and self._same(seg, entry):
            self.finish(seg, entry, store)
            out.finished.append(rel)
            return
        end = _complete_end(seg.path)
        read_to = store.offsets().get(seg.key, 0)
        indexed = self.index.indexed_to(seg.kind, seg.path.name)
        if read_to < end:
            out.waiting[rel] = f"the monitor has read {read_to} of {end} bytes"
            return
        if end and (indexed is None or 0 <= indexed < end):  # (a segment without a whole line has no files row)
            out.waiting[rel] = f"the lineage index has indexed {indexed or 0} of {end} bytes"
            return
        entry = self.write(seg)
        append_line(self.paths.parquet_manifest, entry.to_line())
        done[rel] = entry
        self.finish(seg, entry, store)
        out.segments.append(rel)
        out.rows += entry.rows
        out.files += len(entry.files)

    @staticmethod
    def _same(seg: Segment, entry: CompactionEntry) -> bool:
        """Is the segment on disk the one the entry lists (not a later file of the same name)?"""
        try:
            if seg.path.stat().st_size != entry.segment_bytes:
                return False
        except FileNotFoundError:
            return True
        return _sha256_or_none(seg.path) in (entry.segment_sha256, None)

    def write(self, seg: Segment) -> CompactionEntry:
        """Steps 1: the segment's Parquet files (and malformed lines), durable; returns their manifest entry."""
        kind, dataset = seg.kind, self.settings.dataset
        parse = logtables.RowParser(kind, dataset)
        table_schema = logtables.schema(kind, dataset)
        tmp_name = f".{seg.path.name}.parquet.tmp"
        root = self.paths.parquet_dir
        writers: dict[tuple[str, ...], tuple[Path, pq.ParquetWriter]] = {}
        pending: dict[tuple[str, ...], list[dict]] = {}
        rows: dict[tuple[str, ...], int] = {}
        malformed: list[bytes] = []
        digest = hashlib.sha256()
        size = 0

        def flush(part: tuple[str, ...]) -> None:
            if part not in writers:
                tmp = root / logtables.partition_dir(kind, part) / tmp_name
                tmp.parent.mkdir(parents=True, exist_ok=True)
                writers[part] = (tmp, pq.ParquetWriter(tmp, table_schema))
            writers[part][1].write_table(logtables.to_table(pending.pop(part), table_schema))

        try:
            with open(seg.path, "rb") as f:
                for line_no, raw in enumerate(f, 1):
                    digest.update(raw)
                    size += len(raw)
                    line = raw.rstrip(b"\n")
                    if not raw.endswith(b"\n") or not line.strip():
                        if line.strip():
                            malformed.append(orjson_line(line_no, line, "unfinished last line"))
                        continue
                    try:
                        part, row = parse(line, line_no)
                    except (ValidationError, ValueError) as e:
                        why = explain(e) if isinstance(e, ValidationError) else str(e)
                        malformed.append(orjson_line(line_no, line, why))
                        continue
                    pending.setdefault(part, []).append(row)
                    rows[part] = rows.get(part, 0) + 1
                    if len(pending[part]) >= ROWS_PER_GROUP:
                        flush(part)
            for part in list(pending):
                flush(part)
            files = []
            name = logtables.file_name(seg.path.name, digest.hexdigest())
            for part, (tmp, writer) in sorted(writers.items()):
                writer.close()
                fsync_dir(tmp)  # a closed file: its bytes
                final = tmp.with_name(name)
                os.replace(tmp, final)
                fsync_dir(final.parent)
                values = dict(zip(logtables.PARTITIONS[kind], part, strict=True))
                files.append(ParquetFile(path=self.rel(final), sha256=sha256_file(final), rows=rows[part],
                                         partition=values))  # fmt: skip
        finally:
            for tmp, writer in writers.values():
                writer.close()  # (a second close is a no-op)
                tmp.unlink(missing_ok=True)
        bad = None
        if malformed:
            bad_path = root / logtables.KIND_DIRS[kind] / MALFORMED_DIR / seg.path.name
            atomic_write_bytes(bad_path, b"".join(malformed))
            bad = ParquetFile(path=self.rel(bad_path), sha256=sha256_file(bad_path), rows=len(malformed))
        return CompactionEntry(
            kind=kind,  # type: ignore[arg-type]
            segment=self.rel(seg.path),
            segment_sha256=digest.hexdigest(),
            segment_bytes=size,
            rows=sum(rows.values()),
            malformed=len(malformed),
            files=files,
            malformed_file=bad,
            created_at=utc_now(),
        )

    def finish(self, seg: Segment, entry: CompactionEntry, store: MonitorStore) -> None:
        """Steps 3-4, each idempotent: the lineage index reads the segment from its Parquet files; the segment goes."""
        self.index.mark_compacted(seg.kind, seg.path.name, [f.path for f in entry.files])
        if self.settings.logs.keep_segments:
            return
        seg.path.unlink(missing_ok=True)
        fsync_dir(seg.path.parent)
        store.drop_offsets([seg.key])

    # --- retention --------------------------------------------------------------------------------
    def expire(self, now: datetime, out: CompactSummary) -> None:
        days = self.settings.logs.retention_days
        if days is None:
            return
        cutoff = (now - timedelta(days=days)).strftime("%Y-%m-%d")
        for kind, sub in logtables.KIND_DIRS.items():
            base = self.paths.parquet_dir / sub
            if not base.is_dir():
                continue
            for day_dir in sorted(base.glob("day=*")):
                day = day_dir.name.removeprefix("day=")
                if day >= cutoff:
                    continue
                files = sorted(self.rel(p) for p in day_dir.rglob("*.parquet"))
                expiry = ExpiryEntry(kind=kind, day=day, files=files, created_at=utc_now())  # type: ignore[arg-type]
                append_line(self.paths.parquet_manifest, expiry.to_line())
                shutil.rmtree(day_dir)
                fsync_dir(base)
                out.expired.append(f"{sub}/{day_dir.name}")

    def rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.paths.volume.resolve()).as_posix()
        except ValueError:
            return str(path)


def orjson_line(line_no: int, line: bytes, why: str) -> bytes:
    return orjson.dumps({"line": line_no, "reason": why[:300], "text": line.decode("utf-8", "replace")}) + b"\n"


def _complete_end(path: Path) -> int:
    """The offset just after the last newline of a file (0: none)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        pos = size
        while pos > 0:
            step = min(pos, 1 << 16)
            f.seek(pos - step)
            block = f.read(step)
            cut = block.rfind(b"\n")
            if cut >= 0:
                return pos - step + cut + 1
            pos -= step
    return 0


def _idle_since_before(path: Path, today: str) -> int | None:
    """A read-only fd holding the flock of an instance's newest segment if it was last written before `today` (UTC)
    and no process holds it; else None. A writer that starts then opens a new segment (services/inference/logs.py)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%d") >= today:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _sha256_or_none(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None

