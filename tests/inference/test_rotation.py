"""Log segments: a log rotates to a NEW file name at its size bound or a new UTC day, and a closed segment never
grows again; a restart continues the newest segment, or opens the next when that one is from an earlier day."""
from __future__ import annotations

import fcntl
import os
import time

import pytest

from services.inference.logs import FeedbackLog, PredictionLog, check_not_held, segments
from shared.errors import ClockworkError
from shared.paths import instance_of, parse_segment, segment_name
from shared.schemas import PredictionRecord
from tests.inference.test_logs import INPUTS

DAY1, DAY2 = "2026-03-01T23:59:59.000001Z", "2026-03-02T00:00:00.000001Z"


def records(tmp_path) -> list[str]:
    """Request ids of every line of every segment of p, in segment order."""
    return [PredictionRecord.model_validate_json(line).request_id
            for _, path in segments(tmp_path / "p.jsonl") for line in path.read_bytes().splitlines()]


def test_segment_names_keep_the_instance_id():
    assert segment_name("web-1.a", 0) == "web-1.a.jsonl" and segment_name("web-1.a", 12) == "web-1.a@000012.jsonl"
    assert parse_segment("web-1.a@000012.jsonl") == ("web-1.a", 12) and parse_segment("web-1.a.jsonl") == ("web-1.a", 0)
    assert parse_segment(".p.jsonl.probe") is None and parse_segment("x@abc.jsonl") is None
    assert instance_of("logs/parquet/predictions/day=2026-01-01/model_version=v1/part-web-1.a@000002~0123abcd.parquet") \
        == "web-1.a"


def test_a_log_rotates_at_its_size_bound_and_closed_segments_stop_growing(tmp_path):
    log = PredictionLog(tmp_path / "p.jsonl", rotate_bytes=600)
    for i in range(12):
        log.append(DAY1, "v1", 0.5, [INPUTS], [(f"r-{i}", 0.1, 0)])
    names = [p.name for _, p in segments(tmp_path / "p.jsonl")]
    assert len(names) >= 3 and names[:2] == ["p.jsonl", "p@000001.jsonl"]
    closed = {p: p.stat().st_size for _, p in segments(tmp_path / "p.jsonl")[:-1]}
    assert all(600 <= size < 600 + 400 for size in closed.values())  # closed at the first record over the bound
    log.append(DAY1, "v1", 0.5, [INPUTS], [("r-last", 0.1, 0)])
    assert {p: p.stat().st_size for p in closed} == closed  # never appended to again
    for path in closed:  # a closed segment is not held: the compactor can take it
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    log.close()
    assert records(tmp_path) == [f"r-{i}" for i in range(12)] + ["r-last"]  # each record once, in order


def test_a_new_utc_day_opens_a_new_segment_and_a_restart_continues_the_newest(tmp_path):
    log = PredictionLog(tmp_path / "p.jsonl", rotate_bytes=1 << 30, rotate_daily=True)
    log.append(DAY1, "v1", 0.5, [INPUTS], [("a", 0.1, 0)])
    log.append(DAY1, "v1", 0.5, [INPUTS], [("b", 0.1, 0)])
    log.append(DAY2, "v1", 0.5, [INPUTS], [("c", 0.1, 0)])
    log.close()
    assert [p.name for _, p in segments(tmp_path / "p.jsonl")] == ["p.jsonl", "p@000001.jsonl"]
    again = PredictionLog(tmp_path / "p.jsonl", rotate_bytes=1 << 30, rotate_daily=True)  # newest is today's
    assert again.path.name == "p@000001.jsonl"
    again.append(time.strftime("%Y-%m-%dT%H:%M:%S.000001Z", time.gmtime()), "v1", 0.5, [INPUTS], [("d", 0.1, 0)])
    again.close()
    assert records(tmp_path) == ["a", "b", "c", "d"]


def test_a_restart_after_the_day_changed_leaves_the_old_segment_closed(tmp_path):
    log = FeedbackLog(tmp_path / "f.jsonl", rotate_daily=True)
    log.append(DAY1, "a", 1)
    log.close()
    old = tmp_path / "f.jsonl"
    yesterday = time.time() - 86400
    os.utime(old, (yesterday, yesterday))
    size = old.stat().st_size
    fd = os.open(old, os.O_RDONLY)  # the monitor's compactor holds yesterday's segment: a start is not refused
    fcntl.flock(fd, fcntl.LOCK_EX)
    check_not_held(old, rotate_daily=True)
    with pytest.raises(ClockworkError, match="another running instance"):
        check_not_held(old, rotate_daily=False)
    log = FeedbackLog(tmp_path / "f.jsonl", rotate_daily=True)
    os.close(fd)
    assert log.path.name == "f@000001.jsonl"
    log.append(DAY2, "b", 0)
    log.close()
    assert old.stat().st_size == size


def test_a_second_writer_of_the_newest_segment_is_refused(tmp_path):
    first = PredictionLog(tmp_path / "p.jsonl", rotate_bytes=10)
    first.append(DAY1, "v1", 0.5, [INPUTS], [("a", 0.1, 0)])
    first.append(DAY1, "v1", 0.5, [INPUTS], [("b", 0.1, 0)])  # now in p@000001.jsonl
    with pytest.raises(ClockworkError, match="p@000001.jsonl is held by another running instance"):
        check_not_held(tmp_path / "p.jsonl")
    with pytest.raises(ClockworkError, match="another running instance"):
        PredictionLog(tmp_path / "p.jsonl", rotate_bytes=10)
    first.close()
