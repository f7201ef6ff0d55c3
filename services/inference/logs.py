"""Prediction and feedback logs: one JSONL file per instance, one line per record, cheap on the hot path.

Each instance owns `<prediction_log_dir>/<instance_id>.jsonl` and `<feedback_log_dir>/<instance_id>.jsonl`:
the file is opened once in append mode and held with an exclusive, non-blocking flock, so a second
process with the same instance id fails at start instead of interleaving lines. A record is one
`os.write` of one whole line (the monitor reads lines that end in a newline), written before the
response returns; no fsync per record (the page cache survives a crash of the service; a lost
machine loses the last seconds, which the monitor tolerates).
`PredictionLog.append` and `FeedbackLog.append` are the one place each kind of line is built: the same
fields as `shared.schemas.PredictionRecord.to_line()` / `FeedbackRecord.to_line()` (sorted keys, compact
JSON), built with orjson because the pydantic round trip costs more than the model (tests/inference/test_logs.py
holds them to the schema).

An append lands whole or not at all (`shared.atomic.append_whole`): when the disk is full or the file
system fails, the bytes of the failed append are truncated away (not closed with a newline: they belong to
records whose clients are told 503, and a batch's partial write can hold whole lines of them), and
`LogUnavailable` (a 503 refusal naming the cause, e.g. "prediction log not writable: No space left on
device") is raised. The log then reports `error` (what /ready shows) until an append or a `probe` (a
small file written and removed beside the log) succeeds. A tail that could not be undone is mended before
the next append, or every append is refused: nothing is ever appended to a torn line.

Segments: a log is written in segments (`shared.paths.segment_name`: `<instance id>.jsonl`, then
`<instance id>@000001.jsonl`, ...). Once the open segment holds `logs.rotate_bytes` or more, or (with
`logs.rotate_daily`) a record of a new UTC day comes, the next record opens the next segment under a NEW name and the
old one is closed for good (it never grows again: readers keep reading every file by name, to its end). A process
that starts continues its instance's newest segment, unless that one is from an earlier UTC day (with
rotate_daily): then it opens the next one without touching it. Closed segments are what the monitor compacts
into Parquet (services/monitor/compact.py).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from services.inference.schemas import BadRequest
from shared.atomic import TornAppend, append_whole, cut_back, end_partial_line, write_all
from shared.errors import ClockworkError
from shared.paths import parse_segment, segment_name

log = logging.getLogger(__name__)

INSTANCE_ENV = "CLOCKWORK_INSTANCE_ID"
INSTANCE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
LINE_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
PROBE_BYTES = 16384  # what a probe must be able to write before a failed log counts as writable again


def default_instance_id() -> str:
    """$CLOCKWORK_INSTANCE_ID, else <hostname>-<pid> (a container keeps its hostname across restarts)."""
    value = os.environ.get(INSTANCE_ENV) or f"{socket.gethostname()}-{os.getpid()}"
    return check_instance_id(re.sub(r"[^A-Za-z0-9_.-]", "_", value)[:100])


def check_instance_id(value: str) -> str:
    if not isinstance(value, str) or not INSTANCE_RE.match(value):
        raise ClockworkError(f"invalid instance id {value!r}: expected 1-100 of [A-Za-z0-9_.-]")
    return value


class UtcClock:
    """`shared.schemas.utc_now()` format (2026-01-02T03:04:05.123456Z) in a fraction of its cost."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((t - second) * 1_000_000):06d}Z"


class RequestIds:
    """Unique request ids without a syscall: a random 64-bit prefix per process and a counter."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return f"{self.prefix}-{self.n:07x}"


class LogUnavailable(BadRequest):
    """A record the log could not take (disk full, I/O error): nothing of it is in the file; answered 503."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, detail)


def segments(base: Path) -> list[tuple[int, Path]]:
    """(number, path) of the segments of the log whose first segment is `base` (`<instance id>.jsonl`), in order."""
    instance = base.name.removesuffix(".jsonl")
    out = []
    if base.parent.is_dir():
        for p in base.parent.iterdir():
            parsed = parse_segment(p.name)
            if parsed and parsed[0] == instance and p.name.endswith(".jsonl"):
                out.append((parsed[1], p))
    return sorted(out)


