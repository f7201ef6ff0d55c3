"""docker compose end to end, as a user would: up, curl /predict, push a retrain message, see a new version,
edit the pin on the host and see the served version swap without a restart, down.

Runs only when a Docker engine answers (../shared/tools/docker-sandbox gives one on these machines).
The project is copied to a temporary folder so the repository's own volume is untouched.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.compose, pytest.mark.slow]


def _engine() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _compose_cmd() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        try:
            if subprocess.run([*cmd, "version"], capture_output=True, timeout=20).returncode == 0:
                return cmd
        except (OSError, subprocess.SubprocessError):
            continue
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not _engine() or _compose_cmd() is None:
        pytest.skip("no Docker engine answers (run ../shared/tools/docker-sandbox)")
    dest = tmp_path_factory.mktemp("compose") / "clockwork"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shutil.copytree(ROOT / ".git", dest / ".git")
    port = free_port()
    project = f"cwtest{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CLOCKWORK_PORT": str(port), "REDIS_PASSWORD": "test-secret", "COMPOSE_PROJECT_NAME": project}
    compose = [*_compose_cmd(), "-p", project]

    def run(*args, timeout=600, check=True):
        return subprocess.run([*compose, *args], cwd=dest, env=env, capture_output=True, text=True, timeout=timeout, check=check)

    up = subprocess.Popen([*compose, "up", "--build"], cwd=dest, env=env, stdout=open(dest / "compose.log", "w"),
                          stderr=subprocess.STDOUT)
    try:
        yield {"dest": dest, "url": f"http://127.0.0.1:{port}", "run": run, "up": up}
    finally:
        run("down", "-v", "--remove-orphans", timeout=300, check=False)
        up.wait(60)
        # Files written by containers as root: remove them through a container-free path.
        subprocess.run(["rm", "-rf", str(dest)], check=False)


def _wait(predicate, timeout, what, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except requests.RequestException:
            pass
        time.sleep(2)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


READING = {"Type": "L", "Air temperature [K]": 298.9, "Process temperature [K]": 309.1,
           "Rotational speed [rpm]": 2861, "Torque [Nm]": 4.6, "Tool wear [min]": 143}


def test_compose_up_serves_retrains_and_swaps_on_pin_edit(stack):
    url, dest, run = stack["url"], stack["dest"], stack["run"]
    log = dest / "compose.log"
    _wait(lambda: requests.get(f"{url}/ready", timeout=3).status_code == 200, 420, "inference /ready", log)

    r = requests.post(f"{url}/predict", json=READING, timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "v1" and 0.0 <= body["failure_probability"] <= 1.0

    # Redis is not published on the host, and wants the password.
    pushed = run("exec", "-T", "redis", "redis-cli", "-a", "test-secret", "--no-auth-warning",
                 "LPUSH", "clockwork:retrain", json.dumps({"id": "compose-1", "reason": "compose test"}))
    assert pushed.stdout.strip().isdigit(), pushed.stdout + pushed.stderr
    models = dest / "volumes" / "models"
    _wait(lambda: (models / "v2" / "metadata.json").is_file(), 300, "v2 registered", log)
    meta = json.loads((models / "v2" / "metadata.json").read_text())
    assert meta["trigger"]["message_id"] == "compose-1"
    # The image has no git binary: the commit is read from the .git folder copied into it.
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert meta["git"]["commit"] == head
    status = run("exec", "-T", "redis", "redis-cli", "-a", "test-secret", "--no-auth-warning",
                 "HGET", "clockwork:job:compose-1", "status")
    assert status.stdout.strip() == "done"

    # Edit the pin on the host, as an editor that replaces the file would.
    cfg = dest / "config.yaml"
    text = cfg.read_text()
    pinned = "model_version: v2" in text
    if not pinned:
        tmp = dest / "config.yaml.new"
        tmp.write_text(text.replace("model_version: v1", "model_version: v2", 1))
        os.replace(tmp, cfg)
    _wait(lambda: requests.get(f"{url}/model", timeout=3).json().get("model_version") == "v2", 60, "swap to v2", log)
    r = requests.post(f"{url}/predict", json=READING, timeout=5)
    assert r.json()["model_version"] == "v2"
    deploy_log = (dest / "volumes" / "logs" / "deployment_log.csv").read_text()
    assert ",swap,v2,v1," in deploy_log or pinned
