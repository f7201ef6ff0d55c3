"""Local mode, as a user would run it: one command starts an embedded Redis and the four services; /predict
answers; one Redis message registers a new version; editing the pin swaps it; Ctrl-C stops everything."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
import requests
import yaml

from tests.conftest import ROOT, free_port, write_project

pytestmark = pytest.mark.slow


def _wait(predicate, timeout, what, proc, log):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"local mode exited ({proc.returncode}) while waiting for {what}\n{log.read_text()[-4000:]}")
        try:
            if predicate():
                return
        except (requests.RequestException, redis.RedisError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-4000:]}")


def test_local_mode_runs_retrains_swaps_and_stops_cleanly(tmp_path):
    http_port, redis_port = free_port(), free_port()
    cfg_path = write_project(tmp_path / "project", **{"deployment.port": http_port,
                                                      "redis.url": f"redis://127.0.0.1:{redis_port}/0",
                                                      "deployment.reload_interval_s": 0.5,
                                                      "monitoring.interval_s": 2.0})
    log = tmp_path / "local.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOCKWORK_")}
    proc = subprocess.Popen([sys.executable, "scripts/run_local.py", "--config", str(cfg_path)], cwd=ROOT, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        _wait(lambda: requests.get(f"{url}/ready", timeout=2).status_code == 200, 120, "/ready", proc, log)
        r = requests.post(f"{url}/predict", json={"type": "M", "air_temperature_k": 298.1, "process_temperature_k": 308.6,
                                                  "rotational_speed_rpm": 1551, "torque_nm": 42.8, "tool_wear_min": 0}, timeout=5)
        assert r.status_code == 200 and r.json()["model_version"] == "v1"

        client = redis.Redis(host="127.0.0.1", port=redis_port)
        client.lpush("clockwork:retrain", json.dumps({"id": "local-1", "reason": "local mode test"}))
        models = tmp_path / "project" / "volumes" / "models"
        _wait(lambda: client.hget("clockwork:job:local-1", "status") == b"done", 120, "job done", proc, log)
        assert json.loads((models / "v2" / "metadata.json").read_text())["trigger"]["message_id"] == "local-1"

        cfg = yaml.safe_load(cfg_path.read_text())
        if cfg["deployment"]["model_version"] != "v2":
            cfg_path.write_text(cfg_path.read_text().replace("model_version: v1", "model_version: v2"))
        _wait(lambda: requests.get(f"{url}/model", timeout=2).json()["model_version"] == "v2", 30, "swap to v2", proc, log)
    finally:
        os.killpg(proc.pid, signal.SIGINT) if proc.poll() is None else None
        rc = proc.wait(60)
    text = log.read_text()
    assert "all stopped" in text, text[-3000:]
    assert rc == 0, text[-3000:]
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=redis_port, socket_connect_timeout=1).ping()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=2)
