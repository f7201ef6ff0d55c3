"""The live shadow's summary (services.trainer.live_shadow, `python -m services.trainer shadow vN --live`).

Predictions go through the real app with deployment.shadow_version v2 (TestClient), labels through POST /feedback;
the summary reads the logged shadow answers and the feedback logs back and must agree with the offline replay."""
from __future__ import annotations

import json

import pandas as pd
from fastapi.testclient import TestClient

from services.trainer.__main__ import main
from services.trainer.live_shadow import _lines_backwards_until, live_shadow
from services.trainer.shadow import shadow_version
from shared.config import load_settings
from shared.paths import Paths
from shared.schemas import PredictionRecord
from tests.ai4i import LABEL, RAW_COLUMNS
from tests.conftest import set_config_line

ROWS = 400
LABELLED = 250


def shadowed_traffic(served) -> tuple:
    """ROWS day-2 readings served by v1 with v2 as the live shadow, the first LABELLED labelled; (settings, df)."""
    from services.inference.app import create_app

    cfg = served.config_path
    cfg.write_text(set_config_line(cfg.read_text(), "shadow_version", "v2"))
    settings = load_settings(cfg, env={})
    paths = Paths.from_settings(settings)
    df = pd.read_csv(paths.production_version_dir(settings.data.versions.day2) / "natural.csv").iloc[:ROWS]
    readings = df[RAW_COLUMNS].to_dict("records")
    with TestClient(create_app(settings, instance_id="live-1", api_key=None)) as client:
        ids = [client.post("/predict", json=r).json()["request_id"] for r in readings[:100]]
        r = client.post("/predict/batch", json={"readings": readings[100:]})
        ids += [p["request_id"] for p in r.json()["predictions"]]
        labels = [{"request_id": rid, "label": int(y)} for rid, y in zip(ids, df[LABEL], strict=False)][:LABELLED]
        assert client.post("/feedback/batch", json={"labels": labels}).status_code == 200
    return settings, df


def test_live_summary_matches_the_logged_lines_and_the_offline_replay(served):
    settings, df = shadowed_traffic(served)
    report = live_shadow(settings, "v2")
    assert report.status == "ok" and report.shadowed_rows == ROWS and report.other_shadows == {}
    lines = (Paths.from_settings(settings).prediction_log("live-1")).read_text().splitlines()
    records = [PredictionRecord.model_validate_json(x) for x in lines]
    differ = sum(r.label != r.shadow.label for r in records)
    assert report.disagreements == differ and report.agreement == round(1 - differ / ROWS, 6)
    assert report.shadow_flags == sum(r.shadow.label for r in records)
    assert report.shadow_thresholds == [records[0].shadow.threshold]
    offline = shadow_version(settings, "v2")  # the same readings replayed through v2: the same decisions
    assert (offline.agreement, offline.candidate_flags, offline.served_flags) == (
        report.agreement, report.shadow_flags, report.served_flags)
    lab = report.labelled
    assert lab.rows == LABELLED and lab.positives == int(df[LABEL].iloc[:LABELLED].sum())
    truth = df[LABEL].iloc[:LABELLED].astype(int).tolist()
    assert lab.candidate.fn == sum(r.shadow.label == 0 and y == 1 for r, y in zip(records, truth, strict=False))
    assert lab.served.fp == sum(r.label == 1 and y == 0 for r, y in zip(records, truth, strict=False))
    assert report.feedback_lines_read == LABELLED and report.feedback_skipped_lines == 0


def test_no_live_shadow_is_a_clear_answer(served, capsys):
    shadowed_traffic(served)
    assert main(["shadow", "v1", "--live", "--config", str(served.config_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "no_shadow" and out["other_shadows"] == {"v2": ROWS} and out["agreement"] is None
    assert main(["shadow", "v2", "--live", "--last", "10", "--config", str(served.config_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "ok" and out["shadowed_rows"] == 10 and out["labelled"]["rows"] == 0


def test_feedback_is_read_backwards_only_to_the_window(tmp_path, monkeypatch):
    import services.trainer.live_shadow as live

    monkeypatch.setattr(live, "BLOCK", 64)  # many blocks, lines split across them
    path = tmp_path / "f.jsonl"
    lines = [f'{{"label":0,"request_id":"r-{i:03d}","time":"2026-01-01T00:{i // 60:02d}:{i % 60:02d}.000000Z"}}'
             .encode() for i in range(300)]  # fmt: skip
    path.write_bytes(b"\n".join(lines) + b"\n" + b'{"label":1,"req')  # a torn last line
    got, read = _lines_backwards_until(path, "2026-01-01T00:04:10.000000Z")  # line 250 on
    assert got[-50:] == lines[250:] and len(got) < 60 and read < path.stat().st_size / 4
    assert _lines_backwards_until(path, "2025-01-01T00:00:00.000000Z")[0] == lines
