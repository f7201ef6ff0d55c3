"""Incremental reading and exactly-once joining of predictions and late labels."""
from __future__ import annotations

import json

import pytest

from services.monitor.ingest import Ingestor
from services.monitor.reader import LogDir, read_complete_lines
from services.monitor.state import MonitorState, load_state, recover_labelled, save_state
from shared.labelled import columns, labelled_file, load_labelled
from tests.monitor.helpers import append, day2, prediction_lines, raw_columns_equal


def ingestor(paths, **kw) -> Ingestor:
    return Ingestor(paths=paths, dataset=paths.settings.dataset, window_size=500, drift_window=500, **kw)


def test_reader_returns_complete_lines_only_and_resumes_from_offset(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_bytes(b'{"a":1}\n{"a":2}\n{"a":')
    lines, off = read_complete_lines(f, 0, max_bytes=1 << 20)
    assert lines == [b'{"a":1}', b'{"a":2}'] and off == 16
    assert read_complete_lines(f, off, max_bytes=1 << 20) == ([], off)
    with open(f, "ab") as fh:
        fh.write(b'3}\n')
    assert read_complete_lines(f, off, max_bytes=1 << 20) == ([b'{"a":3}'], 24)


def test_reader_bounds_a_batch_but_never_splits_a_line(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"x" * 50 + b"\n" + b"y" * 10 + b"\n")
    lines, off = read_complete_lines(f, 0, max_bytes=8)  # a line longer than the batch is still read whole
    assert lines == [b"x" * 50] and off == 51
    lines, off = read_complete_lines(f, off, max_bytes=8)
    assert lines == [b"y" * 10] and off == 62


def test_reader_starts_over_when_a_file_was_replaced(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_bytes(b"1\n")
    assert read_complete_lines(f, 100, max_bytes=10) == ([b"1"], 2)
    d = LogDir(tmp_path, "predictions")
    assert [c.key for c in d.read({}, max_bytes=10)] == ["predictions/a.jsonl"]


def test_labels_join_once_whatever_the_order_and_duplicates_are_ignored(paths):
    df = day2(paths, "natural").iloc[:300]
    preds, fbs, ids = prediction_lines(paths, df)
    # Labels for the first 100 arrive in another instance's file BEFORE their predictions are logged.
    append(paths.feedback_log_dir / "i2.jsonl", fbs[:100])
    state = MonitorState()
    ing = ingestor(paths)
    c = ing.run(state)
    assert (c.feedback, c.labelled, len(state.orphans)) == (100, 0, 100)
    append(paths.prediction_log_dir / "i1.jsonl", preds)
    append(paths.feedback_log_dir / "i1.jsonl", fbs[100:250] + fbs[:3])  # 3 duplicates
    c = ing.run(state)
    assert (c.predictions, c.labelled) == (300, 250)
    assert len(state.pending) == 50 and len(state.orphans) == 3 and state.totals.get("duplicate_feedback", 0) == 0
    append(paths.feedback_log_dir / "i1.jsonl", fbs[250:])
    ing.run(state)
    got = load_labelled(paths)
    assert list(got.columns) == columns(paths.settings.dataset)
    assert len(got) == 300 and got["request_id"].is_unique and set(got["request_id"]) == set(ids)
    assert raw_columns_equal(got.reset_index(drop=True), df.reset_index(drop=True))  # oldest first = log order here
    assert state.counts["v1"].model_dump() == {"predictions": 300, "labelled": 300, "positives": int(df.machine_failure.sum())}


def test_partial_last_line_waits_and_malformed_lines_are_counted_not_fatal(paths):
    df = day2(paths, "natural").iloc[:10]
    preds, fbs, _ = prediction_lines(paths, df)
    p = paths.prediction_log_dir / "i1.jsonl"
    append(p, preds[:5] + ["{not json", json.dumps({"time": "t", "request_id": "x"})])
    with open(p, "a") as f:
        f.write(preds[5][:40])  # a writer's half line
    append(paths.feedback_log_dir / "i1.jsonl", fbs)
    state = MonitorState()
    c = ingestor(paths).run(state)
    assert (c.predictions, c.malformed, c.labelled) == (5, 2, 5)
    with open(p, "a") as f:
        f.write(preds[5][40:] + "\n")
    append(p, preds[6:])
    c = ingestor(paths).run(state)
    assert (c.predictions, c.labelled) == (5, 5)
    assert len(load_labelled(paths)) == 10


def test_a_crash_between_append_and_state_save_neither_loses_nor_double_counts(paths, monkeypatch):
    import services.monitor.ingest as ingest_mod

    df = day2(paths, "natural").iloc[:400]
    preds, fbs, ids = prediction_lines(paths, df)
    append(paths.prediction_log_dir / "i1.jsonl", preds[:200])
    append(paths.feedback_log_dir / "i1.jsonl", fbs[:200])
    state = MonitorState()
    ingestor(paths).run(state)
    assert len(load_labelled(paths)) == 200
    append(paths.prediction_log_dir / "i1.jsonl", preds[200:])
    append(paths.feedback_log_dir / "i1.jsonl", fbs[200:])

    def crash(path, st):
        raise KeyboardInterrupt("killed after the labelled rows were appended")

    monkeypatch.setattr(ingest_mod, "save_state", crash)
    with pytest.raises(KeyboardInterrupt):
        ingestor(paths).run(load_state(paths.monitor_state))
    assert labelled_file(paths).stat().st_size > load_state(paths.monitor_state).labelled.bytes
    assert len(load_labelled(paths)) == 200  # readers see only the committed rows
    monkeypatch.undo()

    state = load_state(paths.monitor_state)
    assert recover_labelled(paths, state) > 0
    ingestor(paths).run(state)
    got = load_labelled(paths)
    assert len(got) == 400 and got["request_id"].is_unique and set(got["request_id"]) == set(ids)
    assert state.counts["v1"].labelled == 400 and state.counts["v1"].predictions == 400


def test_state_round_trips_unchanged(paths):
    df = day2(paths, "natural").iloc[:50]
    preds, fbs, _ = prediction_lines(paths, df)
    append(paths.prediction_log_dir / "i1.jsonl", preds)
    append(paths.feedback_log_dir / "i1.jsonl", fbs[:20])
    state = MonitorState()
    ingestor(paths).run(state)
    loaded = load_state(paths.monitor_state)
    assert loaded == state
    save_state(paths.monitor_state, loaded)
    assert load_state(paths.monitor_state) == state


def test_load_labelled_is_empty_with_the_contract_columns_before_any_label(paths):
    df = load_labelled(paths)
    assert df.empty and list(df.columns) == columns(paths.settings.dataset)
    assert list(df.columns) == ["type", "air_temperature_k", "process_temperature_k", "rotational_speed_rpm",
                                "torque_nm", "tool_wear_min", "machine_failure", "request_id", "time", "model_version"]
    assert str(df.dtypes["type"]) == "object" and str(df.dtypes["machine_failure"]) == "int64"


def test_waiting_records_beyond_the_configured_caps_are_dropped_oldest_first_and_counted(paths):
    df = day2(paths, "natural").iloc[:50]
    preds, fbs, ids = prediction_lines(paths, df)
    append(paths.prediction_log_dir / "i1.jsonl", preds[:30])
    append(paths.feedback_log_dir / "i1.jsonl", fbs[30:50])  # labels whose predictions are not logged yet
    state = MonitorState()
    ingestor(paths, max_pending=10, max_orphans=5).run(state)
    assert len(state.pending) == 10 and state.totals["expired_pending"] == 20
    assert set(state.pending) == set(ids[20:30])  # the newest kept
    assert len(state.orphans) == 5 and state.totals["expired_orphans"] == 15
