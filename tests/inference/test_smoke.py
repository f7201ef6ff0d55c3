"""The smoke script against a live service started as `python -m services.inference` (a subprocess)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import ROOT, free_port


def smoke(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.inference.smoke", "--url", url, "--timeout", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture
def service(served):
    port = free_port()
    env = dict(os.environ, CLOCKWORK_PORT=str(port), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "services.inference", "--config", str(served.config_path),
                             "--instance-id", "smoke"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"service exited: {proc.stdout.read()}")
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise AssertionError("service not ready within 60s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_smoke_passes_against_the_service(service, paths):
    result = smoke(service)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASS") == 3 and "3/3 smoke tests passed" in result.stdout
    assert (paths.prediction_log_dir / "smoke.jsonl").read_text().count("\n") >= 2


def test_smoke_fails_against_a_wrong_url():
    result = smoke(f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert result.stdout.count("FAIL") == 3 and "Traceback" not in result.stdout + result.stderr


def test_smoke_fails_against_a_service_without_a_model(served):
    from services.inference.app import create_app
    from tests.inference.conftest import LiveServer

    settings = served.model_copy(update={"deployment": served.deployment.model_copy(update={"model_version": "v9"})})
    with LiveServer(create_app(settings, instance_id="nomodel")) as live:
        result = smoke(live.url)
    assert result.returncode == 1
    assert "503" in result.stdout
