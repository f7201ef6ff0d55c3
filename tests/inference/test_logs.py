"""The one writer of each log line kind: what it writes is exactly a shared.schemas record."""
from __future__ import annotations

import json

import pytest

from services.inference.logs import FeedbackLog, PredictionLog, UtcClock
from shared.errors import ClockworkError
from shared.schemas import FeedbackRecord, PredictionRecord

INPUTS = {"type": "M", "air_temperature_k": 298.1, "process_temperature_k": 308.6, "rotational_speed_rpm": 1551.0,
          "torque_nm": 42.8, "tool_wear_min": 0.0}


def test_prediction_lines_are_prediction_records(tmp_path):
    log = PredictionLog(tmp_path / "p.jsonl")
    now = UtcClock().now()
    second = dict(INPUTS, torque_nm=65.0)
    log.append(now, "v3", 0.4, [INPUTS, second], [("a-1", 0.25, 0), ("a-2", 0.75, 1)])
    log.append(now, "v3", 0.4, [INPUTS], [("a-3", 0.5, 1)])
    log.close()
    raw = (tmp_path / "p.jsonl").read_text().splitlines()
    records = [PredictionRecord.model_validate_json(line) for line in raw]
    assert [set(json.loads(line)) for line in raw] == [set(PredictionRecord.model_fields) - {"shadow"}] * 3
    assert [(r.request_id, r.probability, r.label) for r in records] == [("a-1", 0.25, 0), ("a-2", 0.75, 1),
                                                                         ("a-3", 0.5, 1)]
    assert records[1].inputs == second and records[0].model_version == "v3" and records[0].threshold == 0.4
    assert all(line == r.to_line() for line, r in zip(raw, records, strict=True))  # same bytes as the schema's


def test_shadowed_prediction_lines_are_prediction_records(tmp_path):
    log = PredictionLog(tmp_path / "p.jsonl")
    log.append("2026-01-02T03:04:05.000001Z", "v3", 0.4, [INPUTS, INPUTS], [("a-1", 0.25, 0), ("a-2", 0.75, 1)],
               ("v4", 0.3, [(0.5, 1), (0.125, 0)]))
    log.close()
    raw = (tmp_path / "p.jsonl").read_text().splitlines()
    records = [PredictionRecord.model_validate_json(line) for line in raw]
    assert all(line == r.to_line() for line, r in zip(raw, records, strict=True))  # same bytes as the schema's
    assert [(r.shadow.model_version, r.shadow.probability, r.shadow.label, r.shadow.threshold) for r in records] == [
        ("v4", 0.5, 1, 0.3), ("v4", 0.125, 0, 0.3)]
    assert [(r.model_version, r.probability, r.label, r.threshold) for r in records] == [
        ("v3", 0.25, 0, 0.4), ("v3", 0.75, 1, 0.4)]


def test_feedback_lines_are_feedback_records(tmp_path):
    log = FeedbackLog(tmp_path / "f.jsonl")
    log.append("2026-01-02T03:04:05.000001Z", "a-1", 1)
    log.close()
    raw = (tmp_path / "f.jsonl").read_text().splitlines()
    record = FeedbackRecord.model_validate_json(raw[0])
    assert set(json.loads(raw[0])) == set(FeedbackRecord.model_fields)
    assert (record.time, record.request_id, record.label) == ("2026-01-02T03:04:05.000001Z", "a-1", 1)
    assert raw[0] == record.to_line()


def test_rows_and_results_must_pair_up(tmp_path):
    log = PredictionLog(tmp_path / "p.jsonl")
    with pytest.raises(ValueError):
        log.append("t", "v1", 0.5, [INPUTS, INPUTS], [("a-1", 0.1, 0)])
    log.close()
    assert (tmp_path / "p.jsonl").read_text() == ""


