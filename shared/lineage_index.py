"""The lineage index: request_id -> (log file, byte offset, length, line number) of every prediction and feedback
line, in an SQLite file (`Paths.lineage_index`, WAL mode) kept current by reading only what was appended.

Tables: `files`, one row per log file (its kind, prediction or feedback; its name; `size`, the committed offset:
the end of the last complete line indexed; the lines before it; its first line, `head`), and `records`
(request_id, file, start, length, line). A catch-up (`LineageIndex.catch_up`: before every lookup, or
`python -m services.monitor lineage-index`) stats each *.jsonl of the two log folders. A file whose size is its
committed offset costs nothing more; a longer one is read from that offset to its last newline (an unfinished or
torn last line waits for the next catch-up). A file shorter than its offset, or whose first line changed, was
replaced: it gets a new file id and is read from 0; a file gone from its folder loses its `files` row. Rows of a
file id that no longer has a `files` row are never joined again (left in place: deleting them is a scan of the
whole table).
A line's request_id is the first `"request_id":"<id>"` in it, written as the services write it (compact JSON:
`shared.schemas.PredictionRecord.to_line`, services/inference/logs.py): the lines the former full scan found,
malformed ones included. `LineageIndex.find` returns those lines, read back with one pread each (at most MAX_HITS
of each kind: a log full of copies of one line cannot make a lookup long); parsing them and reporting the malformed
ones is the caller's (shared/lineage.py).

Several processes (inference replicas, the monitor, the CLI) may catch up at once: each chunk is one transaction
(BEGIN IMMEDIATE) that first checks that the file's committed offset is still the one it read from (else it rolls
back and reads on from the new offset) and inserts with INSERT OR IGNORE, so a line is indexed once. Readers do not
wait for writers (WAL). A crash leaves the index at its last committed chunk; the next catch-up reads on from there.
Compacted segments (services/monitor/compact.py): once a segment's Parquet files are listed in the Parquet manifest,
`mark_compacted` moves its `files` row to `compacted` (same id, with the Parquet files' paths) in one transaction, so
its `records` rows stay joined; a lookup that lands there reads the row back from the Parquet files (filtered by
request_id and line: shared.logtables) instead of the JSONL. A segment file still on disk (kept, or not yet removed)
whose head matches its `compacted` row is not indexed again.
The file is derived state: removed, it is rebuilt from the logs by the next catch-up, the compacted segments from the
Parquet manifest's entries and their files (shared/lineage_parquet.py: each catch-up reads what was appended to the
manifest; an entry whose segment is indexed already, as JSONL or compacted, is skipped). One that is not an SQLite
database is reported (ClockworkError naming it and what to do), never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from shared import lineage_parquet
from shared.cli import answer
from shared.config import Settings
from shared.errors import ClockworkError
from shared.paths import LOG_SUFFIX, Paths

log = logging.getLogger(__name__)

CHUNK = 8 << 20  # bytes read and committed per transaction
HEAD = 1024  # a file's first line (up to this) is kept to recognise a replaced file (its id and time differ)
BUSY_TIMEOUT_S = 60.0  # how long a catch-up waits for another process's transaction
NEEDLE = b'"request_id":"'

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, name TEXT NOT NULL,
    size INTEGER NOT NULL, lines INTEGER NOT NULL, head BLOB NOT NULL, UNIQUE (kind, name));
CREATE TABLE IF NOT EXISTS records (
    request_id TEXT NOT NULL, file INTEGER NOT NULL, start INTEGER NOT NULL, length INTEGER NOT NULL,
    line INTEGER NOT NULL, PRIMARY KEY (request_id, file, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS compacted (
    file INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, head BLOB NOT NULL, parquet TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
KINDS = ("prediction", "feedback")
MAX_HITS = 1000  # lines of one kind read back per lookup
# Two queries, each stopping at its LIMIT (one UNION would sort every copy of a line before its LIMIT applies); the
# second walks the compacted segments (few) and seeks each one's rows (CROSS JOIN fixes that order in SQLite), never
# every row of the request id.
LOOKUP = (
    "SELECT f.kind, f.name, r.start, r.length, r.line, NULL FROM records r JOIN files f ON f.id = r.file "
    "WHERE r.request_id = ? AND f.kind = ? ORDER BY f.name, r.start LIMIT ?"
)
LOOKUP_COMPACTED = (
    "SELECT c.kind, c.name, r.start, r.length, r.line, c.parquet FROM compacted c CROSS JOIN records r "
    "ON r.request_id = ?1 AND r.file = c.file WHERE c.kind = ?2 ORDER BY c.name, r.start LIMIT ?3"
)


@dataclass(frozen=True)
class Hit:
    """A log line that names the request id: which log, its line number (from 1) and its bytes (with the newline)."""

    kind: str  # "prediction" | "feedback"
    path: Path
    line: int
    text: bytes


@dataclass
class CatchUpStats:
    files: int = 0  # files that had new bytes
    bytes: int = 0  # bytes read
    rows: int = 0  # lines indexed
    replaced: list[str] = field(default_factory=list)  # files read again from 0
    removed: list[str] = field(default_factory=list)  # files no longer in their folder

    def summary(self) -> dict:
        return {"files": self.files, "bytes": self.bytes, "rows": self.rows, "replaced": self.replaced,
                "removed": self.removed}  # fmt: skip


def parse_block(block: bytes, start: int, lines: int) -> tuple[list[tuple[str, int, int, int]], int]:
    """(request_id, offset, length, line number) of the lines of `block` (complete lines, found at byte `start` of
    its file after `lines` lines) that name a request id, and the lines of the file up to the end of `block`."""
    out = []
    at, n, skip = start, lines, len(NEEDLE)
    for line in block.split(b"\n")[:-1]:
        n += 1
        i = line.find(NEEDLE)
        if i >= 0:
            j = line.find(b'"', i + skip)
            if j >= 0:
                out.append((line[i + skip : j].decode("utf-8", "replace"), at, len(line) + 1, n))
        at += len(line) + 1
    return out, n


def _compacted_file(compacted: dict[tuple[str, str], bytes], kind: str, path: Path) -> bool:
    """Is the file at `path` the segment the newest `compacted` row of its name came from (its first line the same)?
    A row rebuilt from the manifest has no head: a file of that name on disk now is a later one."""
    head = compacted.get((kind, path.name))
    if not head:
        return False
    try:
        with open(path, "rb") as f:
            return f.read(len(head)) == head
    except FileNotFoundError:
        return False


def catch_up_command(args: object, settings: Settings) -> int:
    """`python -m services.monitor lineage-index`: catch the index up now; what was read, as JSON on stdout."""
    answer(json.dumps(LineageIndex(Paths.from_settings(settings)).catch_up().summary()))
    return 0


class LineageIndex:
    """The index of one volume's logs. Each call opens its own connection (threads and processes share nothing)."""

    def __init__(self, paths: Paths) -> None:
        self.path = paths.lineage_index
        self.volume = paths.volume
        self.manifest = paths.parquet_manifest
        self.dirs = {"prediction": paths.prediction_log_dir, "feedback": paths.feedback_log_dir}

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise ClockworkError(f"{self.path}: cannot open the lineage index: {e}") from e
        try:
            try:
                self._setup(con)
                yield con
            except sqlite3.OperationalError as e:
                raise ClockworkError(f"{self.path}: lineage index: {e}") from e
            except sqlite3.DatabaseError as e:
                raise ClockworkError(
                    f"{self.path}: the lineage index is unreadable ({e}); it is derived from the logs: "
                    "remove it and the next lookup rebuilds it"
                ) from e
        finally:
            con.close()

    def _setup(self, con: sqlite3.Connection) -> None:
        """WAL mode and the tables. Two processes creating the file at once can get SQLITE_BUSY at once (SQLite
        does not wait where waiting could deadlock): retried until BUSY_TIMEOUT_S."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints; a lost tail is re-read
                con.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as e:
                if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def catch_up(self, con: sqlite3.Connection | None = None) -> CatchUpStats:
        """Index what was appended to the logs since the last catch-up (complete lines only)."""
        if con is None:
            with self.connect() as con:
                return self.catch_up(con)
        stats = CatchUpStats()
        known = {(k, n): size for k, n, size in con.execute("SELECT kind, name, size FROM files")}
        compacted = {(k, n): h for k, n, h in con.execute("SELECT kind, name, head FROM compacted ORDER BY file")}
        seen = set()
        for kind, directory in self.dirs.items():
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob(f"*{LOG_SUFFIX}")):
                seen.add((kind, path.name))
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                if (kind, path.name) not in known and _compacted_file(compacted, kind, path):
                    continue  # compacted, kept (or not yet removed): its lines are indexed already
                if known.get((kind, path.name)) != size:
                    before = stats.bytes
                    self._catch_up_file(con, kind, path, stats)
                    stats.files += stats.bytes > before
        for kind, name in sorted(set(known) - seen):
            con.execute("DELETE FROM files WHERE kind = ? AND name = ?", (kind, name))
            stats.removed.append(str(self.dirs[kind] / name))
        stats.rows += lineage_parquet.index_manifest(con, self.manifest, self.volume)
        if stats.files or stats.removed:
            log.info("lineage index %s: %s", self.path, stats.summary())
        return stats

    def _catch_up_file(self, con: sqlite3.Connection, kind: str, path: Path, stats: CatchUpStats) -> None:
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below; the loop reads it by pread)
        except FileNotFoundError:
            return
        with f:
            fd = f.fileno()
            while True:
                state = con.execute(
                    "SELECT id, size, lines, head FROM files WHERE kind = ? AND name = ?", (kind, path.name)
                ).fetchone()
                size = os.fstat(fd).st_size
                fid, start, lines, head = state if state else (None, 0, 0, b"")
                if state is not None and (size < start or os.pread(fd, len(head), 0) != head):
                    log.warning("lineage index: %s was replaced (now %d bytes, indexed to %d): reindexing", path,
                                size, start)  # fmt: skip
                    stats.replaced.append(str(path))
                    fid, start, lines, head = None, 0, 0, b""
                data = os.pread(fd, min(CHUNK, size - start), start) if size > start else b""
                while b"\n" not in data and start + len(data) < size:  # a line longer than CHUNK: read on
                    data += os.pread(fd, CHUNK, start + len(data))
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    return  # nothing new, or only an unfinished line
                block = data[:cut]
                found, lines_after = parse_block(block, start, lines)
                con.execute("BEGIN IMMEDIATE")
                try:
                    now = con.execute("SELECT id, size FROM files WHERE kind = ? AND name = ?", (kind, path.name))
                    if now.fetchone() != ((state[0], state[1]) if state else None):
                        con.execute("ROLLBACK")  # another process moved it on: read on from its offset
                        continue
                    if fid is None:
                        if state is not None:
                            con.execute("DELETE FROM files WHERE id = ?", (state[0],))
                        fid = con.execute(
                            "INSERT INTO files (kind, name, size, lines, head) VALUES (?, ?, ?, ?, ?)",
                            (kind, path.name, start + cut, lines_after, block[: min(HEAD, block.index(b"\n") + 1)]),
                        ).lastrowid
                    else:
                        con.execute(
                            "UPDATE files SET size = ?, lines = ? WHERE id = ?", (start + cut, lines_after, fid)
                        )
                    con.executemany(
                        "INSERT OR IGNORE INTO records VALUES (?, ?, ?, ?, ?)",
                        [(rid, fid, at, length, n) for rid, at, length, n in found],
                    )
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
                stats.bytes += cut
                stats.rows += len(found)

    def indexed_to(self, kind: str, name: str) -> int | None:
        """The committed offset of a segment, caught up first (None: not indexed; -1: compacted already). Reads that
        one file only: a compaction never pays for the open segments' new lines."""
        with self.connect() as con:
            path = self.dirs[kind] / name
            newest = con.execute(
                "SELECT head FROM compacted WHERE kind = ? AND name = ? ORDER BY file DESC LIMIT 1", (kind, name)
            ).fetchone()
            compacted = {(kind, name): newest[0]} if newest else {}
            if path.is_file() and not _compacted_file(compacted, kind, path):
                self._catch_up_file(con, kind, path, CatchUpStats())
            row = con.execute("SELECT size FROM files WHERE kind = ? AND name = ?", (kind, name)).fetchone()
            if (
                row is None
                and con.execute("SELECT 1 FROM compacted WHERE kind = ? AND name = ?", (kind, name)).fetchone()
            ):
                return -1
        return None if row is None else row[0]

    def mark_compacted(self, kind: str, name: str, parquet: list[str]) -> bool:
        """Move a segment's `files` row to `compacted` (its lines now read from `parquet`, paths relative to the
        volume). False if it had no `files` row (moved already, or never indexed)."""
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT id, head FROM files WHERE kind = ? AND name = ?", (kind, name)).fetchone()
                if row is not None:
                    con.execute(
                        "INSERT INTO compacted VALUES (?, ?, ?, ?, ?)",
                        (row[0], kind, name, row[1], json.dumps(parquet)),
                    )
                    con.execute("DELETE FROM files WHERE id = ?", (row[0],))
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return row is not None

    def find(self, request_id: str) -> list[Hit]:
        """Catch up, then the log lines that name `request_id` (by kind, file name and offset), each read back: at
        most MAX_HITS of each kind (an id is logged once; a log full of copies of one line must not make a lookup
        read them all)."""
        with self.connect() as con:
            self.catch_up(con)
            rows = []
            for kind in KINDS:
                found = con.execute(LOOKUP, (request_id, kind, MAX_HITS + 1)).fetchall()
                found = sorted(found + con.execute(LOOKUP_COMPACTED, (request_id, kind, MAX_HITS + 1)).fetchall())
                if len(found) > MAX_HITS:
                    log.warning("lineage index: more than %d %s lines name %r: the first %d are read", MAX_HITS,
                                kind, request_id, MAX_HITS)  # fmt: skip
                rows += found[:MAX_HITS]
        needle = NEEDLE + request_id.encode("utf-8") + b'"'
        hits: list[Hit] = []
        files: dict[Path, BinaryIO | None] = {}
        try:
            for kind, name, start, length, line, parquet in rows:
                if parquet is not None:
                    hits += lineage_parquet.read_back(self.volume, kind, json.loads(parquet), request_id, line)
                    continue
                path = self.dirs[kind] / name
                if path not in files:
                    try:
                        files[path] = open(path, "rb")  # noqa: SIM115 (closed below)
                    except FileNotFoundError:
                        files[path] = None  # removed since the catch-up
                f = files[path]
                text = os.pread(f.fileno(), length, start) if f else b""
                if needle in text and text.endswith(b"\n"):
                    hits.append(Hit(kind, path, line, text))
                elif f:  # replaced between the catch-up and this read: the next catch-up reindexes it
                    log.warning("lineage index: %s:%d no longer holds request_id %r", path, line, request_id)
        finally:
            for f in files.values():
                if f:
                    f.close()
        return hits
