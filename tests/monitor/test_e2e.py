"""The closed loop over real parts: real Redis, a temporary volume, inference over real HTTP (uvicorn),
replay of a drifted day-2 set -> monitor flags the drift -> exactly one retrain message -> worker trains
vN+1 on a new data version -> gate decides -> if promoted, inference serves vN+1 and the deployment log
shows the swap."""
from __future__ import annotations

import shutil

import pytest
import requests
import yaml

from services.monitor.monitor import Monitor
from services.monitor.replay import replay
from shared.config import load_settings
from shared.datastore import DataStore
from shared.deploylog import read_rows
from shared.labelled import load_labelled
from shared.paths import Paths, RedisKeys
from shared.pin import read_pin
from shared.registry import Registry
from shared.schemas import parse_retrain_message
from tests.conftest import LiveServer, wait_for

# With these, today's trainer produces a candidate the gate promotes (F1 0.323 vs 0.303 on the 300-row
# window, 7 failures), so the swap path runs; the test accepts "keep" too, as the loop allows.
RECIPE = "accelerated_tool_wear"
ROWS = 1000
GATE_WINDOW = 300


@pytest.fixture
def loop_project(tmp_path, trained_template, redis_server):
    dest = tmp_path / "project"
    shutil.copytree(trained_template, dest)
    cfg_path = dest / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["redis"]["url"] = redis_server.url
    cfg["deployment"]["reload_interval_s"] = 0.2
    cfg["monitoring"]["gate"]["window_size"] = GATE_WINDOW
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_settings(cfg_path, env={})


def test_drifted_traffic_closes_the_loop(loop_project, redis_client, record_property):
    from services.trainer.worker import Worker

    settings = loop_project
    paths = Paths.from_settings(settings)
    keys = RedisKeys.from_settings(settings)
    registry = Registry(paths=paths)
    assert registry.versions() == ["v1"] and read_pin(settings.config_path) == "v1"

    from services.inference.app import create_app

    with LiveServer(create_app(settings, instance_id="e2e-1")) as api:
        # 1. Day-2 traffic with accelerated tool wear; labels arrive late.
        result = replay(settings=settings, dataset=RECIPE, rate=5000, limit=ROWS, url=api.url,
                        feedback_delay=0.05, progress=False)
        assert (result.predicted, result.feedback_sent, result.predict_errors, result.feedback_errors) == (ROWS, ROWS, 0, 0)

        # 2. The monitor flags the drifted feature, not the untouched ones, and sends one message.
        monitor = Monitor(settings=settings, redis_client=redis_client)
        report = monitor.cycle()
        assert report.ingest.new_labelled == ROWS
        assert "drift:tool_wear_min" in report.fired
        assert not {"drift:rotational_speed_rpm", "drift:torque_nm", "drift:type"} & set(report.fired)
        assert report.trigger.status == "sent"
        assert monitor.cycle().trigger.status == "suppressed"
        (raw,) = redis_client.lrange(keys.retrain_queue, 0, -1)
        message = parse_retrain_message(raw)
        assert message.id == report.trigger.message_id
        assert len(load_labelled(paths)) == ROWS

        # 3. The worker trains v2 on a new data version and the gate decides.
        assert Worker(settings=settings, redis=redis_client, max_jobs=1, poll_s=0.2).run() == 1
        assert registry.versions() == ["v1", "v2"]
        md = registry.metadata("v2")
        assert md["trigger"]["message_id"] == message.id
        assert md["data_version"] != settings.data.version
        assert DataStore(paths=paths).entries_for(md["data_version"])
        gate = md["gate"]
        record_property("gate", f"{gate['decision']}: {gate['reason']}")
        assert gate["decision"] in ("promote", "keep") and gate["serving"]["version"] == "v1"
        assert gate["window"]["rows"] == GATE_WINDOW and gate["metric"] == settings.monitoring.gate.metric
        assert redis_client.llen(keys.retrain_queue) == 0

        # 4. Promoted: the pin moves, inference swaps without a restart, the deployment log shows it.
        if gate["decision"] == "promote":
            assert read_pin(settings.config_path) == "v2"
            served = wait_for(lambda: requests.get(f"{api.url}/model", timeout=5).json().get("model_version") == "v2")
            assert served, requests.get(f"{api.url}/model", timeout=5).json()
            swaps = [r for r in read_rows(paths) if r["event"] == "swap" and r["version"] == "v2"]
            assert swaps and swaps[-1]["previous_version"] == "v1"
            answer = requests.post(f"{api.url}/predict", json={"type": "L", "air_temperature_k": 300.0, "process_temperature_k": 310.0,
                                                               "rotational_speed_rpm": 1500, "torque_nm": 40.0, "tool_wear_min": 10},
                                   timeout=5).json()
            assert answer["model_version"] == "v2"
        else:
            assert read_pin(settings.config_path) == "v1"
