"""The live shadow (deployment.shadow_version): scored beside every served answer, logged in the same line, never
answered; a broken or failing shadow never stops serving; config edits add, change and remove it live."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from services.inference.app import create_app
from services.monitor.rows import PredictionParser
from shared import deploylog
from shared.config import load_settings
from shared.registry import Registry
from shared.schemas import PredictionRecord
from tests.conftest import set_config_line, wait_for
from tests.inference.test_api import FAILING, SNAKE
from tests.inference.test_swap import make_corrupt_version


def with_shadow(served, version: str):
    cfg = served.config_path
    cfg.write_text(set_config_line(cfg.read_text(), "shadow_version", version))
    return load_settings(cfg, env={})


def raw_lines(svc) -> list[bytes]:
    return svc.prediction_log_path.read_bytes().splitlines()


def ask(client) -> list[bytes]:
    """Two single readings and a batch of three: the answers' bytes with each request_id cut out."""
    out = []
    for reading in (SNAKE, FAILING):
        r = client.post("/predict", json=reading)
        assert r.status_code == 200, r.text
        out.append(r.content.replace(r.json()["request_id"].encode(), b""))
    r = client.post("/predict/batch", json={"readings": [SNAKE, FAILING, SNAKE]})
    assert r.status_code == 200, r.text
    body = r.content
    for p in r.json()["predictions"]:
        body = body.replace(p["request_id"].encode(), b"")
    return [*out, body]


def test_shadow_is_logged_beside_the_served_answer_and_never_answered(served, paths):
    with TestClient(create_app(served, instance_id="plain", api_key=None)) as c:
        plain = ask(c)
        plain_lines = raw_lines(c.app.state.service)
    with TestClient(create_app(with_shadow(served, "v2"), instance_id="shadowed", api_key=None)) as c:
        shadowed = ask(c)
        svc = c.app.state.service
        lines = raw_lines(svc)
        info = c.get("/model").json()["shadow"]
        metrics = c.get("/metrics").text
    assert shadowed == plain  # the same bytes: the shadow is never in a response
    assert all(b"shadow" not in line for line in plain_lines)
    records = [PredictionRecord.model_validate_json(line) for line in lines]
    assert len(records) == 5 and all(line == r.to_line().encode() for line, r in zip(lines, records, strict=True))
    model, md = Registry(paths=paths).load_model("v2")
    expected = model.predict_proba(served.dataset.encode(pd.DataFrame([SNAKE, FAILING, SNAKE, FAILING, SNAKE])))
    v2 = svc.holder.shadow
    assert info["model_version"] == "v2" and info["onnx_sha256"] == md["onnx_sha256"] and info["error"] is None
    for r, p, before in zip(records, expected, plain_lines, strict=True):
        served_fields = json.loads(r.to_line())
        served_fields.pop("shadow"), served_fields.pop("request_id"), served_fields.pop("time")
        old = json.loads(before)
        old.pop("request_id"), old.pop("time")
        assert served_fields == old  # the served side of the line is what it is without a shadow
        assert r.model_version == "v1" and r.shadow is not None and r.shadow.model_version == "v2"
        assert r.shadow.probability == pytest.approx(float(p), abs=1e-7)
        assert r.shadow.threshold == v2.threshold and r.shadow.label == int(r.shadow.probability >= v2.threshold)
    assert "clockwork_shadow_rows_total 5.0" in metrics and "clockwork_shadow_errors_total 0.0" in metrics
    assert 'clockwork_shadow_model{model_version="v2"' in metrics


def test_readers_take_lines_with_and_without_a_shadow(served, paths):
    """The monitor's parser (fast path and full check) and the record read both kinds of line alike."""
    with TestClient(create_app(with_shadow(served, "v2"), instance_id="shadowed", api_key=None)) as c:
        c.post("/predict", json=SNAKE)
        line = raw_lines(c.app.state.service)[-1]
    plain = PredictionRecord.model_validate_json(line).model_copy(update={"shadow": None}).to_line().encode()
    parse = PredictionParser(served.dataset)
    (rid_a, row_a), (rid_b, row_b) = parse(line), parse(plain)
    assert rid_a == rid_b and row_a == row_b
    assert b'"shadow"' not in plain and json.loads(line)["shadow"]["model_version"] == "v2"
    bad = line.replace(b'"shadow":{"label":', b'"shadow":{"label":"1","x":')  # refused like any bad field
    with pytest.raises(ValidationError, match="shadow"):
        parse(bad)
    with pytest.raises(ValidationError, match="shadow"):
        PredictionRecord.model_validate_json(bad)


