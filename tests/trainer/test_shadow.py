"""Shadow evaluation of a candidate on logged traffic (services.trainer.shadow, `python -m services.trainer shadow`).

Predictions are logged through the real app (TestClient), feedback joined by a real monitor cycle; v2 is replayed
offline over that window and compared with what v1 served."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from services.trainer.__main__ import main
from services.trainer.shadow import shadow_version, tail_lines
from shared.paths import Paths
from shared.registry import Registry, model_threshold
from tests.ai4i import LABEL, RAW_COLUMNS

ROWS = 600
LABELLED = 400


def serve_traffic(settings, redis_client) -> list[str]:
    """Log ROWS predictions of the day-2 natural set through the app (in batches), feedback for the first
    LABELLED, and let a monitor cycle join them; the request ids, oldest first."""
    from services.inference.app import create_app
    from services.monitor.monitor import Monitor

    paths = Paths.from_settings(settings)
    df = pd.read_csv(paths.production_version_dir(settings.data.versions.day2) / "natural.csv").iloc[:ROWS]
    readings = df[RAW_COLUMNS].to_dict("records")
    ids: list[str] = []
    with TestClient(create_app(settings, instance_id="shadow-1", api_key=None)) as client:
        for start in range(0, ROWS, 200):
            r = client.post("/predict/batch", json={"readings": readings[start : start + 200]})
            assert r.status_code == 200, r.text
            ids += [p["request_id"] for p in r.json()["predictions"]]
        for rid, label in zip(ids[:LABELLED], df[LABEL].astype(int).tolist(), strict=False):
            assert client.post("/feedback", json={"request_id": rid, "label": label}).status_code == 200
    Monitor(settings=settings, redis_client=redis_client).cycle()
    return ids


@pytest.fixture
def traffic(served, redis_client) -> list[str]:
    return serve_traffic(served, redis_client)


def test_shadow_of_v2_compares_with_what_v1_served(served, traffic):
    report = shadow_version(served, "v2")
    assert report.status == "ok" and report.version == "v2"
    md = Registry(paths=Paths.from_settings(served)).metadata("v2")
    assert report.threshold == model_threshold(md)
    w = report.window
    assert w.rows == ROWS and w.served_versions == {"v1": ROWS} and w.instances == ["shadow-1"]
    assert w.first_time <= w.last_time and w.skipped_lines == 0
    assert 0.0 <= report.agreement <= 1.0
    assert report.disagreements == round((1 - report.agreement) * ROWS)
    lab = report.labelled
    assert lab.rows == LABELLED and lab.positives > 0
    cells = (
        lab.candidate_catches_failure
        + lab.candidate_false_alarm
        + lab.candidate_misses_failure
        + lab.candidate_avoids_false_alarm
    )
    assert cells == lab.disagreements <= report.disagreements
    for side in (lab.candidate, lab.served):
        assert side.tp + side.fp + side.fn + side.tn == LABELLED
        expected = 1000.0 * (
            served.decision.cost_missed_failure * side.fn + served.decision.cost_false_alarm * side.fp
        ) / LABELLED
        assert side.expected_cost_per_1000 == pytest.approx(expected)
    # the served side is what v1 logged: its confusion follows from the disagreement cells and the candidate's
    assert lab.served.fn - lab.candidate.fn == lab.candidate_catches_failure - lab.candidate_misses_failure
    assert report.latency.rows_timed == ROWS and report.latency.per_row_p50_us > 0
    assert report.latency.batch_rows == served.deployment.max_batch_rows


def test_shadow_is_deterministic_apart_from_latency(served, traffic):
    a = shadow_version(served, "v2").model_dump(exclude={"latency"})
    b = shadow_version(served, "v2").model_dump(exclude={"latency"})
    assert a == b


def test_shadow_of_the_serving_version_agrees_everywhere(served, traffic):
    report = shadow_version(served, "v1")
    assert report.agreement == 1.0 and report.labelled.disagreements == 0
    assert report.labelled.candidate == report.labelled.served


def test_last_takes_the_newest_rows(served, traffic):
    report = shadow_version(served, "v2", last=50)
    assert report.window.rows == 50 and report.labelled.rows == 0  # the newest 200 rows have no feedback


def test_cli_prints_json_and_exits_0(served, traffic, capsys):
    assert main(["shadow", "v2", "--config", str(served.config_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "ok" and out["window"]["rows"] == ROWS and 0 <= out["agreement"] <= 1


def test_cli_missing_version_exits_1_with_one_line(served, capsys):
    assert main(["shadow", "v9", "--config", str(served.config_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "v9" in lines[0]


def test_no_logged_traffic_is_a_clear_answer(served, capsys):
    assert main(["shadow", "v2", "--config", str(served.config_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "no_traffic" and "no logged traffic" in out["reason"]
    assert out["window"]["rows"] == 0 and out["agreement"] is None


def test_tail_reads_only_complete_lines_from_the_end(tmp_path, monkeypatch):
    import services.trainer.shadow as shadow

    monkeypatch.setattr(shadow, "BLOCK", 7)  # many blocks, lines split across them
    path = tmp_path / "log.jsonl"
    lines = [f"line-{i:03d}".encode() for i in range(50)]
    path.write_bytes(b"\n".join(lines) + b"\n" + b"torn-no-newline")
    got, read = tail_lines(path, 5)
    assert got == lines[-5:] and read < path.stat().st_size
    assert tail_lines(path, 500)[0] == lines
    assert tail_lines(path, 0)[0] == []


def test_torn_and_malformed_lines_are_skipped_and_counted(served, traffic):
    paths = Paths.from_settings(served)
    log_file = paths.prediction_log_dir / "shadow-1.jsonl"
    with open(log_file, "ab") as f:
        f.write(b"not json\n{\"time\": \"torn")
    report = shadow_version(served, "v2")
    assert report.window.rows == ROWS and report.window.skipped_lines == 1
    assert np.isclose(report.agreement, shadow_version(served, "v2").agreement)


def test_retrain_records_the_candidates_shadow_in_its_metadata(served, traffic):
    from services.trainer.retrain import run_retrain
    from shared.schemas import RetrainMessage

    result = run_retrain(served, RetrainMessage(id="shadow-job", reason="test"))
    md = Registry(paths=Paths.from_settings(served)).metadata(result.version)
    record = md["shadow"]
    assert record["status"] == "ok" and record["version"] == "candidate"
    assert record["window"]["rows"] == ROWS and 0.0 <= record["agreement"] <= 1.0
    assert record["threshold"] == md["decision"]["threshold"]
    assert record["labelled"]["rows"] == LABELLED and record["latency"]["rows_timed"] == ROWS


def test_retrain_without_logged_traffic_records_why(served):
    from services.trainer.retrain import run_retrain
    from shared.schemas import RetrainMessage

    result = run_retrain(served, RetrainMessage(id="quiet-job", reason="test", include_production=False))
    record = Registry(paths=Paths.from_settings(served)).metadata(result.version)["shadow"]
    assert record["status"] == "no_traffic" and "no logged traffic" in record["reason"]


def test_a_shadow_that_cannot_run_is_recorded_and_the_job_goes_on(served, traffic):
    from services.trainer.retrain import run_retrain
    from shared.schemas import RetrainMessage

    log_file = Paths.from_settings(served).prediction_log_dir / "shadow-1.jsonl"
    with open(log_file, "ab") as f:  # a record whose product type no model knows
        f.write(
            b'{"inputs":{"type":"Z","air_temperature_k":300,"process_temperature_k":310,"rotational_speed_rpm":1500,'
            b'"torque_nm":40,"tool_wear_min":10},"label":0,"model_version":"v1","probability":0.1,'
            b'"request_id":"odd","threshold":0.5,"time":"2099-01-01T00:00:00.000000Z"}\n'
        )
    result = run_retrain(served, RetrainMessage(id="odd-job", reason="test"))
    record = Registry(paths=Paths.from_settings(served)).metadata(result.version)["shadow"]
    assert record["status"] == "error" and "type" in record["reason"]
