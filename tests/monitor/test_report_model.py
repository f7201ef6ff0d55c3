"""The typed monitor records: a written report is its model's dump; a format 1/2 state file moves into the store."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from services.monitor import report as report_mod
from services.monitor.monitor import Monitor
from services.monitor.report_model import (
    SCHEMA_VERSION,
    DriftCheckEntry,
    Evidence,
    MonitorReport,
    PerformanceCheckEntry,
)
from services.monitor.rows import InputRow, OrphanLabel, PendingPrediction, WindowRow, input_columns
from services.monitor.state import LegacyState, MonitorState, check_features, load_state, save_state, seed_store
from services.monitor.store import MonitorStore
from shared.errors import DataValidationError
from shared.paths import RedisKeys
from shared.schemas import parse_retrain_message
from tests.ai4i import RAW_COLUMNS
from tests.monitor.helpers import day2, write_traffic


def test_a_written_report_validates_against_the_model_and_round_trips_unchanged(trained, paths, redis_client):
    write_traffic(paths, day2(paths, "torque_shift").iloc[:600])
    returned = Monitor(settings=trained, redis_client=redis_client).cycle()
    for path in (paths.volume / returned.paths.json_file, paths.reports_dir / report_mod.LATEST_JSON):
        text = path.read_text()
        loaded = report_mod.read_report(path)
        assert loaded == returned
        assert report_mod.report_text(loaded) == text  # load -> dump gives the very same file
        assert json.loads(text)["schema_version"] == SCHEMA_VERSION == 2
    # Both kinds of check, each typed by its kind, and every fired check named in `fired`.
    kinds = {type(c) for c in loaded.checks}
    assert kinds == {PerformanceCheckEntry, DriftCheckEntry}
    assert loaded.fired == [c.name for c in loaded.checks if c.fired] and loaded.trigger.status == "sent"
    # The retrain message's evidence is the Evidence model's JSON.
    (raw,) = redis_client.lrange(RedisKeys.from_settings(trained).retrain_queue, 0, -1)
    evidence = Evidence.model_validate(parse_retrain_message(raw).evidence)
    assert evidence.report == returned.paths.json_file and {c.name for c in evidence.checks} == set(returned.fired)


def test_a_quiet_cycle_report_round_trips_too(trained, paths):
    monitor = Monitor(settings=trained, redis_client=None)
    monitor.cycle(quiet_reports=True)
    report = monitor.cycle(quiet_reports=True)
    latest = paths.reports_dir / report_mod.LATEST_JSON
    assert report.paths.html_file is None and json.loads(latest.read_text())["paths"]["html"] is None
    assert report_mod.report_text(report_mod.read_report(latest)) == latest.read_text()


def test_a_report_of_another_schema_or_with_an_unknown_key_is_refused(trained, paths):
    Monitor(settings=trained, redis_client=None).cycle()
    data = json.loads((paths.reports_dir / report_mod.LATEST_JSON).read_text())
    with pytest.raises(ValidationError, match="schema_version"):
        MonitorReport.model_validate(data | {"schema_version": 1})
    with pytest.raises(ValidationError, match="report_format"):
        MonitorReport.model_validate(data | {"report_format": 1})


def test_the_drift_window_columns_are_time_version_and_the_model_inputs(trained):
    assert input_columns(trained.dataset) == ["time", "model_version"] + RAW_COLUMNS


def _state_file(t: str, pending: list, recent: list, fmt: int) -> dict:
    return {
        "format": fmt,
        "offsets": {"predictions/i1.jsonl": 120},
        "labelled": {"bytes": 10, "rows": 1},
        "pending": {"r1": pending},
        "orphans": {"r2": [t, 1]},
        "recent_inputs": [recent],
        "windows": {"v1": [[t, 1, 0, 0.25]]},
        "counts": {"v1": {"predictions": 2, "labelled": 1, "positives": 1}},
        "totals": {"predictions_read": 2},
        "history": [],
        "last_trigger": {"message_id": "m1", "time": t, "checks": ["drift:type"], "serving_version": "v1",
                         "queue": "clockwork:retrain"},
        "cycles": 3,
        "updated_at": t,
    }


def test_a_format_2_state_file_loads_into_named_rows_and_moves_into_a_new_store(tmp_path):
    t = "2026-01-01T00:00:00.000000Z"
    readings = ["L", 300.0, 310.0, 1500.0, 40.0, 10.0]
    data = _state_file(t, [t, "v1", readings, 0.25, 0], [t, "v1", readings], 2) | {"features": RAW_COLUMNS}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(data))
    state = load_state(path)
    assert isinstance(state, LegacyState)
    row = state.pending["r1"]
    assert isinstance(row, PendingPrediction) and (row.model_version, row.values[4], row.predicted) == ("v1", 40.0, 0)
    assert row.values == ("L", 300.0, 310.0, 1500.0, 40.0, 10.0) and isinstance(row.values[3], float)
    assert state.orphans["r2"] == OrphanLabel(time=t, label=1)
    assert state.recent_inputs == [row.inputs()] and isinstance(state.recent_inputs[0], InputRow)
    assert state.windows["v1"] == [WindowRow(time=t, label=1, predicted=0, probability=0.25)]
    assert state.last_trigger.message_id == "m1" and state.counts["v1"].positives == 1
    with MonitorStore.open(tmp_path / "store.sqlite", features=RAW_COLUMNS, seed=seed_store(state)) as store:
        snap = store.snapshot()
        assert store.offsets() == {"predictions/i1.jsonl": 120} and store.labelled_length() == (10, 1)
        assert store.pending_among(["r1"]) == {"r1": row} and store.orphans_among(["r2"]) == state.orphans
        assert snap.recent_inputs == state.recent_inputs and snap.windows == state.windows
        assert snap.counts == state.counts and store.totals() == {"predictions_read": 2}
    with MonitorStore.open(tmp_path / "store.sqlite", features=RAW_COLUMNS, seed=seed_store(state)) as store:
        assert store.ids("pending") == {"r1"}  # an existing store is never seeded twice
    save_state(path, state)
    small = {k: data[k] for k in ("features", "history", "last_trigger", "cycles", "updated_at")}
    saved = small | {"format": 3, "last_trigger": small["last_trigger"] | {"lines_read": None}}  # read: unknown then
    assert json.loads(path.read_text()) == saved  # the rest lives in the store now
    assert load_state(path) == MonitorState.model_validate(small) and seed_store(load_state(path)) is None


def test_a_format_1_state_file_with_flat_readings_is_read_nested(tmp_path, trained):
    t = "2026-01-01T00:00:00.000000Z"
    readings = ["L", 300.0, 310.0, 1500.0, 40.0, 10.0]
    path = tmp_path / "state.json"
    path.write_text(json.dumps(_state_file(t, [t, "v1", *readings, 0.25, 0], [t, "v1", *readings], 1)))
    state = load_state(path)
    assert state.pending["r1"] == PendingPrediction(t, "v1", tuple(readings), 0.25, 0)
    assert state.recent_inputs == [InputRow(t, "v1", tuple(readings))]
    check_features(path, state, trained.dataset.feature_names)
    assert state.features == RAW_COLUMNS


def test_a_state_of_other_features_is_refused_in_one_line(tmp_path, trained):
    t = "2026-01-01T00:00:00.000000Z"
    path = tmp_path / "state.json"
    path.write_text(json.dumps(_state_file(t, [t, "v1", ["L", 1.0], 0.25, 0], [t, "v1", ["L", 1.0]], 2)))
    with pytest.raises(DataValidationError, match=r"holds readings of \[2\] value\(s\) per row, not of the dataset's"):
        check_features(path, load_state(path), trained.dataset.feature_names)
    path.write_text(json.dumps(_state_file(t, [t, "v1", ["L"] * 6, 0.25, 0], [t, "v1", ["L"] * 6], 2)
                               | {"features": ["a", "b", "c", "d", "e", "f"]}))
    with pytest.raises(DataValidationError, match=r"holds readings of \['a', 'b'.*move it aside"):
        check_features(path, load_state(path), trained.dataset.feature_names)


def test_a_damaged_trigger_record_in_the_state_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"format": 1, "last_trigger": {"time": "2026-01-01T00:00:00Z"}}))
    with pytest.raises(DataValidationError, match=r"last_trigger\.message_id"):
        load_state(path)
