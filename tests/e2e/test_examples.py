"""Every data set's whole life from `--config` alone, over real processes, real Redis and real HTTP.

For the root config.yaml (AI4I) and every examples/*/config.yaml: prep -> bootstrap a model -> serve -> /predict
with the data set's raw headers and with its names -> replay a drift recipe (labels later) -> one monitoring cycle
flags the drifted column -> retrain by one Redis message -> the gate decides -> promotion (if any) reaches the
service -> lineage of a served prediction leads back to the raw file's sha256. No code knows which data set it is.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from shared.config import load_settings
from shared.paths import Paths
from shared.registry import Registry
from tests.conftest import ROOT, free_port, wait_for

CONFIGS = [ROOT / "config.yaml", *sorted((ROOT / "examples").glob("*/config.yaml"))]
REPLAY_ROWS = 600


def _project(src: Path, dest: Path, redis_url: str) -> Path:
    """A copy of the data set's config and raw data, with a test Redis and quick reloads."""
    cfg = yaml.safe_load(src.read_text())
    volume = src.parent / cfg["volume_root"]
    raw = dest / "volumes" / cfg["dataset"]["raw_file"]
    raw.parent.mkdir(parents=True)
    shutil.copyfile(volume / cfg["dataset"]["raw_file"], raw)
    cfg["volume_root"] = "volumes"
    cfg["redis"]["url"] = redis_url
    cfg["deployment"]["reload_interval_s"] = 0.2
    cfg["monitoring"]["gate"]["window_size"] = 200
    path = dest / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _cli(*args: str, config: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args, "--config", str(config)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name if p.parent != ROOT else "root")
def test_the_whole_life_runs_on_every_data_set_from_config_alone(config, tmp_path, redis_server, redis_client):
    import os

    path = _project(config, tmp_path / "project", redis_server.url)
    settings = load_settings(path, env={})
    ds = settings.dataset
    env = {**os.environ, "CLOCKWORK_CONFIG": str(path)}
    env.pop("CLOCKWORK_REDIS_URL", None)

    _cli("services.prep", "run", config=path, env=env)
    _cli("services.trainer", "bootstrap", config=path, env=env)
    registry = Registry(paths=Paths.from_settings(settings))
    assert registry.versions() == ["v1"]

    port = free_port()
    log = open(tmp_path / "inference.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "services.inference", "serve", "--config", str(path),
                               "--instance-id", "e2e-example"], env={**env, "CLOCKWORK_PORT": str(port)},
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _ok(f"{url}/ready"), 60, what="inference ready")

        # /predict with the raw file's headers and with the names: the same answer.
        prod = Paths.from_settings(settings).data_version_dir(settings.data.versions.split) / "production.csv"
        import pandas as pd

        row = pd.read_csv(prod).iloc[0]
        by_name = {c: (row[c].item() if hasattr(row[c], "item") else row[c]) for c in ds.feature_names}
        by_source = {ds.column(c).source: v for c, v in by_name.items()}
        a = requests.post(f"{url}/predict", json=by_name, timeout=10)
        b = requests.post(f"{url}/predict", json=by_source, timeout=10)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.json()["failure_probability"] == b.json()["failure_probability"]
        # An undeclared level of a categorical feature is refused naming the field and the allowed levels.
        for cat in ds.categorical:
            bad = requests.post(f"{url}/predict", json={**by_name, cat.name: "no-such-level"}, timeout=10)
            assert bad.status_code == 422 and cat.name in bad.text and cat.levels[0] in bad.text, bad.text
        # /docs' document shows the data set's own columns and units.
        doc = json.dumps(requests.get(f"{url}/openapi.json", timeout=10).json(), ensure_ascii=False)
        for col in ds.numeric:
            assert col.name in doc and col.source in doc

        # Replay a drift recipe, labels later; one monitoring cycle flags the drifted column.
        recipe = settings.data.day2.recipes[0]
        _cli("services.monitor", "replay", "--dataset", recipe.name, "--rate", "2000", "--limit", str(REPLAY_ROWS),
             "--url", url, "--feedback-delay", "0", "--no-progress", config=path, env=env)
        _cli("services.monitor", "run", "--once", config=path, env=env, timeout=600)
        report = json.loads((Paths.from_settings(settings).reports_dir / "latest.json").read_text())
        assert f"drift:{recipe.column}" in report["fired"], report["fired"]

        # The monitor's own retrain message, and one pushed by hand: each job ends done with a new version and a
        # gate decision.
        assert report["trigger"]["status"] == "sent", report["trigger"]
        _cli("services.trainer", "push", "--id", "e2e-retrain-1", "--reason", "example e2e", config=path, env=env)
        _cli("services.trainer", "worker", "--max-jobs", "2", "--poll", "0.2", config=path, env=env, timeout=900)
        monitor_job = json.loads(
            _cli("services.trainer", "status", report["trigger"]["message_id"], config=path, env=env).stdout
        )
        assert monitor_job["status"] == "done", monitor_job
        status = json.loads(_cli("services.trainer", "status", "e2e-retrain-1", config=path, env=env).stdout)
        assert status["status"] == "done", status
        assert registry.versions()[-1] == status["version"] != "v1"
        md = registry.metadata(status["version"])
        assert md["gate"]["decision"] in ("promote", "keep") and md["data_version"] != settings.data.version
        if md["gate"]["decision"] == "promote":
            assert wait_for(lambda: requests.get(f"{url}/model", timeout=5).json()["model_version"]
                            == status["version"], 30, what="the promoted version served")

        # Lineage of a served prediction: back to the raw file's sha256.
        rid = a.json()["request_id"]
        lineage = requests.get(f"{url}/lineage/{rid}", timeout=30)
        assert lineage.status_code == 200, lineage.text
        assert ds.raw_sha256 in lineage.text
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        time.sleep(0.1)
        return False
