"""Routes and input validation, in-process (TestClient, real lifespan, real model)."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from shared.config import load_settings
from shared.schemas import FeedbackRecord, PredictionRecord
from tests.conftest import ROOT

SNAKE = {"type": "M", "air_temperature_k": 298.1, "process_temperature_k": 308.6, "rotational_speed_rpm": 1551.0,
         "torque_nm": 42.8, "tool_wear_min": 0.0}
SOURCE = {c.name: c.source for c in load_settings(ROOT / "config.yaml", env={}).dataset.features}
DATASET = {SOURCE[k]: v for k, v in SNAKE.items()}
# A reading the forest calls a failure (overstrain: high torque and tool wear).
FAILING = dict(SNAKE, type="L", torque_nm=65.0, tool_wear_min=230.0, rotational_speed_rpm=1300.0)


def post_raw(client, path, text):
    return client.post(path, content=text.encode() if isinstance(text, str) else text,
                       headers={"Content-Type": "application/json"})


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def own_threshold(settings, version="v1"):
    """The threshold the trainer chose for the version (served: deployment.threshold is null in config.yaml)."""
    from shared.paths import Paths
    from shared.registry import Registry, model_threshold

    assert settings.deployment.threshold is None
    return model_threshold(Registry(paths=Paths.from_settings(settings)).metadata(version))


def test_predict_accepts_dataset_column_names(client, served):
    r = client.post("/predict", json=DATASET)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"request_id", "model_version", "failure_probability", "prediction", "threshold"}
    assert body["model_version"] == "v1"
    assert 0.0 <= body["failure_probability"] <= 1.0
    assert body["prediction"] == int(body["failure_probability"] >= body["threshold"])
    assert body["threshold"] == own_threshold(served)


def test_predict_accepts_snake_case_and_agrees_with_dataset_names(client):
    a = client.post("/predict", json=SNAKE).json()
    b = client.post("/predict", json=DATASET).json()
    assert a["failure_probability"] == b["failure_probability"]
    assert a["request_id"] != b["request_id"]


def test_predict_matches_the_onnx_model(client, served):
    import pandas as pd

    from shared.paths import Paths
    from shared.registry import Registry

    model, _ = Registry(paths=Paths.from_settings(served)).load_model("v1")
    for reading in (SNAKE, FAILING):
        expected = float(model.predict_proba(served.dataset.encode(pd.DataFrame([reading])))[0])
        got = client.post("/predict", json=reading).json()["failure_probability"]
        assert got == pytest.approx(expected, abs=1e-7)
    assert client.post("/predict", json=FAILING).json()["prediction"] == 1


def test_prediction_is_logged_before_the_answer(client, served):
    svc = client.app.state.service
    r = client.post("/predict", json=DATASET).json()
    records = [PredictionRecord.model_validate(x) for x in lines(svc.prediction_log_path)]
    last = records[-1]
    assert last.request_id == r["request_id"]
    assert last.model_version == "v1" and last.label == r["prediction"]
    assert last.threshold == own_threshold(served)
    assert last.probability == r["failure_probability"]
    assert last.inputs == SNAKE
    assert svc.prediction_log_path.name == "test-1.jsonl"
    assert last.time.endswith("Z") and len(last.time) == len("2026-01-02T03:04:05.123456Z")


def test_log_line_is_the_record_line(client):
    """The orjson line and PredictionRecord.to_line() carry the same JSON."""
    svc = client.app.state.service
    client.post("/predict", json=SNAKE)
    raw = svc.prediction_log_path.read_text().splitlines()[-1]
    assert json.loads(PredictionRecord.model_validate_json(raw).to_line()) == json.loads(raw)
    assert list(json.loads(raw)) == sorted(json.loads(raw))


@pytest.mark.parametrize("field", list(SNAKE))
def test_predict_rejects_a_missing_field(client, field):
    body = {k: v for k, v in SNAKE.items() if k != field}
    r = client.post("/predict", json=body)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == field
    assert "field required" in r.json()["detail"]


@pytest.mark.parametrize("value", ['"42.8"', "true", "null", "[1]", "{}"])
def test_predict_rejects_a_wrong_type(client, value):
    text = json.dumps(SNAKE).replace("42.8", value)
    r = post_raw(client, "/predict", text)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "torque_nm"
    assert "number" in r.json()["errors"][0]["reason"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_predict_rejects_non_finite_numbers(client, literal):
    text = json.dumps(DATASET).replace("42.8", literal)
    r = post_raw(client, "/predict", text)
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["field"] == "Torque [Nm]" and "finite" in err["reason"]


@pytest.mark.parametrize("field,value", [("air_temperature_k", 10.0), ("process_temperature_k", 1000.0),
                                         ("rotational_speed_rpm", -5.0), ("torque_nm", 500.0), ("tool_wear_min", -1.0)])
def test_predict_rejects_physically_impossible_values(client, field, value):
    r = client.post("/predict", json=dict(SNAKE, **{field: value}))
    assert r.status_code == 422
    err = r.json()["errors"][0]
    assert err["field"] == field and "outside the physical range" in err["reason"]


def test_range_bounds_come_from_config(client, served):
    low, high = served.dataset.column("torque_nm").range
    assert client.post("/predict", json=dict(SNAKE, torque_nm=high)).status_code == 200
    assert client.post("/predict", json=dict(SNAKE, torque_nm=high + 0.001)).status_code == 422


@pytest.mark.parametrize("kind", ["X", "m", "", 1])
def test_predict_rejects_an_unknown_product_type(client, kind):
    r = client.post("/predict", json=dict(DATASET, Type=kind))
    assert r.status_code == 422
    err = r.json()["errors"][0]
    assert err["field"] == "Type" and f"unknown level {kind!r}" in err["reason"]
    assert "expected one of 'L', 'M' or 'H'" in err["reason"] and err["reason"] in r.json()["detail"]


def test_a_missing_field_names_its_other_names(client):
    r = client.post("/predict", json={k: v for k, v in SNAKE.items() if k != "torque_nm"})
    assert r.json()["errors"][0]["reason"] == "field required (also accepted as 'Torque [Nm]')"


@pytest.mark.parametrize("text", ['{"type": "M",', "not json", "", "\xff"])
def test_predict_rejects_malformed_json_with_400(client, text):
    r = post_raw(client, "/predict", text.encode("latin-1"))
    assert r.status_code == 400
    assert r.json()["detail"].startswith("malformed JSON")


@pytest.mark.parametrize("text", ["[]", "null", "3", '"x"'])
def test_predict_rejects_a_body_that_is_not_an_object(client, text):
    r = post_raw(client, "/predict", text)
    assert r.status_code == 422
    assert r.json()["errors"][0]["reason"] == "the body must be a JSON object"


def test_predict_rejects_unknown_fields(client):
    r = client.post("/predict", json=dict(SNAKE, torque=3.0))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "torque"


def test_predict_rejects_a_body_over_the_limit_with_413(client, served):
    limit = served.deployment.max_body_bytes
    text = json.dumps(dict(SNAKE)).replace("}", ', "pad": "' + "x" * limit + '"}')
    r = post_raw(client, "/predict", text)
    assert r.status_code == 413
    assert "max_body_bytes" in r.json()["detail"]


def test_a_chunked_body_over_the_limit_is_refused(client, served):
    limit = served.deployment.max_body_bytes

    def chunks():
        for _ in range(limit // 1000 + 2):
            yield b"x" * 1000

    r = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_batch_predicts_each_row_with_its_own_request_id(client, served):
    svc = client.app.state.service
    rows = [SNAKE, DATASET, FAILING]
    r = client.post("/predict/batch", json={"readings": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "v1" and body["threshold"] == own_threshold(served)
    preds = body["predictions"]
    assert len(preds) == 3 and len({p["request_id"] for p in preds}) == 3
    assert preds[0]["failure_probability"] == preds[1]["failure_probability"]
    assert preds[2]["prediction"] == 1
    single = client.post("/predict", json=FAILING).json()
    assert math.isclose(single["failure_probability"], preds[2]["failure_probability"], abs_tol=1e-7)
    logged = {x["request_id"]: x for x in lines(svc.prediction_log_path)}
    for p in preds:
        assert logged[p["request_id"]]["probability"] == p["failure_probability"]


def test_batch_over_max_rows_is_refused_as_a_schema_violation(client, served):
    """422, not 413: maxItems is in the document; 413 is for a body over max_body_bytes (docs/CONTRACTS.md)."""
    n = served.deployment.max_batch_rows + 1
    r = client.post("/predict/batch", json={"readings": [SNAKE] * n})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "readings"
    assert "max_batch_rows" in r.json()["detail"]


def test_batch_names_the_bad_row(client):
    r = client.post("/predict/batch", json={"readings": [SNAKE, dict(SNAKE, torque_nm="x")]})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "readings[1].torque_nm"


def test_empty_batch_is_refused(client):
    assert client.post("/predict/batch", json={"readings": []}).status_code == 422


def test_feedback_is_logged(client):
    svc = client.app.state.service
    rid = client.post("/predict", json=SNAKE).json()["request_id"]
    r = client.post("/feedback", json={"request_id": rid, "label": 1})
    assert r.status_code == 200 and r.json() == {"request_id": rid, "label": 1, "recorded": True}
    record = FeedbackRecord.model_validate(lines(svc.feedback_log_path)[-1])
    assert record.request_id == rid and record.label == 1


@pytest.mark.parametrize("body", [{"request_id": "a", "label": 2}, {"request_id": "a", "label": True},
                                  {"request_id": "a", "label": "1"}, {"request_id": "../x y", "label": 1},
                                  {"label": 1}])
def test_feedback_rejects_bad_labels_and_ids(client, body):
    r = client.post("/feedback", json=body)
    assert r.status_code == 422, r.text


def test_health_ready_model(client):
    assert client.get("/health").json() == {"status": "ok", "instance_id": "test-1"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["model_version"] == "v1"
    info = client.get("/model").json()
    assert info["model_version"] == "v1" and info["input_columns"] == list(SNAKE)
    assert info["metadata"]["version"] == "v1" and info["onnx_sha256"] == info["metadata"]["onnx_sha256"]
    assert info["metadata"]["data_version"] == "v3_split"


def test_metrics_count_requests_and_predictions_by_version(client):
    client.post("/predict", json=SNAKE)
    client.post("/predict", json=FAILING)
    client.post("/predict", json=dict(SNAKE, torque_nm=-1))
    text = client.get("/metrics").text
    assert 'clockwork_inference_requests_total{model_version="v1",route="/predict",status="200"} 2.0' in text
    assert 'clockwork_inference_requests_total{model_version="v1",route="/predict",status="422"} 1.0' in text
    assert 'clockwork_inference_predictions_total{model_version="v1",prediction="1"} 1.0' in text
    assert 'clockwork_inference_request_latency_seconds_count{model_version="v1",route="/predict"} 2.0' in text
    assert "clockwork_inference_swap_failures_total 0.0" in text


def test_metrics_registries_are_per_app(served):
    from fastapi.testclient import TestClient

    from services.inference.app import create_app

    with TestClient(create_app(served, instance_id="a")) as a, TestClient(create_app(served, instance_id="b")) as b:
        a.post("/predict", json=SNAKE)
        assert 'route="/predict",status="200"} 1.0' in a.get("/metrics").text
        assert 'route="/predict",status="200"} 0.0' in b.get("/metrics").text


def test_openapi_documents_the_routes_and_ranges(client):
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/feedback", "/health", "/ready", "/model", "/metrics"} <= set(spec["paths"])
    reading = spec["components"]["schemas"]["Reading"]
    assert reading["properties"]["torque_nm"]["maximum"] == 200.0
    assert reading["properties"]["torque_nm"]["description"].startswith("Nm, between 0 and 200")
    assert reading["properties"]["type"]["enum"] == ["L", "M", "H"]
    assert reading["required"] == list(SNAKE)
    assert reading["additionalProperties"] is False
    (example,) = reading["examples"]  # from the schema: mid-range values, the first level
    assert example == {"type": "L", "air_temperature_k": 300.0, "process_temperature_k": 325.0,
                       "rotational_speed_rpm": 2500.0, "torque_nm": 100.0, "tool_wear_min": 500.0}
    assert client.post("/predict", json=example).status_code == 200
    assert spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/Reading")
    assert client.get("/docs").status_code == 200


def test_unexpected_errors_are_json_500(served):
    from fastapi.testclient import TestClient

    from services.inference.app import create_app

    with TestClient(create_app(served, instance_id="boom"), raise_server_exceptions=False) as c:
        def broken(*_):
            raise RuntimeError("kaboom")

        c.app.state.service.holder.current.predict_row = broken
        c.app.state.service.holder.current.predict_many = broken
        r = c.post("/predict", json=SNAKE)
        assert r.status_code == 500
        assert r.json()["detail"].startswith("internal error (RuntimeError)")
        assert c.get("/health").status_code == 200


def test_not_ready_without_a_model(served):
    """A pin whose files are missing: the service starts, says why in /ready, and refuses predictions with 503."""
    from fastapi.testclient import TestClient

    from services.inference.app import create_app

    settings = served.model_copy(update={"deployment": served.deployment.model_copy(update={"model_version": "v9"})})
    with TestClient(create_app(settings, instance_id="empty")) as c:
        r = c.get("/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["ready"] is False and body["last_swap_failure"]["version"] == "v9"
        assert "v9" in body["detail"]
        assert c.post("/predict", json=SNAKE).status_code == 503
        assert c.get("/model").status_code == 503
        assert c.get("/health").status_code == 200


def test_one_row_and_batch_paths_agree_on_many_readings(client, served):
    """The coalesced single-row path and the batch path give the same numbers for random readings."""
    rng = np.random.default_rng(0)
    readings = [{"type": str(rng.choice(["L", "M", "H"])), "air_temperature_k": float(rng.uniform(295, 305)),
                 "process_temperature_k": float(rng.uniform(305, 315)), "rotational_speed_rpm": float(rng.uniform(1200, 2800)),
                 "torque_nm": float(rng.uniform(5, 75)), "tool_wear_min": float(rng.uniform(0, 250))} for _ in range(20)]
    batch = client.post("/predict/batch", json={"readings": readings}).json()["predictions"]
    for reading, b in zip(readings, batch):
        assert client.post("/predict", json=reading).json()["failure_probability"] == pytest.approx(b["failure_probability"], abs=1e-7)


def test_inline_mode_gives_the_same_answers(served, monkeypatch, client):
    from fastapi.testclient import TestClient

    from services.inference.app import create_app

    dep = served.deployment
    inline_settings = served.model_copy(update={"deployment": dep.model_copy(update={
        "coalesce": dep.coalesce.model_copy(update={"enabled": False})})})
    with TestClient(create_app(inline_settings, instance_id="inline")) as inline:
        assert inline.app.state.service.predictor.coalesce is False
        for reading in (SNAKE, FAILING):
            a = inline.post("/predict", json=reading).json()
            b = client.post("/predict", json=reading).json()
            assert a["failure_probability"] == b["failure_probability"] and a["prediction"] == b["prediction"]


def test_lineage_route_shows_the_chain_of_a_prediction(client, served):
    rid = client.post("/predict", json=SNAKE).json()["request_id"]
    r = client.get(f"/lineage/{rid}")
    assert r.status_code == 200, r.text
    chain = r.json()
    assert chain["prediction"]["request_id"] == rid and chain["model"]["version"] == "v1"
    assert chain["data"]["version"] == served.data.version
    assert chain["raw"]["files"][0]["sha256_on_disk"] == served.dataset.raw_sha256
    missing = client.get("/lineage/no-such-request")
    assert missing.status_code == 404 and "no-such-request" in missing.json()["detail"]
    bad = client.get("/lineage/" + "x" * 200)
    assert bad.status_code == 422 and "request_id" in bad.json()["detail"]


def test_a_label_of_1_0_is_the_integer_1_and_strings_or_booleans_are_refused(client):
    """JSON Schema counts 1.0 as an integer, so the service does: it is recorded as 1."""
    svc = client.app.state.service
    r = client.post("/feedback", json={"request_id": "abc-0000001", "label": 1.0})
    assert r.status_code == 200 and r.json()["label"] == 1
    assert lines(svc.feedback_log_path)[-1]["label"] == 1 and isinstance(lines(svc.feedback_log_path)[-1]["label"], int)
    for bad in ("1", True, 0.5, 2.0):
        assert client.post("/feedback", json={"request_id": "abc-0000001", "label": bad}).status_code == 422, bad


def test_a_wrong_method_is_405_with_allow(client):
    r = client.request("TRACE", "/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert client.delete("/lineage/abc").headers["allow"] == "GET"


def test_the_document_states_the_lineage_id_pattern(client):
    doc = client.get("/openapi.json").json()
    (param,) = doc["paths"]["/lineage/{request_id}"]["get"]["parameters"]
    assert param["schema"]["pattern"] == r"^[A-Za-z0-9_.:-]{1,128}$"
    assert "429" in doc["paths"]["/lineage/{request_id}"]["get"]["responses"]


def test_the_api_key_comes_from_the_environment_or_a_secrets_file(tmp_path):
    from shared.config import api_key_from_env
    from shared.errors import ConfigError

    assert api_key_from_env({}) is None
    assert api_key_from_env({"CLOCKWORK_API_KEY": " k1 "}) == "k1"
    secret = tmp_path / "key"
    secret.write_text("k2\n")
    assert api_key_from_env({"CLOCKWORK_API_KEY_FILE": str(secret)}) == "k2"
    for env, why in (({"CLOCKWORK_API_KEY": ""}, "empty"), ({"CLOCKWORK_API_KEY_FILE": str(tmp_path / "no")}, "cannot")):
        with pytest.raises(ConfigError, match=why):
            api_key_from_env(env)


def test_lineage_lookups_are_rate_bounded_and_the_overflow_is_a_fast_429(served):
    """One slot held >= 0.25 s per lookup, one more waiting: of four at once two are answered (0.25 s apart)
    and two are refused 429 with Retry-After at once."""
    import concurrent.futures
    import time

    import httpx

    from services.inference.app import create_app
    from tests.conftest import LiveServer

    security = served.security.model_copy(
        update={"lineage_concurrency": 1, "lineage_waiting": 1, "lineage_min_interval_s": 0.25}
    )
    settings = served.model_copy(update={"security": security})
    with LiveServer(create_app(settings, instance_id="paced-1", api_key=None)) as server:
        def lookup(_):
            t = time.monotonic()
            r = httpx.get(f"{server.url}/lineage/no-such-request", timeout=60)
            return r.status_code, time.monotonic() - t, r.headers.get("retry-after")

        assert lookup(0)[0] == 404  # the lookup process is started (its start is not what is measured)
        time.sleep(0.3)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = sorted(pool.map(lookup, range(4)), key=lambda a: a[1])
    assert sorted(s for s, _, _ in answers) == [404, 404, 429, 429], answers
    refused = [a for a in answers if a[0] == 429]
    answered = [a for a in answers if a[0] == 404]
    assert all(a[2] == str(settings.security.lineage_retry_after_s) for a in refused), answers
    assert max(a[1] for a in refused) < answered[0][1], answers  # refused at once, not after a wait
    assert answered[0][1] >= 0.25 and answered[1][1] >= 0.5, answers  # each holds its slot 0.25 s


def test_a_lineage_child_that_dies_is_answered_503_and_replaced(client):
    """Lookups run in a child process; killed, its lookup is a 503 naming the exit code and the next one starts
    a new child: the serving process never runs a lookup itself."""
    import os
    import signal

    rid = client.post("/predict", json=SNAKE).json()["request_id"]
    assert client.get(f"/lineage/{rid}").status_code == 200
    (child,) = client.app.state.service.lineage.children
    assert child.pid != os.getpid()
    os.kill(child.pid, signal.SIGKILL)
    r = client.get(f"/lineage/{rid}")
    # the exit code it names is -9, or 255 where another reaper collected the child first (asyncio's watcher)
    assert r.status_code == 503 and re.search(r"exit code (-9|255)\b", r.json()["detail"]), r.text
    again = client.get(f"/lineage/{rid}")
    assert again.status_code == 200 and again.json()["request_id"] == rid
    (replacement,) = client.app.state.service.lineage.children
    assert replacement.pid != child.pid