def utc_day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def segment_to_open(base: Path, *, rotate_daily: bool) -> tuple[int, Path, str | None]:
    """(number, path, UTC day of its records or None) of the segment a process starting now appends to: the newest
    one, or (rotate_daily) the next one if the newest was last written on an earlier UTC day."""
    found = segments(base)
    if not found:
        return 0, base, None
    number, path = found[-1]
    st = path.stat()
    if not st.st_size:
        return number, path, None
    day = utc_day(st.st_mtime)
    if rotate_daily and day < utc_day(time.time()):
        # yesterday's segment stays closed: this process starts the next one
        return number + 1, base.with_name(segment_name(base.name.removesuffix(".jsonl"), number + 1)), None
    return number, path, day


def check_not_held(path: str | os.PathLike, *, rotate_daily: bool = False) -> None:
    """Before a server starts: ClockworkError (one line) if another running instance holds the segment a process
    would append to (`segment_to_open` of the log whose first segment is `path`).

    The lock is taken and released at once; RecordLog takes it for good when the service starts.
    """
    p = segment_to_open(Path(path), rotate_daily=rotate_daily)[1]
    if not p.exists():
        return
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ClockworkError(
            f"{p} is held by another running instance: give each replica its own instance id ({INSTANCE_ENV})"
        ) from None
    finally:
        os.close(fd)  # releases the lock if it was taken