def test_a_second_writer_is_refused_and_a_torn_line_is_ended(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"torn": ')
    first = PredictionLog(path)
    with pytest.raises(ClockworkError, match="another running instance"):
        PredictionLog(path)
    first.append("t", "v1", 0.5, [INPUTS], [("a-1", 0.1, 0)])
    first.close()
    lines = path.read_text().splitlines()
    assert lines[0] == '{"torn": ' and PredictionRecord.model_validate_json(lines[1]).request_id == "a-1"


class DiskFills:
    """os.write that lets `room` more bytes through, then fails with ENOSPC (a short write first, like a real
    full disk); `room=None` lets everything through again."""

    def __init__(self, monkeypatch, room: int | None) -> None:
        import os as real_os

        self.room = room
        self.real = real_os.write
        monkeypatch.setattr("shared.atomic.os.write", self.write)

    def write(self, fd, data):
        import errno

        if self.room is None:
            return self.real(fd, data)
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.real(fd, bytes(data[: self.room]))
        self.room -= n
        return n


def test_a_failed_append_leaves_nothing_is_a_503_and_the_log_recovers(tmp_path, monkeypatch):
    from services.inference.logs import LogUnavailable

    path = tmp_path / "p.jsonl"
    log = PredictionLog(path)
    log.append("t", "v1", 0.5, [INPUTS], [("a-1", 0.1, 0)])
    before = path.read_bytes()
    disk = DiskFills(monkeypatch, room=len(before) + 30)  # a whole line of the batch and part of the next
    with pytest.raises(LogUnavailable) as refused:
        log.append("t", "v1", 0.5, [INPUTS] * 3, [("b-1", 0.1, 0), ("b-2", 0.2, 0), ("b-3", 0.3, 0)])
    assert refused.value.status == 503
    assert refused.value.detail == "prediction log not writable: No space left on device"
    assert path.read_bytes() == before  # no torn line, and no whole line of a refused record
    assert (log.error, log.failures, log.refused) == (refused.value.detail, 1, 3)
    with pytest.raises(LogUnavailable):  # still full: refused again, still nothing written
        log.append("t", "v1", 0.5, [INPUTS], [("c-1", 0.1, 0)])
    assert path.read_bytes() == before and (log.failures, log.refused) == (2, 4)
    disk.room = None  # space is back: the next append lands and the log is writable again
    log.append("t", "v1", 0.5, [INPUTS], [("d-1", 0.1, 0)])
    log.close()
    assert log.error is None
    ids = [PredictionRecord.model_validate_json(line).request_id for line in path.read_text().splitlines()]
    assert ids == ["a-1", "d-1"]


def test_an_append_that_cannot_be_undone_is_mended_before_the_next(tmp_path, monkeypatch):
    from services.inference.logs import LogUnavailable

    path = tmp_path / "f.jsonl"
    log = FeedbackLog(path)
    log.append("t", "a-1", 1)
    before = path.read_bytes()
    disk = DiskFills(monkeypatch, room=10)

    def no_truncate(fd, size):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("shared.atomic.os.ftruncate", no_truncate)
    with pytest.raises(LogUnavailable, match="feedback log not writable: No space left on device"):
        log.append("t", "a-2", 0)
    assert log.torn and len(path.read_bytes()) == len(before) + 10  # the torn bytes are still there
    monkeypatch.undo()
    disk.room = None
    log.append("t", "a-3", 0)  # cut back first, then appended on a line of its own
    log.close()
    assert not log.torn and log.error is None
    assert [FeedbackRecord.model_validate_json(x).request_id for x in path.read_text().splitlines()] == ["a-1", "a-3"]


def test_a_probe_writes_beside_the_log_and_leaves_nothing(tmp_path):
    log = PredictionLog(tmp_path / "p.jsonl")
    assert log.probe() is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"] and (tmp_path / "p.jsonl").read_bytes() == b""
    (tmp_path / ".p.jsonl.probe").mkdir()  # a probe that cannot be written says so
    assert log.probe() is False
    log.close()
