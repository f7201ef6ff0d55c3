"""deployment_log.csv: one row per start, swap, failed swap, promote and rollback; "what was serving at T".

Columns are `shared.schemas.DEPLOYMENT_LOG_COLUMNS`. Rows are appended under an exclusive lock on the
file, the header is written once by whoever finds the file empty, so several replicas and the
promote/rollback command can write at the same time without interleaving.

Events:
  start        an instance loaded its first model (it serves `version` from this time)
  swap         an instance switched from `previous_version` to `version`
  swap_failed  an instance could not load `version` and keeps serving `previous_version` (detail: why)
  promote      the pin in config.yaml was set to `version` (by `promote vN` or the retrain worker)
  rollback     the pin was set back to `version` by `rollback`
Only start and swap change what an instance serves; promote and rollback record the intent.

The log is evidence (rollback and lineage answer from it), so `read_rows` refuses a damaged row, naming
its line and what is wrong, rather than skip it; a row torn by a crash is closed with a newline by the
next writer, so the rows after it stay whole and the torn one is reported by its line.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from shared.atomic import end_partial_line, write_all
from shared.errors import ClockworkError, DataValidationError
from shared.paths import Paths, check_model_version
from shared.schemas import DEPLOYMENT_LOG_COLUMNS, parse_utc, utc_now

SERVING_EVENTS = frozenset({"start", "swap"})
# config_rejected: an edit of config.yaml the running service refused (e.g. a pin that is no version name);
# its version is the one that stays served.
EVENTS = frozenset({"start", "swap", "swap_failed", "config_rejected", "promote", "rollback"})


def _row_bytes(row: dict) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row.get(c, "") for c in DEPLOYMENT_LOG_COLUMNS])
    return buf.getvalue().encode("utf-8")


def _one_line(value: object) -> str:
    return " ".join(str(value if value is not None else "").split())


def append_event(
    paths: Paths,
    *,
    event: str,
    version: str,
    previous_version: str | None = None,
    metadata: dict | None = None,
    instance_id: str,
    detail: str = "",
    time: str | None = None,
) -> dict:
    """Append one row (header first if the file is new or empty) and return it.

    `metadata` is the model's metadata.json (sha256, data version and git commit come from it).
    """
    if event not in EVENTS:
        raise ValueError(f"unknown deployment event {event!r}; expected one of {sorted(EVENTS)}")
    md = metadata or {}
    row = {
        "time": time or utc_now(),
        "event": event,
        "version": version or "",
        "previous_version": previous_version or "",
        "onnx_sha256": md.get("onnx_sha256", ""),
        "data_version": md.get("data_version", ""),
        "git_commit": (md.get("git") or {}).get("commit", ""),
        "instance_id": instance_id,
        "detail": detail,
    }
    row = {k: _one_line(v) for k, v in row.items()}
    path = paths.deployment_log
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            data = _row_bytes(row)
            if os.fstat(fd).st_size == 0:
                data = _row_bytes(dict(zip(DEPLOYMENT_LOG_COLUMNS, DEPLOYMENT_LOG_COLUMNS, strict=False))) + data
            else:
                end_partial_line(fd, path)  # a row torn by a crash: end it, keep this one whole
            write_all(fd, data)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return row


def read_rows(paths: Paths) -> list[dict]:
    """Every complete row, oldest first; [] when there is no log yet.

    DataValidationError, naming the file, the line and the reason, for a header other than
    DEPLOYMENT_LOG_COLUMNS or a row with the wrong number of fields, an unknown event, a time that is not
    ISO 8601 or an invalid version name.
    """
    path = paths.deployment_log
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    if not data.endswith(b"\n"):  # a row being written: ignore the partial tail
        data = data[: data.rfind(b"\n") + 1]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataValidationError(f"{path}:{line}: not UTF-8 text") from e
    reader = csv.reader(io.StringIO(text))
    rows = []
    header_seen = False
    try:
        for fields in reader:
            if not fields:
                continue
            if not header_seen:
                header_seen = True
                if fields != DEPLOYMENT_LOG_COLUMNS:
                    raise DataValidationError(
                        f"{path}:{reader.line_num}: header {','.join(fields)[:200]!r} is not the "
                        f"deployment log header {','.join(DEPLOYMENT_LOG_COLUMNS)!r}"
                    )
                continue
            rows.append(_check_row(fields, where=f"{path}:{reader.line_num}"))
    except csv.Error as e:
        raise DataValidationError(f"{path}:{reader.line_num}: not a CSV row: {e}") from e
    return rows


def _check_row(fields: list[str], *, where: str) -> dict:
    if len(fields) != len(DEPLOYMENT_LOG_COLUMNS):
        raise DataValidationError(
            f"{where}: {len(fields)} field(s), expected {len(DEPLOYMENT_LOG_COLUMNS)} "
            f"({','.join(DEPLOYMENT_LOG_COLUMNS)}): {','.join(fields)[:120]!r}"
        )
    row = dict(zip(DEPLOYMENT_LOG_COLUMNS, fields, strict=False))
    if row["event"] not in EVENTS:
        raise DataValidationError(f"{where}: event {row['event'][:60]!r} is not one of {', '.join(sorted(EVENTS))}")
    try:
        parse_utc(row["time"])
    except ValueError:
        raise DataValidationError(f"{where}: time {row['time'][:60]!r} is not an ISO 8601 time") from None
    for key in ("version", "previous_version"):
        if row[key] or key == "version":
            try:
                check_model_version(row[key])
            except ClockworkError as e:
                raise DataValidationError(f"{where}: {key}: {e}") from None
    return row


def serving_at(paths: Paths, when: str | datetime, *, instance_id: str | None = None) -> dict | None:
    """The start/swap row in force at `when` (the last one at or before it), or None if nothing served yet.

    `instance_id` restricts the answer to one replica; without it, the latest change by any instance.
    `when` is a datetime (naive means UTC) or an ISO 8601 string such as 2026-01-02T03:04:05Z.
    """
    t = parse_utc(when)
    found = None
    for row in read_rows(paths):
        if row["event"] not in SERVING_EVENTS:
            continue
        if instance_id is not None and row["instance_id"] != instance_id:
            continue
        if parse_utc(row["time"]) <= t:
            found = row
    return found


def rollback_target(rows: Iterable[dict], current: str) -> str | None:
    """The version to roll back to from `current`: the one that served before it (None if none did).

    History is a stack: start/swap/promote push a version, rollback pops back to its target, so two
    rollbacks in a row go back two versions (v1 -> v2 -> v3, rollback -> v2, rollback -> v1).
    """
    stack: list[str] = []
    for row in rows:
        event, version = row.get("event"), row.get("version")
        if not version:
            continue
        if event in ("start", "swap", "promote"):
            if not stack or stack[-1] != version:
                stack.append(version)
        elif event == "rollback":
            while stack and stack[-1] != version:
                stack.pop()
            if not stack:
                stack.append(version)
    while stack and stack[-1] == current:
        stack.pop()
    return stack[-1] if stack else None