class RecordLog:
    """An append-only JSONL file this process alone writes (enforced with a flock)."""

    what = "log"  # how refusals and /ready name it

    def __init__(self, path: str | os.PathLike, *, rotate_bytes: int | None = None, rotate_daily: bool = False) -> None:
        """`path`: the log's first segment (`<instance id>.jsonl`); the newest segment is opened (see the module)."""
        self.base = Path(path)
        self.base.parent.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        self.number, self.path, self.day = segment_to_open(self.base, rotate_daily=rotate_daily)
        self.fd = self._open(self.path)
        self._terminate_partial_line()
        self.size = os.fstat(self.fd).st_size
        self.error: str | None = None  # why appends fail now (None: writable), shown by /ready
        self.failed_at = 0.0  # time.time() of the first failure of the current outage
        self.failures = 0  # appends that failed (each undone), for /metrics
        self.refused = 0  # records in them, whose clients were answered 503
        self.torn = False  # a failed append could not be undone: mend the tail before the next append
        self.torn_size: int | None = None  # where the file must end then (None: unknown, end the line)

    @staticmethod
    def _open(path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ClockworkError(
                f"{path} is held by another running instance: give each replica its own instance id ({INSTANCE_ENV})"
            ) from None
        return fd

    def _due(self, day: str | None) -> bool:
        """Does the next record (of UTC `day`) belong in a new segment?"""
        if not self.size:
            return False
        if self.rotate_bytes is not None and self.size >= self.rotate_bytes:
            return True
        return self.rotate_daily and day is not None and self.day is not None and day != self.day

    def rotate(self) -> None:
        """Close the open segment for good and open the next one (a new name). If the new one cannot be opened the
        old one stays open (a record is never refused for a rotation) and the next record tries again."""
        number = self.number + 1
        path = self.base.with_name(segment_name(self.base.name.removesuffix(".jsonl"), number))
        try:
            fd = self._open(path)
        except (OSError, ClockworkError) as e:
            log.warning("%s: cannot open the next segment %s (%s); appending to the open one", self.path, path, e)
            return
        old, self.fd, self.path, self.number, self.size, self.day = self.fd, fd, path, number, 0, None
        os.close(old)  # releases its lock: the segment is closed
        log.info("%s: segment %d opened (the previous one is closed)", path, number)

    def _terminate_partial_line(self) -> None:
        """A previous process that died mid-write may have left a line without its newline: end it.

        Ended, not cut: after a crash nobody knows which records of that write were answered, and the torn
        bytes stay as evidence (the monitor counts such a line as malformed)."""
        end_partial_line(self.fd, self.path)

    def write(self, data: bytes, records: int = 1, day: str | None = None) -> None:
        """Append whole lines (`records` of them, of UTC `day`) whole or not at all; LogUnavailable (503) if not."""
        if self.torn:
            self._mend(records)
        if self._due(day):
            self.rotate()
        try:
            append_whole(self.fd, data)
        except OSError as e:
            self._failed(e, records)
        self.size += len(data)
        self.day = day or self.day
        if self.error is not None:
            self.recovered("an append succeeded")

    def _failed(self, e: OSError, records: int) -> None:
        self.failures += 1
        self.refused += records
        if isinstance(e, TornAppend):
            self.torn, self.torn_size = True, e.size
        if self.error is None:
            self.error = f"{self.what} not writable: {e.strerror or e}"
            self.failed_at = time.time()
            log.error("%s: %s (%s); answering 503 until it is writable again", self.path, self.error, type(e).__name__)
        raise LogUnavailable(self.error) from e

    def _mend(self, records: int) -> None:
        try:
            cut_back(self.fd, self.path, self.torn_size)
        except OSError as e:
            self._failed(e, records)
        log.warning("%s: mended the tail a failed append left (cut back to %s)", self.path, self.torn_size)
        self.torn = False
        self.size = os.fstat(self.fd).st_size

    def recovered(self, how: str) -> None:
        """Writable again (`how`: what showed it); called on the event loop thread."""
        if self.error is not None:
            log.warning("%s: writable again (%s) after %.1fs", self.path, how, time.time() - self.failed_at)
            self.error = None

    def probe(self, size: int = PROBE_BYTES) -> bool:
        """Can this log's file system take `size` bytes? A file beside the log is written and removed (never
        the log itself: a reader could see the bytes). Blocking; True if it could. Does not change `error`."""
        probe = self.path.with_name(f".{self.path.name}.probe")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                write_all(fd, bytes(size))
            finally:
                os.close(fd)
                probe.unlink()
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1


# The live shadow's answers for one batch: (its version, its threshold, [(probability, label)] per row).
Shadowed = tuple[str, float, list[tuple[float, int]]]


class PredictionLog(RecordLog):
    """This instance's prediction log (`Paths.prediction_log(instance_id)`), lines of `PredictionRecord`."""

    what = "prediction log"

    def append(
        self,
        time: str,
        model_version: str,
        threshold: float,
        inputs: list[dict],
        results: list[tuple[str, float, int]],
        shadow: Shadowed | None = None,
    ) -> None:
        """One record per row, all in one write: `inputs[i]` (snake_case readings) and `results[i]` =
        (request_id, probability, label), predicted by `model_version` at `time`; `shadow` (the live shadow's
        version, threshold and (probability, label) per row), when given, goes into each line as `shadow`."""
        dumps = orjson.dumps
        records = [
            {
                "time": time,
                "request_id": request_id,
                "model_version": model_version,
                "inputs": values,
                "probability": probability,
                "label": label,
                "threshold": threshold,
            }
            for values, (request_id, probability, label) in zip(inputs, results, strict=True)
        ]
        if shadow is not None:
            version, at, scores = shadow
            for record, (p, lb) in zip(records, scores, strict=True):
                record["shadow"] = {"model_version": version, "probability": p, "label": lb, "threshold": at}
        lines = [dumps(record, option=LINE_OPTS) for record in records]
        if len(lines) == 1:
            self.write(lines[0], 1, time[:10])
        else:
            self.write(b"".join(lines), len(lines), time[:10])


class FeedbackLog(RecordLog):
    """This instance's feedback log (`Paths.feedback_log(instance_id)`), lines of `FeedbackRecord`."""

    what = "feedback log"

    def append(self, time: str, request_id: str, label: int) -> None:
        self.write(
            orjson.dumps({"time": time, "request_id": request_id, "label": label}, option=LINE_OPTS), 1, time[:10]
        )

    def append_many(self, time: str, labels: list[tuple[str, int]]) -> None:
        """One line per (request_id, label), all in one write (whole or not at all), at `time`."""
        dumps = orjson.dumps
        data = b"".join(dumps({"time": time, "request_id": r, "label": lb}, option=LINE_OPTS) for r, lb in labels)
        self.write(data, len(labels), time[:10])
