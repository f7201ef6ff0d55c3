"""Incremental reading of append-only JSONL logs: per-file byte offsets, complete lines only.

A line counts only once it ends in "\\n": a writer's half-written last line is left for the next read.
The caller owns the offsets (the monitor keeps them in its store) and commits them only after it
has stored what it derived from the lines, so a crash re-reads, never skips.
Cost follows the new bytes: each read starts at the saved offset, and stops at an optional limit per file
(the size the file had when the monitor's cycle began: lines appended since wait for the next cycle).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from shared.paths import LOG_SUFFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """Complete lines read from one file, and the offset just after the last of them."""

    key: str  # "<kind>/<file name>", the key of the offset in the state
    path: Path
    start: int
    end: int
    data: (
        bytes | None
    )  # the lines joined by their newlines, without the last one (file bytes start..end-1); None: no line

    @cached_property
    def lines(self) -> list[bytes]:
        """The lines, split at first use (a reader that needs only the first few splits only those: `data`)."""
        return [] if self.data is None else self.data.split(b"\n")


class LineAt(NamedTuple):
    """Where a line is: its chunk, its index in the chunk and the byte offset of its start in the file."""

    chunk: Chunk
    line_index: int
    offset: int


def read_complete_lines(
    path: Path, offset: int, *, max_bytes: int, limit: int | None = None
) -> tuple[list[bytes], int]:
    """Complete lines from `offset` (at most about `max_bytes`, always at least one whole line if there is
    one, never beyond byte `limit`) and the new offset. A file shorter than `offset` was replaced: read it
    from the start."""
    data, end = read_complete(path, offset, max_bytes=max_bytes, limit=limit)
    return ([] if data is None else data.split(b"\n")), end


def read_complete(path: Path, offset: int, *, max_bytes: int, limit: int | None = None) -> tuple[bytes | None, int]:
    """`read_complete_lines`, the lines joined by their newlines (without the last one; None: no line)."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return None, offset
    if limit is not None:
        size = min(size, limit)
    if size < offset:
        log.warning(
            "%s is shorter (%d bytes) than the saved offset %d: the file was replaced; reading it from the start",
            path,
            size,
            offset,
        )
        offset = 0
    if size == offset:
        return None, offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(min(max_bytes, size - offset))
        while b"\n" not in data and offset + len(data) < size:
            # One line longer than max_bytes: keep reading until it ends (or the file does).
            more = f.read(max_bytes)
            if not more:
                break
            data += more
    cut = data.rfind(b"\n")
    if cut < 0:
        return None, offset
    # Lines end at "\n" only: each line then spans exactly len(line) + 1 bytes of the file.
    return data[:cut], offset + cut + 1


class LogDir:
    """The JSONL files of one log folder (one file per writer), read from saved offsets."""

    def __init__(self, directory: Path, kind: str) -> None:
        self.directory = directory
        self.kind = kind

    def files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.is_file() and p.name.endswith(LOG_SUFFIX))

    def key(self, path: Path) -> str:
        return f"{self.kind}/{path.name}"

    def sizes(self) -> dict[str, int]:
        """The size of every file now, by key (a cycle's reading limits)."""
        out = {}
        for path in self.files():
            try:
                out[self.key(path)] = path.stat().st_size
            except FileNotFoundError:
                continue
        return out

    def read(self, offsets: dict[str, int], *, max_bytes: int, limits: dict[str, int] | None = None) -> list[Chunk]:
        """New complete lines of every file, at most about `max_bytes` per file; with `limits`, only the files
        named there and none beyond its limit."""
        chunks = []
        for path in self.files():
            key = self.key(path)
            limit = None if limits is None else limits.get(key)
            if limits is not None and limit is None:
                continue  # a file that appeared during the cycle: the next cycle reads it
            start = offsets.get(key, 0)
            try:
                size = path.stat().st_size if limit is None else min(path.stat().st_size, limit)
                if size < start:
                    log.warning(
                        "%s is shorter than the saved offset %d: the file was replaced; reading it from the start",
                        path,
                        start,
                    )
                    start = 0
            except FileNotFoundError:
                continue
            data, end = read_complete(path, start, max_bytes=max_bytes, limit=limit)
            if data is not None or end != start:
                chunks.append(Chunk(key=key, path=path, start=start, end=end, data=data))
        return chunks

    def pending_bytes(self, offsets: dict[str, int]) -> int:
        """Bytes not yet read (including a trailing partial line)."""
        total = 0
        for path in self.files():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            off = offsets.get(self.key(path), 0)
            total += size - off if size >= off else size
        return total


def file_size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def count_newlines(path: Path, end: int) -> int:
    """Newlines in the first `end` bytes of a file (read in 1 MiB blocks)."""
    n = 0
    with open(path, "rb") as f:
        while end > 0:
            block = f.read(min(end, 1 << 20))
            if not block:
                break
            n += block.count(b"\n")
            end -= len(block)
    return n