def test_a_broken_shadow_does_not_stop_serving_and_is_reported(served, paths):
    good = make_corrupt_version(paths, "v2", "v3")
    with TestClient(create_app(with_shadow(served, "v3"), instance_id="t", api_key=None)) as c:
        ready = c.get("/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["model_version"] == "v1"
        assert "shadow v3 failed to load" in ready.json()["detail"] and "sha256" in ready.json()["detail"]
        info = c.get("/model").json()["shadow"]
        assert info["pinned_version"] == "v3" and info["model_version"] is None and "sha256" in info["error"]
        assert all(r.status_code == 200 for r in (c.post("/predict", json=SNAKE), c.post("/predict", json=FAILING)))
        assert all(b"shadow" not in line for line in raw_lines(c.app.state.service))
        assert "clockwork_shadow_load_failures_total 1.0" in c.get("/metrics").text
        paths.model_file("v3").write_bytes(good)  # repaired: loaded without a config edit or a restart
        wait_for(lambda: (c.get("/model").json()["shadow"] or {}).get("model_version") == "v3")
        assert c.get("/ready").json()["detail"] == "serving v1; shadow v3"
        c.post("/predict", json=SNAKE)
        assert json.loads(raw_lines(c.app.state.service)[-1])["shadow"]["model_version"] == "v3"
    assert [r["event"] for r in deploylog.read_rows(paths)] == ["start"]  # the shadow is no deployment


def test_a_failing_shadow_never_fails_a_request(served, paths, caplog):
    with TestClient(create_app(with_shadow(served, "v2"), instance_id="t", api_key=None)) as c:
        shadow = c.app.state.service.holder.shadow

        def boom(*_a):
            raise RuntimeError("onnxruntime fell over")

        shadow.predict_row = boom
        shadow.predict_many = lambda x: np.full(len(x), np.nan, dtype=np.float32)  # not a probability
        with caplog.at_level("ERROR", logger="services.inference.predictor"):
            single = c.post("/predict", json=SNAKE)
            batch = c.post("/predict/batch", json={"readings": [SNAKE, FAILING]})
            again = c.post("/predict", json=FAILING)
        assert single.status_code == 200 and batch.status_code == 200 and again.status_code == 200
        assert "shadow" not in single.json() and single.json()["model_version"] == "v1"
        lines = raw_lines(c.app.state.service)
        assert len(lines) == 4 and all(b"shadow" not in line for line in lines)
        assert all(PredictionRecord.model_validate_json(line).shadow is None for line in lines)
        assert "clockwork_shadow_errors_total 3.0" in c.get("/metrics").text
        logged = [r.getMessage() for r in caplog.records if r.name == "services.inference.predictor"]
        assert len(logged) == 2  # each kind once: the repeat within the interval is counted, not logged again
        assert "RuntimeError: onnxruntime fell over" in logged[0] and "not 2 finite probabilities" in logged[1]


def test_shadow_is_added_changed_and_removed_by_config_edits(served, paths):
    cfg = served.config_path
    with TestClient(create_app(served, instance_id="t", api_key=None)) as c:
        svc = c.app.state.service
        assert c.get("/model").json()["shadow"] is None

        def shadow_of_next() -> str | None:
            c.post("/predict", json=SNAKE)
            found = json.loads(raw_lines(svc)[-1]).get("shadow")
            return found and found["model_version"]

        for version, expected in (("v2", "v2"), ("v1", "v1"), ("null", None)):
            cfg.write_text(set_config_line(cfg.read_text(), "shadow_version", version))
            wait_for(lambda v=expected: (c.get("/model").json()["shadow"] or {}).get("model_version") == v)
            assert shadow_of_next() == expected
        assert c.get("/model").json()["shadow"] is None and c.get("/ready").json()["detail"] == "serving v1"
        assert 'clockwork_shadow_model{' not in c.get("/metrics").text
    assert [r["event"] for r in deploylog.read_rows(paths)] == ["start"]  # no restart, no swap
