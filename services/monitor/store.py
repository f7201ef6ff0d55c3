"""The monitor's store: what changes with every log line, in SQLite, updated in place (never rewritten whole).

One file (`monitoring.store_file`), WAL mode, one connection, one writer (the monitor's lock). Tables:
- `offsets`: per log file ("predictions/<name>", "feedback/<name>"), the byte offset after the last complete line
  used;
- `meta`: the store's format, the features its rows hold (in order) and the labelled file's committed length
  (`labelled_bytes`, `labelled_rows`: shared.labelled reads these two);
- `pending`: predictions waiting for their label (by request_id; `seq` is arrival order, the oldest dropped first
  beyond the cap); `orphans`: labels whose prediction has not been read yet;
- `inputs`: the drift window (the most recent inputs by prediction time); `windows`: per model version, the most
  recent labelled rows (the performance window);
- `counts`: per model version, predictions, labels and positives seen; `totals`: predictions_read, feedback_read,
  malformed, duplicate_feedback, expired_pending, expired_orphans.
An ingest step changes all of them and the offsets in ONE transaction (`step()`), committed after the labelled
rows it produced were appended and fsynced: a crash before the commit rolls the whole step back (the same lines
are read again), bytes beyond `labelled_bytes` are cut on the next start. A store that SQLite cannot read, or
whose format or features are not this monitor's, is refused naming the file and why.

The connection keeps the request_ids of `pending` and `orphans` in memory (read on first use, at most
max_pending + max_orphans of them, updated by every change, dropped on a rollback): a step asks SQLite only about
ids the tables hold, so predictions and labels that meet within a step cost no index lookups.

Durability: WAL with synchronous=FULL, so a COMMIT returns once the WAL is fsynced and a committed step survives a
power cut, not only a kill -9. The durable order of a step is: labelled rows appended and fsynced, then the
commit (offsets, waiting records, windows, counts and the labelled file's committed length). NORMAL (no fsync at
commit, only at checkpoints) would still be exactly-once: a power cut could roll back the last steps, whose
labelled bytes are cut on the next start and whose lines are read and joined again the same way; but a reader of
the labelled rows (shared.labelled, the retrain worker) could meanwhile have used rows such a cut takes back. FULL
costs one WAL fsync per step, about 70 per million predictions (in a micro-benchmark of 70 pending-heavy steps on
the benchmark's VM: 5.9 s against 5.2 s with NORMAL), so it stays. `cache_size` (CACHE_KIB) holds the waiting
tables' hot pages: with request_ids that do not arrive in order, inserts and deletes at SQLite's default 2 MiB read
their pages back from the OS (the same micro-benchmark with random ids: 20.5 s, 15.9 s with 64 MiB).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

import orjson
from pydantic import BaseModel, NonNegativeInt

from services.monitor.rows import InputRow, OrphanLabel, PendingPrediction, WindowRow
from shared.errors import DataValidationError
from shared.labelled import LABELLED_BYTES_KEY, LABELLED_ROWS_KEY

STORE_FORMAT = 1
# SQLite's page cache for this connection (KiB; its default is 2 MiB): the pending table and its request_id
# index at the default caps fill some 40 MB (see the module docstring).
CACHE_KIB = 64 << 10
MOVE_ASIDE = "; move it aside (with the state file and the labelled file next to it) to start counting from scratch"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE offsets (key TEXT PRIMARY KEY, offset INTEGER NOT NULL);
CREATE TABLE pending (seq INTEGER PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, time TEXT NOT NULL,
    model_version TEXT NOT NULL, vals TEXT NOT NULL, probability REAL NOT NULL, predicted INTEGER NOT NULL);
CREATE TABLE orphans (seq INTEGER PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, time TEXT NOT NULL,
    label INTEGER NOT NULL);
CREATE TABLE inputs (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, model_version TEXT NOT NULL, vals TEXT NOT NULL);
CREATE INDEX inputs_by_time ON inputs (time, seq);
CREATE TABLE windows (seq INTEGER PRIMARY KEY, model_version TEXT NOT NULL, time TEXT NOT NULL,
    label INTEGER NOT NULL, predicted INTEGER NOT NULL, probability REAL NOT NULL);
CREATE INDEX windows_by_time ON windows (model_version, time, seq);
CREATE TABLE counts (model_version TEXT PRIMARY KEY, predictions INTEGER NOT NULL, labelled INTEGER NOT NULL,
    positives INTEGER NOT NULL);
CREATE TABLE totals (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""
TABLES = {"meta", "offsets", "pending", "orphans", "inputs", "windows", "counts", "totals"}
IDS = "SELECT value FROM json_each(?)"


class VersionCounts(BaseModel):
    predictions: NonNegativeInt = 0
    labelled: NonNegativeInt = 0
    positives: NonNegativeInt = 0


@dataclass
class Snapshot:
    """What a cycle measures, read from the store (bounded: the windows, the counts, a count per version)."""

    windows: dict[str, list[WindowRow]] = field(default_factory=dict)  # model_version -> rows, oldest first
    counts: dict[str, VersionCounts] = field(default_factory=dict)
    pending_by_version: dict[str, int] = field(default_factory=dict)
    recent_inputs: list[InputRow] = field(default_factory=list)  # oldest first
    orphans: int = 0
    labelled_rows: int = 0

    @property
    def pending(self) -> int:
        return sum(self.pending_by_version.values())


def _values(text: str) -> tuple:
    return tuple(orjson.loads(text))


class MonitorStore:
    """The open store. `open()` creates it (schema, format, features) or checks it; use as a context manager."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self.created = False
        # The request_ids of the waiting tables, read once and then kept up to date by every change (so lookups
        # of ids the store does not hold cost nothing); dropped on a rollback, read again when next needed.
        self._ids: dict[str, set[str]] = {}

    @classmethod
    def open(
        cls, path: Path, *, features: Sequence[str], seed: Callable[[MonitorStore], None] | None = None
    ) -> MonitorStore:
        """Open the store, or create it (calling `seed` inside the creating transaction: all or nothing)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise DataValidationError(f"monitor store {path} cannot be opened ({e}){MOVE_ASIDE}") from e
        store = cls(path, conn)
        try:
            with store._refusing("is unreadable"):
                existing = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
                if existing:
                    store._check(features)  # before anything is written to it
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                if not existing:  # a new file (or one whose creation never committed)
                    store._create(features, seed)
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> MonitorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _refusing(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise DataValidationError(f"monitor store {self.path} {what} ({e}){MOVE_ASIDE}") from e

    def _create(self, features: Sequence[str], seed: Callable[[MonitorStore], None] | None) -> None:
        with self.step():
            for statement in filter(str.strip, SCHEMA.split(";")):
                self.conn.execute(statement)
            self._set_meta(
                {"format": STORE_FORMAT, "features": list(features), LABELLED_BYTES_KEY: 0, LABELLED_ROWS_KEY: 0}
            )
            if seed is not None:
                seed(self)
        self.created = True

    def _check(self, features: Sequence[str]) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if TABLES - tables:
            raise DataValidationError(
                f"monitor store {self.path} is unreadable (tables missing: {sorted(TABLES - tables)}){MOVE_ASIDE}"
            )
        meta = self.meta()
        if meta.get("format") != STORE_FORMAT:
            raise DataValidationError(
                f"monitor store {self.path} is unreadable (format: {meta.get('format')!r}, expected "
                f"{STORE_FORMAT}){MOVE_ASIDE}"
            )
        if meta.get("features") != list(features):
            raise DataValidationError(
                f"monitor store {self.path} holds readings of {meta.get('features')}, not of the dataset's features "
                f"{list(features)}{MOVE_ASIDE}"
            )

    # --- transactions ---------------------------------------------------------------------------
    @contextmanager
    def step(self) -> Iterator[sqlite3.Connection]:
        """One transaction: everything inside commits together or not at all."""
        with self._refusing("failed"):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                self._ids.clear()
                raise
            self.conn.execute("COMMIT")

    # --- meta, offsets, counts --------------------------------------------------------------------
    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def _set_meta(self, values: dict) -> None:
        self.conn.executemany(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    def labelled_length(self) -> tuple[int, int]:
        meta = self.meta()
        return int(meta.get(LABELLED_BYTES_KEY, 0)), int(meta.get(LABELLED_ROWS_KEY, 0))

    def set_labelled_length(self, size: int, rows: int) -> None:
        self._set_meta({LABELLED_BYTES_KEY: size, LABELLED_ROWS_KEY: rows})

    def offsets(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT key, offset FROM offsets"))

    def drop_offsets(self, keys: list[str]) -> None:
        """Forget the offsets of log files removed for good (a compacted segment): a file of that name later is new."""
        with self.step() as conn:
            conn.executemany("DELETE FROM offsets WHERE key = ?", [(k,) for k in keys])

    def set_offsets(self, offsets: dict[str, int]) -> None:
        self.conn.executemany(
            "INSERT INTO offsets VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET offset = excluded.offset",
            list(offsets.items()),
        )

    def add_counts(self, counts: dict[str, VersionCounts]) -> None:
        self.conn.executemany(
            "INSERT INTO counts VALUES (?, ?, ?, ?) ON CONFLICT(model_version) DO UPDATE SET "
            "predictions = predictions + excluded.predictions, labelled = labelled + excluded.labelled, "
            "positives = positives + excluded.positives",
            [(v, c.predictions, c.labelled, c.positives) for v, c in counts.items()],
        )

    def counts(self) -> dict[str, VersionCounts]:
        rows = self.conn.execute("SELECT model_version, predictions, labelled, positives FROM counts")
        return {v: VersionCounts(predictions=p, labelled=n, positives=y) for v, p, n, y in rows}

    def add_totals(self, totals: dict[str, int]) -> None:
        self.conn.executemany(
            "INSERT INTO totals VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET n = n + excluded.n",
            [(k, n) for k, n in totals.items() if n],
        )

    def totals(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT name, n FROM totals"))

    # --- waiting records ------------------------------------------------------------------------
    def orphans_among(self, ids: list[str]) -> dict[str, OrphanLabel]:
        held = self._held("orphans", ids)
        if not held:
            return {}
        rows = self.conn.execute(
            f"SELECT request_id, time, label FROM orphans WHERE request_id IN ({IDS})", (_j(held),)
        )
        return {rid: OrphanLabel(t, y) for rid, t, y in rows}

    def pending_among(self, ids: list[str]) -> dict[str, PendingPrediction]:
        held = self._held("pending", ids)
        if not held:
            return {}
        rows = self.conn.execute(
            f"SELECT request_id, time, model_version, vals, probability, predicted FROM pending "
            f"WHERE request_id IN ({IDS})",
            (_j(held),),
        )
        return {rid: PendingPrediction(t, v, _values(x), p, y) for rid, t, v, x, p, y in rows}

    def put_pending(self, rows: dict[str, PendingPrediction]) -> None:
        """Add (or, for a request_id already waiting, replace in place) pending predictions."""
        if not rows:
            return
        self._id_set("pending").update(rows)
        r = rows.values()
        self.conn.executemany(
            "INSERT INTO pending (request_id, time, model_version, vals, probability, predicted) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(request_id) DO UPDATE SET time = excluded.time, "
            "model_version = excluded.model_version, vals = excluded.vals, probability = excluded.probability, "
            "predicted = excluded.predicted",
            zip(
                rows,
                map(_TIME, r),
                map(_VERSION, r),
                map(bytes.decode, map(orjson.dumps, map(_VALUES, r))),
                map(_PROB, r),
                map(_PRED, r),
                strict=True,
            ),
        )

    def put_orphans(self, rows: dict[str, OrphanLabel]) -> None:
        """Add labels waiting for their prediction (none of them waits already)."""
        if not rows:
            return
        self._id_set("orphans").update(rows)
        self.conn.executemany(
            "INSERT INTO orphans (request_id, time, label) VALUES (?, ?, ?)",
            [(rid, r.time, r.label) for rid, r in rows.items()],
        )

    def drop(self, table: str, ids: list[str]) -> None:
        held = self._held(table, ids)
        if held:
            self.conn.execute(f"DELETE FROM {_waiting(table)} WHERE request_id IN ({IDS})", (_j(held),))
            self._ids[table].difference_update(held)

    def size(self, table: str) -> int:
        """Rows of a waiting table."""
        return len(self._id_set(table))

    def keep_newest(self, table: str, cap: int) -> int:
        """Drop the oldest arrivals beyond `cap` of a waiting table; returns how many."""
        excess = self.size(table) - cap
        if excess <= 0:
            return 0
        name = _waiting(table)
        (last,) = self.conn.execute(f"SELECT seq FROM {name} ORDER BY seq LIMIT 1 OFFSET ?", (excess - 1,)).fetchone()
        gone = [r[0] for r in self.conn.execute(f"SELECT request_id FROM {name} WHERE seq <= ?", (last,))]
        self.conn.execute(f"DELETE FROM {name} WHERE seq <= ?", (last,))
        self._ids[table].difference_update(gone)
        return len(gone)

    def ids(self, table: str) -> set[str]:
        """Every request_id of a waiting table (read from the table itself, for tests)."""
        return {r[0] for r in self.conn.execute(f"SELECT request_id FROM {_waiting(table)}")}

    def _id_set(self, table: str) -> set[str]:
        ids = self._ids.get(table)
        if ids is None:
            ids = self._ids[table] = self.ids(table)
        return ids

    def _held(self, table: str, ids: list[str]) -> list[str]:
        """Those of `ids` the table holds (each once)."""
        held = self._id_set(table)
        return list(dict.fromkeys(filter(held.__contains__, ids)))

    # --- windows ----------------------------------------------------------------------------------
    def add_inputs(self, rows: Iterable[InputRow], keep: int) -> None:
        self.conn.executemany(
            "INSERT INTO inputs (time, model_version, vals) VALUES (?, ?, ?)",
            [(r.time, r.model_version, _dumps(r.values)) for r in rows],
        )
        self.conn.execute(
            "DELETE FROM inputs WHERE seq IN (SELECT seq FROM inputs ORDER BY time DESC, seq DESC LIMIT -1 OFFSET ?)",
            (keep,),
        )

    def add_window_rows(self, version: str, rows: Iterable[WindowRow], keep: int) -> None:
        self.conn.executemany(
            "INSERT INTO windows (model_version, time, label, predicted, probability) VALUES (?, ?, ?, ?, ?)",
            [(version, *r) for r in rows],
        )
        self.conn.execute(
            "DELETE FROM windows WHERE seq IN (SELECT seq FROM windows WHERE model_version = ? "
            "ORDER BY time DESC, seq DESC LIMIT -1 OFFSET ?)",
            (version, keep),
        )

    def recent_inputs(self) -> list[InputRow]:
        rows = self.conn.execute("SELECT time, model_version, vals FROM inputs ORDER BY time, seq")
        return [InputRow(t, v, _values(x)) for t, v, x in rows]

    def windows(self) -> dict[str, list[WindowRow]]:
        out: dict[str, list[WindowRow]] = {}
        rows = self.conn.execute(
            "SELECT model_version, time, label, predicted, probability FROM windows ORDER BY model_version, time, seq"
        )
        for v, t, y, p, prob in rows:
            out.setdefault(v, []).append(WindowRow(t, y, p, prob))
        return out

    def snapshot(self) -> Snapshot:
        with self._refusing("failed"):
            return Snapshot(
                windows=self.windows(),
                counts=self.counts(),
                pending_by_version=dict(
                    self.conn.execute("SELECT model_version, COUNT(*) FROM pending GROUP BY model_version")
                ),
                recent_inputs=self.recent_inputs(),
                orphans=self.size("orphans"),
                labelled_rows=self.labelled_length()[1],
            )


def _waiting(table: str) -> str:
    if table not in ("pending", "orphans"):
        raise ValueError(f"not a waiting table: {table!r}")
    return table


def _j(ids: list[str]) -> str:
    return orjson.dumps(ids).decode()


def _dumps(values: tuple) -> str:
    return orjson.dumps(values).decode()


_TIME, _VERSION, _VALUES = attrgetter("time"), attrgetter("model_version"), attrgetter("values")
_PROB, _PRED = attrgetter("probability"), attrgetter("predicted")
