"""Nothing is written half: atomic file writes and locked appends.

atomic_write_*: temp file in the same folder, fsync, rename, fsync of the folder.
write_all: every byte of a buffer reaches the file (a short write, from a full disk or a signal, is
finished or raises), the one loop every appender uses.
append_whole: the same for a file's one writer that must never leave part of a record: a write that stops
part-way is undone (truncated back) before the error is raised.
append_bytes / append_line: an exclusive flock around writing whole lines, then fsync, so concurrent
writers never interleave or lose a line.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1 << 20
FILE_MODE = 0o644


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """fsync a folder (its entries) or a file already written and closed (its bytes)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file owner-only; volume files are read by other services and people.
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def lock_path_of(path: str | os.PathLike) -> Path:
    """The lock file that guards `path`: `<path>.lock`."""
    return Path(f"{path}.lock")


@contextmanager
def locked(path: str | os.PathLike, *, blocking: bool = True) -> Iterator[None]:
    """An exclusive advisory lock on `<path>.lock` (for read-modify-write of shared files).

    `blocking=False` raises BlockingIOError at once when another process holds it (one owner per volume).
    """
    lock_path = lock_path_of(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lf:
        fcntl.flock(lf.fileno(), fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(lf.fileno(), fcntl.LOCK_UN)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of `data` to `fd`: a short write (disk full, a signal) is continued, never dropped.

    A write that cannot go on raises OSError (e.g. ENOSPC); what was written before stays, so a caller
    that must never leave a torn line closes it before its next append (see `end_partial_line`).
    """
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - os.write raises rather than returning 0 on regular files
            raise OSError(f"write returned {n} with {len(view)} bytes left")
        view = view[n:]


class TornAppend(OSError):
    """An append that failed part-way and could not be undone: `size` is the length the file must be cut back
    to before anything else is appended (None if even that could not be read)."""

    def __init__(self, cause: OSError, size: int | None) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.size = size


def append_whole(fd: int, data: bytes | memoryview) -> None:
    """Append `data` to `fd` (opened O_APPEND, this process its only writer) whole, or not at all.

    If a write stops part-way (ENOSPC, EIO, ...), the bytes this call wrote are truncated away and the
    OSError is raised: the file is exactly as before, so no torn line and no line of a refused record stays,
    and the next append starts on a line of its own. The success path costs what `write_all` costs. If the
    undo fails too, `TornAppend` is raised instead (its `size`: where the file must end, see `cut_back`).
    """
    view = memoryview(data)
    done = 0
    try:
        while view:
            n = os.write(fd, view)
            if n <= 0:  # pragma: no cover - os.write raises rather than returning 0 on regular files
                raise OSError(f"write returned {n} with {len(view)} bytes left")
            done += n
            view = view[n:]
    except OSError as e:
        if not done:
            raise
        size = None
        try:
            size = os.fstat(fd).st_size - done
            os.ftruncate(fd, size)
        except OSError:
            raise TornAppend(e, size) from e
        raise


def cut_back(fd: int, path: str | os.PathLike, size: int | None) -> None:
    """Mend the tail a `TornAppend` left: truncate to `size`, or (size unknown) end the torn line with a newline."""
    if size is not None:
        os.ftruncate(fd, size)
    else:
        end_partial_line(fd, path)


def end_partial_line(fd: int, path: str | os.PathLike) -> bool:
    """If `path` (open for append on `fd`, lock held) ends without a newline, write one. True if it did.

    A writer killed mid-line leaves a torn tail; closing it keeps the next record on a line of its own.
    """
    size = os.fstat(fd).st_size
    if not size:
        return False
    with open(path, "rb") as f:
        f.seek(size - 1)
        last = f.read(1)
    if last != b"\n":
        write_all(fd, b"\n")
        return True
    return False


def append_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Append whole lines (`data` ends with a newline) under an exclusive flock on the file, then fsync."""
    if data and not data.endswith(b"\n"):
        raise ValueError("append_bytes takes whole lines: data must end with a newline")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def append_line(path: str | os.PathLike, line: str, *, fsync: bool = True) -> None:
    """Append one line (no newline characters inside) under an exclusive lock on the file itself."""
    if "\n" in line:
        raise ValueError("append_line takes one line without newline characters")
    append_bytes(path, (line + "\n").encode("utf-8"), fsync=fsync)
