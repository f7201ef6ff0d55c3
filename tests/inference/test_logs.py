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
    assert [set(json.loads(line)) for line in raw] == [set(PredictionRecord.model_fields)] * 3
    assert [(r.request_id, r.probability, r.label) for r in records] == [("a-1", 0.25, 0), ("a-2", 0.75, 1),
                                                                         ("a-3", 0.5, 1)]
    assert records[1].inputs == second and records[0].model_version == "v3" and records[0].threshold == 0.4
    assert all(line == r.to_line() for line, r in zip(raw, records, strict=True))  # same bytes as the schema's


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
