"""POST /feedback/batch: labels in bulk, each validated as /feedback validates one, all logged in one write."""
from __future__ import annotations

import json

import pytest

from services.inference.app import create_app
from shared.schemas import FeedbackRecord
from tests.inference.test_api import SNAKE
from tests.inference.test_logs import DiskFills


def feedback_lines(svc) -> list[FeedbackRecord]:
    path = svc.feedback_log_path
    text = path.read_text() if path.exists() else ""
    return [FeedbackRecord.model_validate_json(line) for line in text.splitlines()]


def test_feedback_batch_logs_every_label_and_says_how_many(client):
    svc = client.app.state.service
    ids = [client.post("/predict", json=SNAKE).json()["request_id"] for _ in range(3)]
    body = {"labels": [{"request_id": ids[0], "label": 1}, {"request_id": ids[1], "label": 0.0},
                       {"request_id": ids[2], "label": 1.0}]}
    r = client.post("/feedback/batch", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"recorded": 3}
    records = feedback_lines(svc)
    assert [(f.request_id, f.label) for f in records] == [(ids[0], 1), (ids[1], 0), (ids[2], 1)]
    assert len({f.time for f in records}) == 1  # one write, one time


def test_feedback_batch_lines_match_single_feedback_lines(client):
    svc = client.app.state.service
    client.post("/feedback", json={"request_id": "one-1", "label": 1})
    client.post("/feedback/batch", json={"labels": [{"request_id": "many-1", "label": 1}]})
    single, batched = (json.loads(line) for line in svc.feedback_log_path.read_text().splitlines())
    assert set(single) == set(batched) == {"time", "request_id", "label"}


@pytest.mark.parametrize("bad", [{"request_id": "a", "label": 2}, {"request_id": "a", "label": True},
                                 {"request_id": "a", "label": "1"}, {"request_id": "../x y", "label": 1},
                                 {"label": 1}, {"request_id": "a", "label": 1, "extra": 0}])
def test_feedback_batch_refuses_the_whole_body_for_one_bad_item_naming_it(client, bad):
    svc = client.app.state.service
    r = client.post("/feedback/batch", json={"labels": [{"request_id": "ok-1", "label": 0}, bad]})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("invalid input: labels[1]"), r.json()["detail"]
    assert feedback_lines(svc) == []  # nothing of the body was logged, the good item neither


@pytest.mark.parametrize("body", [{"labels": []}, {}, [], {"labels": {"request_id": "a", "label": 1}}])
def test_feedback_batch_refuses_empty_or_misshapen_bodies(client, body):
    assert client.post("/feedback/batch", json=body).status_code == 422


def test_feedback_batch_over_max_feedback_rows_is_a_422_naming_the_key(client, served):
    n = served.deployment.max_feedback_rows + 1
    r = client.post("/feedback/batch", json={"labels": [{"request_id": f"r-{i}", "label": 0} for i in range(n)]})
    assert r.status_code == 422
    assert "max_feedback_rows" in r.json()["detail"]
    assert feedback_lines(client.app.state.service) == []


def test_feedback_batch_on_a_full_disk_is_a_503_and_logs_nothing(client, monkeypatch):
    svc = client.app.state.service
    client.post("/feedback", json={"request_id": "before-1", "label": 1})
    before = svc.feedback_log_path.read_bytes()
    DiskFills(monkeypatch, room=len(before) // 2 + 5)  # part of the batch fits, then the disk is full
    labels = [{"request_id": f"r-{i}", "label": i % 2} for i in range(4)]
    r = client.post("/feedback/batch", json={"labels": labels})
    assert r.status_code == 503 and "feedback log not writable" in r.json()["detail"]
    assert svc.feedback_log_path.read_bytes() == before
    monkeypatch.undo()
    assert client.post("/feedback/batch", json={"labels": labels}).json() == {"recorded": 4}


def test_feedback_batch_requires_the_key_when_one_is_set(served):
    from fastapi.testclient import TestClient

    body = {"labels": [{"request_id": "k-1", "label": 1}]}
    with TestClient(create_app(served, instance_id="keyed-fb", api_key="s3cret")) as c:
        assert c.post("/feedback/batch", json=body).status_code == 401
        assert c.post("/feedback/batch", json=body, headers={"X-API-Key": "s3cret"}).json() == {"recorded": 1}


def test_feedback_batch_is_declared_with_every_status(client):
    op = client.get("/openapi.json").json()["paths"]["/feedback/batch"]["post"]
    assert set(op["responses"]) >= {"200", "400", "408", "413", "415", "422", "503"}
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" in schema or schema.get("properties", {}).get("labels")
