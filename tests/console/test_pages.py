"""The console in-process: every page renders from a real project, actions need the key, 100 versions load fast."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from fastapi.testclient import TestClient

from shared import deploylog
from shared.paths import Paths
from shared.pin import read_pin

KEY = "console-test-key"
PAGES = ["/", "/registry", "/registry/diff?a=v1&b=v2", "/deployments", "/data", "/monitoring", "/jobs", "/lineage"]


def _client(settings, redis_client, *, api_key=KEY):
    from services.console.app import create_app

    return TestClient(create_app(settings, redis=redis_client, api_key=api_key, inference_url="http://127.0.0.1:9"))


def test_every_page_renders_and_says_inference_is_unreachable(served, redis_client):
    with _client(served, redis_client) as c:
        for url in PAGES:
            r = c.get(url)
            assert r.status_code == 200, (url, r.text[:300])
            assert "<h1>" in r.text
        assert "UNREACHABLE" in c.get("/").text
        assert "v2" in c.get("/registry").text
        assert "fields differ" in c.get("/registry/diff?a=v1&b=v2").text


def test_an_action_without_a_configured_key_is_refused(served, redis_client):
    with _client(served, redis_client, api_key=None) as c:
        r = c.post("/actions/promote", data={"version": "v2", "api_key": "anything"})
    assert r.status_code == 403 and "no API key is configured" in r.text
    assert read_pin(served.config_path) == "v1"


def test_promote_needs_the_right_key_and_writes_the_pin_and_the_log(served, redis_client):
    paths = Paths.from_settings(served)
    before = len(deploylog.read_rows(paths))
    with _client(served, redis_client) as c:
        assert c.post("/actions/promote", data={"version": "v2", "api_key": "wrong"}).status_code == 401
        assert read_pin(served.config_path) == "v1"
        r = c.post("/actions/promote", data={"version": "v2"}, headers={"X-API-Key": KEY})
        assert r.status_code == 200, r.text
    assert read_pin(served.config_path) == "v2"
    rows = deploylog.read_rows(paths)
    assert len(rows) == before + 1 and rows[-1]["event"] == "promote" and rows[-1]["version"] == "v2"


def test_retrain_and_requeue_go_through_the_queue(served, redis_client):
    from shared.queue import RetrainQueue

    queue = RetrainQueue.from_settings(served, redis=redis_client)
    with _client(served, redis_client) as c:
        r = c.post("/actions/retrain", data={"reason": "from a test", "message_id": "t-1", "api_key": KEY})
        assert r.status_code == 200, r.text
        assert queue.job("t-1")["status"] == "queued"
        raw = json.dumps({"id": "t-2", "reason": "dead once"})
        redis_client.lpush(queue.keys.processing_queue, raw)
        queue.dead_letter(raw, reason="worker crashed")
        page = c.get("/jobs").text
        assert "worker crashed" in page and "t-1" in page
        record = queue.redis.lrange(queue.keys.dead_letter_queue, 0, 0)[0].decode()
        r = c.post("/actions/requeue", data={"record": record, "api_key": KEY})
        assert r.status_code == 200, r.text
    assert queue.dead_letters() == [] and queue.job("t-2")["status"] == "queued"


def test_the_registry_page_of_100_versions_loads_in_under_a_second(trained, redis_client):
    paths = Paths.from_settings(trained)
    src = paths.model_dir("v1")
    md = json.loads(paths.metadata_file("v1").read_text())
    for n in range(2, 101):
        dest = paths.model_dir(f"v{n}")
        dest.mkdir()
        shutil.copyfile(src / "model.onnx", dest / "model.onnx")
        (dest / "metadata.json").write_text(json.dumps(md | {"version": f"v{n}"}))
    with _client(trained, redis_client) as c:
        assert c.get("/registry").status_code == 200  # the first read fills the cache
        for url in ("/registry", "/data"):
            start = time.perf_counter()
            r = c.get(url)
            took = time.perf_counter() - start
            assert r.status_code == 200 and took < 1.0, (url, took)
        assert "v100" in c.get("/registry").text


@pytest.mark.parametrize("name", ["../config.yaml", "report-x.html", "latest.txt"])
def test_only_report_files_are_served(served, redis_client, name):
    with _client(served, redis_client) as c:
        assert c.get(f"/reports/{name}").status_code == 404
