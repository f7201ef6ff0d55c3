"""Incremental reading and exactly-once joining of predictions and late labels."""
from __future__ import annotations

import json

import pytest

from services.monitor.ingest import Ingestor
from services.monitor.reader import LogDir, read_complete_lines
from services.monitor.state import recover_labelled
from services.monitor.store import MonitorStore
from shared.labelled import columns, committed_length, labelled_file, load_labelled
from tests.monitor.helpers import append, day2, open_store, prediction_lines, raw_columns_equal


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
    state = open_store(paths)
    ing = ingestor(paths)
    c = ing.run(state)
    assert (c.feedback, c.labelled, len(state.ids("orphans"))) == (100, 0, 100)
    append(paths.prediction_log_dir / "i1.jsonl", preds)
    append(paths.feedback_log_dir / "i1.jsonl", fbs[100:250] + fbs[:3])  # 3 duplicates
    c = ing.run(state)
    assert (c.predictions, c.labelled) == (300, 250)
    assert len(state.ids("pending")) == 50 and len(state.ids("orphans")) == 3
    assert state.totals().get("duplicate_feedback", 0) == 0
    append(paths.feedback_log_dir / "i1.jsonl", fbs[250:])
    ing.run(state)
    got = load_labelled(paths)
    assert list(got.columns) == columns(paths.settings.dataset)
    assert len(got) == 300 and got["request_id"].is_unique and set(got["request_id"]) == set(ids)
    assert raw_columns_equal(got.reset_index(drop=True), df.reset_index(drop=True))  # oldest first = log order here
    assert state.counts()["v1"].model_dump() == {"predictions": 300, "labelled": 300,
                                                 "positives": int(df.machine_failure.sum())}
    assert not state.ids("pending") and state.size("pending") == 0 and state.size("orphans") == 3


def test_partial_last_line_waits_and_malformed_lines_are_counted_not_fatal(paths):
    df = day2(paths, "natural").iloc[:10]
    preds, fbs, _ = prediction_lines(paths, df)
    p = paths.prediction_log_dir / "i1.jsonl"
    append(p, preds[:5] + ["{not json", json.dumps({"time": "t", "request_id": "x"})])
    with open(p, "a") as f:
        f.write(preds[5][:40])  # a writer's half line
    append(paths.feedback_log_dir / "i1.jsonl", fbs)
    state = open_store(paths)
    c = ingestor(paths).run(state)
    assert (c.predictions, c.malformed, c.labelled) == (5, 2, 5)
    with open(p, "a") as f:
        f.write(preds[5][40:] + "\n")
    append(p, preds[6:])
    c = ingestor(paths).run(state)
    assert (c.predictions, c.labelled) == (5, 5)
    assert len(load_labelled(paths)) == 10


def test_a_crash_between_append_and_commit_neither_loses_nor_double_counts(paths, monkeypatch):
    df = day2(paths, "natural").iloc[:400]
    preds, fbs, ids = prediction_lines(paths, df)
    append(paths.prediction_log_dir / "i1.jsonl", preds[:200])
    append(paths.feedback_log_dir / "i1.jsonl", fbs[:200])
    with open_store(paths) as store:
        ingestor(paths).run(store)
    assert len(load_labelled(paths)) == 200
    append(paths.prediction_log_dir / "i1.jsonl", preds[200:])
    append(paths.feedback_log_dir / "i1.jsonl", fbs[200:])

    def crash(self, size, rows):
        raise KeyboardInterrupt("killed after the labelled rows were appended, before the commit")

    monkeypatch.setattr(MonitorStore, "set_labelled_length", crash)
    with pytest.raises(KeyboardInterrupt), open_store(paths) as store:
        ingestor(paths).run(store)
    assert labelled_file(paths).stat().st_size > committed_length(paths)[0]
    assert len(load_labelled(paths)) == 200  # readers see only the committed rows
    monkeypatch.undo()

    state = open_store(paths)
    assert state.counts()["v1"].predictions == 200 and state.totals()["predictions_read"] == 200  # rolled back
    assert recover_labelled(paths, state.labelled_length()[0]) > 0
    ingestor(paths).run(state)
    got = load_labelled(paths)
    assert len(got) == 400 and got["request_id"].is_unique and set(got["request_id"]) == set(ids)
    assert state.counts()["v1"].labelled == 400 and state.counts()["v1"].predictions == 400


