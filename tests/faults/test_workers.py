"""deployment.workers: 2 inference processes on one port and one volume, under load over real HTTP.

What goes in comes out across both: every answered prediction is in one of the two workers' logs, a pin flip
reaches both with no failed request, SIGTERM to the parent drains both and it exits 0; a worker that cannot
start stops the lot with exit 1.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from services.inference.logs import PredictionLog
from shared import deploylog, pin
from shared.config import load_settings
from shared.paths import Paths
from tests.conftest import wait_for
from tests.faults.helpers import Inference, Load, logged_predictions
from tests.trainer.helpers import with_config

pytestmark = pytest.mark.slow
IDS = ["w-0", "w-1"]


@pytest.fixture
def two(tmp_path, served_template):
    """v1 pinned, v2 registered (tests/conftest.py's project: the faults suite's smaller v2 fails the probe's
    [0, 1] check with float32 sums of 1.0000001, a holder matter), 2 workers polling config.yaml every 0.1 s."""
    dest = tmp_path / "project"
    shutil.copytree(served_template, dest)
    overrides = {"deployment.workers": 2, "deployment.drain_grace_s": 5.0, "deployment.reload_interval_s": 0.1}
    return with_config(load_settings(dest / "config.yaml", env={}), **overrides)


@pytest.fixture
def spawn(tmp_path):
    """Start the parent (`python -m services.inference serve --instance-id w`); killed at teardown if still up
    (its workers then get SIGTERM from PR_SET_PDEATHSIG)."""
    started: list[Inference] = []

    def start(settings, *, ready: bool = True) -> Inference:
        server = Inference(settings, "w", log=tmp_path / "inference.log")
        started.append(server)
        if ready:
            server.ready()
            wait_for(lambda: all_started(settings), 30, what="both workers ready")
        return server

    yield start
    for server in started:
        server.kill()


def all_started(settings) -> bool:
    rows = deploylog.read_rows(Paths.from_settings(settings))
    return {r["instance_id"] for r in rows if r["event"] == "start"} >= set(IDS)


def instances_answering(url: str, n: int = 60) -> set[str]:
    """The instance ids /model names over `n` fresh connections."""
    return {httpx.get(f"{url}/model", timeout=5).json()["instance_id"] for _ in range(n)}


def logged_ids(settings) -> list[str]:
    paths = Paths.from_settings(settings)
    return [r["request_id"] for iid in IDS for r in logged_predictions(paths, iid)]


def test_two_workers_share_the_port_log_every_answer_and_drain_on_sigterm(two, spawn):
    server = spawn(two)
    assert instances_answering(server.url) == set(IDS)
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert any(f'clockwork_inference_instance{{instance_id="{i}"}} 1.0' in metrics for i in IDS), metrics[:2000]
    with Load(server.url, threads=6) as load:
        load.wait_more(600)
        code = server.stop(timeout=30)  # SIGTERM under load
    assert code == 0, server.log()[-3000:]
    assert "every worker drained (w-0, w-1)" in server.log()
    answered = [a.request_id for a in load.answered]
    assert len(answered) >= 600
    assert {a.status for a in load.failed} <= {-1}, "only refused connections after the stop, no HTTP error"
    logged = logged_ids(two)
    assert sorted(logged) == sorted(answered), f"answered {len(answered)}, logged {len(logged)}"
    per_instance = {iid: len(logged_predictions(Paths.from_settings(two), iid)) for iid in IDS}
    assert all(n > 0 for n in per_instance.values()), per_instance


def test_a_pin_flip_reaches_both_workers_with_no_failed_request(two, spawn):
    server = spawn(two)
    paths = Paths.from_settings(two)
    with Load(server.url, threads=6) as load:
        load.wait_more(300)
        pin.set_pin(two.config_path, "v2", paths=paths, event="promote")

        def swapped() -> bool:
            rows = deploylog.read_rows(paths)
            return {r["instance_id"] for r in rows if r["event"] == "swap" and r["version"] == "v2"} >= set(IDS)

        wait_for(swapped, 10 * two.deployment.reload_interval_s + 5, what="both workers swapped to v2")
        load.wait_more(300)
    assert load.failed == [], load.failed[:5]
    versions = {iid: {r["model_version"] for r in logged_predictions(paths, iid)} for iid in IDS}
    assert all(v == {"v1", "v2"} for v in versions.values()), versions
    assert instances_answering(server.url, 20) <= set(IDS)
    assert {httpx.get(f"{server.url}/model", timeout=5).json()["model_version"] for _ in range(20)} == {"v2"}
    assert server.stop(timeout=30) == 0, server.log()[-3000:]
    assert sorted(logged_ids(two)) == sorted(a.request_id for a in load.answered)


def test_a_worker_that_cannot_start_stops_the_others_and_the_parent_exits_1(two, spawn):
    held = PredictionLog(Paths.from_settings(two).prediction_log("w-1"))  # another "instance" holds w-1's log
    try:
        server = spawn(two, ready=False)
        code = server.wait(60)
    finally:
        held.close()
    log = server.log()
    assert code == 1, log[-3000:]
    assert "is held by another running instance" in log
    assert "worker w-1 exited on its own" in log
