"""The lineage index's side of compacted segments (shared/lineage_index.py): reading a line back from Parquet, and
indexing the Parquet manifest's segments (what a rebuilt index needs: their JSONL segments are gone).

`index_manifest` reads the manifest (logs.manifest) from the offset the index keeps in its `meta` table, so each
catch-up costs what was appended to it. A compaction entry already in `compacted` (same segment name, same Parquet
files) is skipped, and so is one whose segment is still on disk, indexed as JSONL (its compaction moves that `files`
row itself, `LineageIndex.mark_compacted`); any other gets a `compacted` row (a new file id) and one `records` row per
Parquet row (request_id, source_line), so a lookup finds it as it finds a segment compacted under the index's eyes.
A Parquet file removed by retention is skipped. pyarrow is imported only when a Parquet file is read.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from pydantic import ValidationError

from shared.atomic import sha256_file
from shared.schemas import CompactionEntry

log = logging.getLogger(__name__)

MANIFEST_OFFSET = "manifest_offset"  # the `meta` key: bytes of the Parquet manifest indexed


def read_back(volume: Path, kind: str, parquet: list[str], request_id: str, line: int) -> list:
    """The line `line` of a compacted segment that names `request_id`, read back from its Parquet files (paths
    relative to `volume`) as the log line it was: [Hit] or [] (the files are gone)."""
    from shared import logtables
    from shared.lineage_index import Hit

    for rel in parquet:
        path = volume / rel
        try:
            found = logtables.find_rows(path, request_id, line)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("lineage index: cannot read %s: %s", path, e)
            continue
        if found:
            return [Hit(kind, path, line, logtables.to_line(kind, found[0], path))]
    return []


def index_manifest(con: sqlite3.Connection, manifest: Path, volume: Path) -> int:
    """Index the compaction entries appended to `manifest` since the last call; returns the rows indexed."""
    try:
        size = manifest.stat().st_size
    except FileNotFoundError:
        return 0
    row = con.execute("SELECT value FROM meta WHERE key = ?", (MANIFEST_OFFSET,)).fetchone()
    start = row[0] if row else 0
    if size <= start:
        return 0
    with open(manifest, "rb") as f:
        f.seek(start)
        data = f.read(size - start)
    end = data.rfind(b"\n") + 1
    rows = 0
    con.execute("BEGIN IMMEDIATE")
    try:
        for line in data[:end].splitlines():
            if b'"event":"compact"' in line:
                rows += _index_entry(con, line, volume)
        con.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (MANIFEST_OFFSET, start + end),
        )
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    return rows


def _index_entry(con: sqlite3.Connection, line: bytes, volume: Path) -> int:
    try:
        entry = CompactionEntry.model_validate_json(line)
    except ValidationError as e:
        log.warning("lineage index: a Parquet manifest line is not a compaction entry (skipped): %s", e)
        return 0
    name = Path(entry.segment).name
    listed = json.dumps([f.path for f in entry.files])
    if con.execute(
        "SELECT 1 FROM compacted WHERE kind = ? AND name = ? AND parquet = ?", (entry.kind, name, listed)
    ).fetchone():
        return 0  # indexed already
    if con.execute("SELECT 1 FROM files WHERE kind = ? AND name = ?", (entry.kind, name)).fetchone():
        segment = volume / entry.segment
        if segment.is_file() and sha256_file(segment) == entry.segment_sha256:
            return 0  # indexed as JSONL: its compaction moves the row (LineageIndex.mark_compacted)
    import pyarrow.parquet as pq

    found: list[tuple[str, int]] = []
    for f in entry.files:
        try:
            table = pq.read_table(volume / f.path, columns=["request_id", "source_line"])
        except FileNotFoundError:
            continue  # removed by retention
        found += zip(table.column("request_id").to_pylist(), table.column("source_line").to_pylist(), strict=True)
    # A new file id, never one a `files` row had (AUTOINCREMENT never reuses one).
    fid = con.execute(
        "INSERT INTO files (kind, name, size, lines, head) VALUES (?, ?, 0, 0, x'')", (entry.kind, f"#{name}")
    ).lastrowid
    con.execute("DELETE FROM files WHERE id = ?", (fid,))
    con.execute(
        "INSERT INTO compacted VALUES (?, ?, ?, x'', ?)",
        (fid, entry.kind, name, json.dumps([f.path for f in entry.files])),
    )
    con.executemany("INSERT OR IGNORE INTO records VALUES (?, ?, ?, 0, ?)", [(r, fid, n, n) for r, n in found])
    return len(found)
