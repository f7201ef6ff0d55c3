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
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from shared.atomic import end_partial_line, write_all
from shared.errors import ClockworkError

INSTANCE_ENV = "CLOCKWORK_INSTANCE_ID"
INSTANCE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
LINE_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE


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


class RecordLog:
    """An append-only JSONL file this process alone writes (enforced with a flock)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ClockworkError(
                f"{self.path} is held by another running instance: give each replica its own "
                f"instance id ({INSTANCE_ENV})"
            ) from None
        self._terminate_partial_line()

    def _terminate_partial_line(self) -> None:
        """A previous process that died mid-write may have left a line without its newline: end it."""
        end_partial_line(self.fd, self.path)

    def write(self, data: bytes) -> None:
        """Append whole lines (data ends with a newline); a short write is finished (shared.atomic.write_all)."""
        write_all(self.fd, data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1


class PredictionLog(RecordLog):
    """This instance's prediction log (`Paths.prediction_log(instance_id)`), lines of `PredictionRecord`."""

    def append(
        self, time: str, model_version: str, threshold: float, inputs: list[dict], results: list[tuple[str, float, int]]
    ) -> None:
        """One record per row, all in one write: `inputs[i]` (snake_case readings) and `results[i]` =
        (request_id, probability, label), predicted by `model_version` at `time`."""
        dumps = orjson.dumps
        lines = [
            dumps(
                {
                    "time": time,
                    "request_id": request_id,
                    "model_version": model_version,
                    "inputs": values,
                    "probability": probability,
                    "label": label,
                    "threshold": threshold,
                },
                option=LINE_OPTS,
            )
            for values, (request_id, probability, label) in zip(inputs, results, strict=True)
        ]
        self.write(lines[0] if len(lines) == 1 else b"".join(lines))


class FeedbackLog(RecordLog):
    """This instance's feedback log (`Paths.feedback_log(instance_id)`), lines of `FeedbackRecord`."""

    def append(self, time: str, request_id: str, label: int) -> None:
        self.write(orjson.dumps({"time": time, "request_id": request_id, "label": label}, option=LINE_OPTS))
