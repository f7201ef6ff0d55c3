"""The retrain worker on an operator's worst day: real Redis, real `python -m services.trainer worker` processes,
SIGKILL at chosen moments. Each test ends on its LEDGER: messages sent = done + dead-lettered (+ failed), nothing
left in the queue or the processing list, and one registry version per distinct done job.

Where a kill must land at an exact point (between register and pin, between the registry rename and the log
append), the worker runs under a small launcher that replaces that one step with SIGKILL to itself and then calls
the worker's ordinary main(): the production code has no hook for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from shared.config import Settings
from shared.paths import Paths, RedisKeys
from shared.pin import read_pin
from shared.queue import RetrainQueue
from shared.registry import Registry, logged_versions
from shared.schemas import RetrainMessage, parse_utc
from tests.conftest import wait_for
from tests.faults.helpers import record_ledger
from tests.trainer.helpers import ROOT, with_config, write_labelled

LEASE_S = 1.5
FAST = {"model_params.n_estimators": 10, "model_params.max_depth": 6, "redis.lease_s": LEASE_S}

# Launchers: replace one step with SIGKILL to the worker itself, then run the real worker CLI.
KILL_AT_PIN = (
    "import os, signal, sys\n"
    "import services.trainer.retrain as retrain\n"
    "retrain.set_pin = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
    "from services.trainer.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
KILL_AT_LOG_APPEND = (
    "import os, signal, sys\n"
    "from shared.registry import Registry\n"
    "real = Registry._log_versions\n"
    "def log_versions(self, versions, *, known=None):\n"
    "    if known:  # the append right after a registration (not the repair at start)\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n"
    "    return real(self, versions, known=known)\n"
    "Registry._log_versions = log_versions\n"
    "from services.trainer.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def queue_of(settings: Settings, client) -> RetrainQueue:
    return RetrainQueue.from_settings(settings, redis=client)


def worker(
    settings: Settings, redis_url: str, *extra: str, launcher: str | None = None, log: Path | None = None
) -> subprocess.Popen:
    entry = ["-c", launcher] if launcher else ["-m", "services.trainer"]
    env = dict(os.environ, CLOCKWORK_REDIS_URL=redis_url)
    return subprocess.Popen(
        [sys.executable, *entry, "worker", "--poll", "0.2", "--config", str(settings.config_path), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w") if log else subprocess.DEVNULL,
    )


def run_worker(settings: Settings, redis_url: str, jobs: int) -> None:
    proc = worker(settings, redis_url, "--max-jobs", str(jobs))
    try:
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def trainer_cli(settings: Settings, redis_url: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CLOCKWORK_REDIS_URL=redis_url)
    return subprocess.run(
        [sys.executable, "-m", "services.trainer", *args, "--config", str(settings.config_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_ledger(
    settings: Settings, client, *, sent: int, done: list[str], failed: list[str] = (), dead: int = 0, baseline: int = 0
) -> None:
    """sent = done + dead-lettered + failed; queue and processing empty; one new version per distinct done job."""
    q = queue_of(settings, client)
    assert {i: q.job(i).get("status") for i in done} == dict.fromkeys(done, "done")
    assert {i: q.job(i).get("status") for i in failed} == dict.fromkeys(failed, "failed")
    assert len(q.dead_letters()) == dead
    assert sent == len(set(done)) + dead + len(set(failed))
    assert client.llen(q.keys.processing_queue) == 0 and client.llen(q.keys.retrain_queue) == 0
    registry = Registry(paths=Paths.from_settings(settings))
    new = registry.versions()[baseline:]
    record_ledger(os.environ.get("PYTEST_CURRENT_TEST", "worker").split(" ")[0], sent=sent, done=len(set(done)),
                  dead_lettered=dead, failed=len(set(failed)), new_versions=len(new))
    assert len(new) == len(set(done))
    assert {registry.metadata(v)["trigger"]["message_id"] for v in new} == set(done)


def test_5000_deep_evidence_is_dead_lettered_even_as_an_orphan(prepped, redis_client, redis_server):
    settings = with_config(prepped, **FAST)
    keys = RedisKeys.from_settings(settings)
    deep = '{"id":"deep","reason":"r","evidence":' + "[" * 5000 + "]" * 5000 + "}"
    # A worker died holding it: it sits in the processing list without a lease, for the orphan scan to parse.
    redis_client.lpush(keys.processing_queue, deep)
    queue_of(settings, redis_client).push(RetrainMessage(id="after-deep", reason="r"))
    run_worker(settings, redis_server.url, 2)
    (dead,) = queue_of(settings, redis_client).dead_letters()
    assert "nests 5001 levels" in dead["reason"] and dead["raw"] == deep
    assert_ledger(settings, redis_client, sent=2, done=["after-deep"], dead=1)


def test_10_mb_message_is_dead_lettered_truncated(prepped, redis_client, redis_server):
    settings = with_config(prepped, **FAST)
    keys = RedisKeys.from_settings(settings)
    big = '{"id":"big","reason":"' + "x" * (10 * 1024 * 1024) + '"}'
    redis_client.lpush(keys.retrain_queue, big)
    queue_of(settings, redis_client).push(RetrainMessage(id="after-big", reason="r"))
    run_worker(settings, redis_server.url, 2)
    (dead,) = queue_of(settings, redis_client).dead_letters()
    assert "over the limit" in dead["reason"] and "redis.max_message_bytes" in dead["reason"]
    assert dead["truncated"] and dead["raw_bytes"] == len(big)
    assert len(dead["raw"]) == settings.redis.max_message_bytes and big.startswith(dead["raw"])
    assert_ledger(settings, redis_client, sent=2, done=["after-big"], dead=1)


def test_unsafe_data_version_is_dead_lettered(prepped, redis_client, redis_server):
    settings = with_config(prepped, **FAST)
    keys = RedisKeys.from_settings(settings)
    redis_client.lpush(keys.retrain_queue, json.dumps({"id": "etc", "reason": "r", "data_version": "../../etc"}))
    queue_of(settings, redis_client).push(RetrainMessage(id="after-etc", reason="r"))
    run_worker(settings, redis_server.url, 2)
    (dead,) = queue_of(settings, redis_client).dead_letters()
    assert "data_version" in dead["reason"]
    assert queue_of(settings, redis_client).job("etc") == {}  # no job hash was made for it
    assert_ledger(settings, redis_client, sent=2, done=["after-etc"], dead=1)


def test_ids_victim_lock_then_victim_are_two_jobs(prepped, redis_client, redis_server):
    settings = with_config(prepped, **FAST)
    q = queue_of(settings, redis_client)
    q.push(RetrainMessage(id="victim:lock", reason="r"))
    q.push(RetrainMessage(id="victim", reason="r"))
    run_worker(settings, redis_server.url, 2)
    assert q.job("victim:lock")["version"] != q.job("victim")["version"]
    assert not redis_client.exists(q.keys.job_lock("victim"), q.keys.job_lock("victim:lock"))
    assert_ledger(settings, redis_client, sent=2, done=["victim:lock", "victim"])


def test_push_id_monitor_last_trigger_leaves_the_monitor_key_alone(prepped, redis_client, redis_server):
    settings = with_config(prepped, **FAST)
    keys = RedisKeys.from_settings(settings)
    redis_client.set(keys.monitor_cooldown, "2026-01-01T00:00:00Z")
    pushed = trainer_cli(settings, redis_server.url, "push", "--reason", "r", "--id", "monitor:last_trigger")
    assert pushed.returncode == 0, pushed.stderr
    run_worker(settings, redis_server.url, 1)
    assert redis_client.get(keys.monitor_cooldown) == b"2026-01-01T00:00:00Z"
    assert_ledger(settings, redis_client, sent=1, done=["monitor:last_trigger"])


def gated_project(prepped: Settings) -> Settings:
    """v1: a weak model (logistic regression, no physical features) serving; labelled rows for a gate window.
    A forest with physical features beats it on that window (F1 about 0.88 against 0.63): the gate promotes."""
    from services.trainer.train import COMMAND_TRIGGER, train_and_register
    from shared.datastore import DataStore

    weak = with_config(
        prepped,
        **FAST,
        **{
            "model_params.algorithm": "logistic_regression",
            "features.derived": False,
            "monitoring.gate.window_size": 400,
        },
    )
    assert train_and_register(weak, trigger=COMMAND_TRIGGER)["version"] == "v1"
    settings = with_config(weak, **{"model_params.algorithm": "random_forest", "features.derived": True})
    paths = Paths.from_settings(settings)
    production = DataStore(paths=paths).read_table(paths.data_version_dir(settings.data.version) / "production.csv")
    write_labelled(settings, production.iloc[:1000])
    return settings


@pytest.mark.slow
def test_kill_between_register_and_pin_the_retry_completes_the_promotion(prepped, redis_client, redis_server):
    settings = gated_project(prepped)
    q = queue_of(settings, redis_client)
    q.push(RetrainMessage(id="promote-1", reason="drift"))
    proc = worker(settings, redis_server.url, launcher=KILL_AT_PIN)
    assert proc.wait(90) == -signal.SIGKILL
    registry = Registry(paths=Paths.from_settings(settings))
    job = q.job("promote-1")
    # Died after registering v2, before the pin: the decision was recorded before it was acted on.
    assert registry.versions() == ["v1", "v2"] and read_pin(settings.config_path) == "v1"
    assert (job["status"], job["gate_decision"], job["version"]) == ("running", "promote", "v2"), job
    assert job["gate_onnx_sha256"] == registry.metadata("v2")["onnx_sha256"]
    run_worker(settings, redis_server.url, 1)
    job = q.job("promote-1")
    assert (job["status"], job["version"], job["created"], job["gate_decision"], job["promoted"]) == (
        "done",
        "v2",
        "0",
        "promote",
        "1",
    ), job
    assert read_pin(settings.config_path) == "v2"
    assert_ledger(settings, redis_client, sent=1, done=["promote-1"], baseline=1)


@pytest.mark.slow
def test_dead_workers_job_is_requeued_within_about_a_lease(prepped, redis_client, redis_server):
    settings = with_config(prepped, **{"model_params.n_estimators": 300, "redis.lease_s": 2.0})
    q = queue_of(settings, redis_client)
    q.push(RetrainMessage(id="orphan-1", reason="r"))
    proc = worker(settings, redis_server.url)
    try:
        wait_for(lambda: q.job("orphan-1").get("status") == "running", 60, what="job running")
        proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The heartbeat renewed the lease every lease/3: it is gone within about one lease of the kill.
    wait_for(lambda: not redis_client.exists(q.keys.job_lock("orphan-1")), 2.0 + 1.0, what="lease gone")
    status = trainer_cli(settings, redis_server.url, "status", "orphan-1")
    view = json.loads(status.stdout)
    assert view["status"] == "running" and view["lease"] == "none" and "lease gone" in view["note"], view
    # (the status command itself takes a second or two, more on a loaded 2-core CI machine)
    assert time.time() - killed_at < 2.0 + 1.0 + 15.0
    started_at = time.time()
    run_worker(settings, redis_server.url, 1)
    job = q.job("orphan-1")
    requeued_after = parse_utc(job["requeued_at"]).timestamp() - started_at
    # the new worker's start (a couple of seconds, more under load) + its orphan grace (min(lease, 5) s) + a poll;
    # the point: seconds, not the ten minutes of the old 600 s lease
    assert requeued_after < 5.0 + 15.0, requeued_after
    assert (job["status"], job["attempts"], job["requeues"]) == ("done", "2", "1"), job
    assert json.loads(trainer_cli(settings, redis_server.url, "status", "orphan-1").stdout)["lease"] == "none"
    assert_ledger(settings, redis_client, sent=1, done=["orphan-1"])


@pytest.mark.slow
def test_model_metadata_log_is_repaired_at_worker_start(prepped, redis_client, redis_server):
    settings = with_config(prepped, **FAST)
    q = queue_of(settings, redis_client)
    q.push(RetrainMessage(id="log-1", reason="r"))
    proc = worker(settings, redis_server.url, launcher=KILL_AT_LOG_APPEND)
    assert proc.wait(90) == -signal.SIGKILL
    paths = Paths.from_settings(settings)
    assert Registry(paths=paths).versions() == ["v1"]
    log_text = paths.metadata_log.read_text() if paths.metadata_log.exists() else ""
    assert "v1" not in logged_versions(log_text)
    run_worker(settings, redis_server.url, 1)
    lines = paths.metadata_log.read_text().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["v1"] and "trigger=message:log-1" in lines[0]
    assert q.job("log-1")["created"] == "0"
    assert_ledger(settings, redis_client, sent=1, done=["log-1"])


def edit_config(settings: Settings, **dotted) -> None:
    with_config(settings, **dotted)


def test_config_edited_between_jobs_applies_to_the_next(prepped, redis_client, redis_server, tmp_path):
    settings = with_config(prepped, **FAST)
    q = queue_of(settings, redis_client)
    log = tmp_path / "worker.log"
    proc = worker(settings, redis_server.url, log=log)
    try:
        q.push(RetrainMessage(id="cfg-1", reason="r"))
        wait_for(lambda: q.job("cfg-1").get("status") == "done", 60, what="cfg-1 done")
        edit_config(settings, **{"model_params.n_estimators": 12, "redis.lease_s": 2.5})
        q.push(RetrainMessage(id="cfg-2", reason="r"))
        wait_for(lambda: q.job("cfg-2").get("status") == "done", 60, what="cfg-2 done")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    registry = Registry(paths=Paths.from_settings(settings))
    assert [
        registry.metadata(q.job(i)["version"])["config"]["model_params"]["n_estimators"] for i in ("cfg-1", "cfg-2")
    ] == [10, 12]
    text = log.read_text()
    assert "changes redis (redis.lease_s)" in text and "keeps its connection" in text, text[-2000:]
    assert_ledger(settings, redis_client, sent=2, done=["cfg-1", "cfg-2"])


def test_broken_config_fails_that_job_and_the_worker_lives_on(prepped, redis_client, redis_server):
    settings = with_config(prepped, **FAST)
    q = queue_of(settings, redis_client)
    good = settings.config_path.read_text()
    proc = worker(settings, redis_server.url)
    try:
        q.push(RetrainMessage(id="before", reason="r"))
        wait_for(lambda: q.job("before").get("status") == "done", 60, what="job before done")
        broken = yaml.safe_load(good)
        broken["model_params"]["n_estimators"] = "many"
        settings.config_path.write_text(yaml.safe_dump(broken, sort_keys=False))
        q.push(RetrainMessage(id="broken", reason="r"))
        wait_for(lambda: q.job("broken").get("status") == "failed", 60, what="job broken failed")
        settings.config_path.write_text(good)
        q.push(RetrainMessage(id="after", reason="r"))
        wait_for(lambda: q.job("after").get("status") == "done", 60, what="job after done")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    reason = q.job("broken")["reason"]
    assert str(settings.config_path) in reason and "model_params.n_estimators" in reason and "\n" not in reason
    assert_ledger(settings, redis_client, sent=3, done=["before", "after"], failed=["broken"])