def test_the_store_reopens_unchanged(paths):
    df = day2(paths, "natural").iloc[:50]
    preds, fbs, _ = prediction_lines(paths, df)
    append(paths.prediction_log_dir / "i1.jsonl", preds)
    append(paths.feedback_log_dir / "i1.jsonl", fbs[:20])
    with open_store(paths) as store:
        ingestor(paths).run(store)
        before = (store.snapshot(), store.offsets(), store.totals(), store.ids("pending"))
    with open_store(paths) as store:
        assert (store.snapshot(), store.offsets(), store.totals(), store.ids("pending")) == before
    snapshot = before[0]
    assert (snapshot.pending, snapshot.orphans, snapshot.labelled_rows, len(snapshot.windows["v1"])) == (30, 0, 20, 20)
    assert len(snapshot.recent_inputs) == 50 and snapshot.recent_inputs[0].values[0] == df["type"].iloc[0]


def test_a_cycle_under_continuous_appends_ends_and_leaves_the_new_lines_for_the_next(paths, monkeypatch):
    df = day2(paths, "natural").iloc[:600]
    preds, fbs, _ = prediction_lines(paths, df)
    log_file = paths.prediction_log_dir / "i1.jsonl"
    append(log_file, preds[:200])
    ing = ingestor(paths, batch_bytes=4096)  # many small steps
    step = ing.step
    more = iter(range(200, 600, 20))
    appended = []

    def step_while_traffic_arrives(store, **kw):
        i = next(more, None)
        if i is not None:
            append(log_file, preds[i : i + 20])  # 20 new lines land during every step
            appended.extend(preds[i : i + 20])
        return step(store, **kw)

    monkeypatch.setattr(ing, "step", step_while_traffic_arrives)
    with open_store(paths) as store:
        c = ing.run(store)
        assert c.predictions == 200  # exactly what was logged when the cycle began
        assert store.offsets()["predictions/i1.jsonl"] == len(("\n".join(preds[:200]) + "\n").encode())
        monkeypatch.undo()
        assert len(appended) > 200  # more arrived during the cycle than it began with, and still it ended
        assert ing.run(store).predictions == len(appended)  # the rest: the next cycle's


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
    state = open_store(paths)
    ingestor(paths, max_pending=10, max_orphans=5).run(state)
    assert state.size("pending") == 10 and state.totals()["expired_pending"] == 20
    assert state.ids("pending") == set(ids[20:30])  # the newest kept
    assert len(state.ids("orphans")) == 5 and state.totals()["expired_orphans"] == 15
    assert state.ids("orphans") == set(ids[45:50])


def test_odd_ids_and_a_malformed_label_amid_plain_ones_give_the_same_rows_as_line_by_line(paths):
    # Request ids holding the labelled lines' record separator "},{" (the labelled block then dumps line by line)
    # and a malformed feedback line amid plain ones (its block is then parsed line by line): nothing changes.
    df = day2(paths, "natural").iloc[:60]
    ids = [f"id-{i}" if i % 7 else f"id-{i}}},{{x" for i in range(60)]
    preds, fbs, _ = prediction_lines(paths, df, ids=ids)
    bad = ['{"time": "t", "request_id": 1}', "[]", ""]  # two malformed lines and a blank one
    append(paths.prediction_log_dir / "i1.jsonl", preds[:10] + bad[:1] + preds[10:20] + bad[1:] + preds[20:])
    append(paths.feedback_log_dir / "i1.jsonl", fbs[:30] + bad[:1] + fbs[30:])
    with open_store(paths) as store:
        c = ingestor(paths).run(store)
    assert (c.predictions, c.feedback, c.labelled, c.malformed) == (60, 60, 60, 3)
    text = (paths.prediction_log_dir / "i1.jsonl").read_bytes()
    starts = [text.index(b'{"time": "t"'), text.index(b"\n[]\n") + 1]
    assert [(m.file, m.line, m.offset) for m in c.malformed_lines] == [
        ("logs/predictions/i1.jsonl", 11, starts[0]),
        ("logs/predictions/i1.jsonl", 22, starts[1]),
        ("logs/feedback/i1.jsonl", 31, len("\n".join(fbs[:30])) + 1),
    ]
    lines = labelled_file(paths).read_bytes().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ids
    assert all(list(json.loads(line)) == sorted(json.loads(line)) for line in lines)
    got = load_labelled(paths)
    assert raw_columns_equal(got.reset_index(drop=True), df.reset_index(drop=True))
