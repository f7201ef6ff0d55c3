"""Retrain worker on a real Redis: at-least-once, one model per message id, dead letters, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from services.trainer.gate import GateDecision
from services.trainer.retrain import run_retrain
from services.trainer.train import COMMAND_TRIGGER, train_and_register
from services.trainer.worker import Worker
from shared.datastore import DataStore
from shared.paths import Paths, RedisKeys
from shared.queue import RetrainQueue
from shared.registry import Registry
from shared.schemas import RetrainMessage
from tests.conftest import wait_for
from tests.trainer.helpers import ROOT, with_config, write_labelled

# Slow enough to be caught mid-job (several seconds of fitting), short lease so a dead worker's job returns fast.
SLOW = {"model_params.n_estimators": 300, "redis.lease_s": 1.0}


def queue_for(settings, client) -> RetrainQueue:
    return RetrainQueue.from_settings(settings, redis=client)


def start_worker(settings, redis_url: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, CLOCKWORK_REDIS_URL=redis_url)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.trainer",
            "worker",
            "--poll",
            "0.2",
            "--config",
            str(settings.config_path),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_pushed_message_registers_next_version_and_status_is_done(prepped, redis_client):
    train_and_register(prepped, trigger=COMMAND_TRIGGER)
    q = queue_for(prepped, redis_client)
    q.push(RetrainMessage(id="manual-1", reason="manual"))
    assert q.job("manual-1")["status"] == "queued"
    assert Worker(settings=prepped, redis=redis_client, max_jobs=1, poll_s=0.2).run() == 1
    job = q.job("manual-1")
    assert job["status"] == "done" and job["version"] == "v2", job
    # No labelled rows yet: no gate; the hash keeps its format (flags 0/1, an empty gate decision).
    assert (job["created"], job["gate_decision"], job["promoted"]) == ("1", "", "0"), job
    md = Registry(paths=Paths.from_settings(prepped)).metadata("v2")
    assert md["trigger"] == {**md["trigger"], "kind": "message", "message_id": "manual-1", "reason": "manual"}
    assert redis_client.llen(q.keys.processing_queue) == 0


def test_redis_cli_style_message_is_accepted(prepped, redis_client):
    """What the README shows: LPUSH of a bare JSON object, no job hash beforehand."""
    keys = RedisKeys.from_settings(prepped)
    redis_client.lpush(keys.retrain_queue, '{"id":"manual-1","reason":"manual"}')
    Worker(settings=prepped, redis=redis_client, max_jobs=1, poll_s=0.2).run()
    assert queue_for(prepped, redis_client).job("manual-1")["status"] == "done"


def test_malformed_messages_go_to_dead_letter_and_the_worker_continues(prepped, redis_client):
    keys = RedisKeys.from_settings(prepped)
    redis_client.lpush(keys.retrain_queue, b"not json at all")
    redis_client.lpush(keys.retrain_queue, '{"id":"x-1"}')
    redis_client.lpush(keys.retrain_queue, '{"id":"../bad id","reason":"r"}')
    redis_client.lpush(keys.retrain_queue, '{"id":"good-1","reason":"after the bad ones"}')
    assert Worker(settings=prepped, redis=redis_client, max_jobs=4, poll_s=0.2).run() == 4
    q = queue_for(prepped, redis_client)
    dead = q.dead_letters()
    assert len(dead) == 3
    by_raw = {d["raw"]: d["reason"] for d in dead}
    assert "not JSON" in by_raw["not json at all"]
    assert "reason" in by_raw['{"id":"x-1"}']
    assert "id" in by_raw['{"id":"../bad id","reason":"r"}']
    assert all(d["time"] for d in dead)
    assert q.job("good-1")["status"] == "done"
    assert redis_client.llen(keys.processing_queue) == 0


def test_same_message_id_twice_gives_one_model(prepped, redis_client):
    q = queue_for(prepped, redis_client)
    q.push(RetrainMessage(id="dup-1", reason="first"))
    q.push(RetrainMessage(id="dup-1", reason="again"))
    Worker(settings=prepped, redis=redis_client, max_jobs=2, poll_s=0.2).run()
    # Even with the job status lost (e.g. Redis flushed), the registry knows the id.
    redis_client.delete(q.keys.job("dup-1"))
    q.push(RetrainMessage(id="dup-1", reason="third time"))
    Worker(settings=prepped, redis=redis_client, max_jobs=1, poll_s=0.2).run()
    assert Registry(paths=Paths.from_settings(prepped)).versions() == ["v1"]
    job = q.job("dup-1")
    assert job["status"] == "done" and job["version"] == "v1" and job["created"] == "0"


def test_failed_job_records_reason_and_worker_continues(prepped, redis_client):
    q = queue_for(prepped, redis_client)
    q.push(RetrainMessage(id="bad-data", reason="r", data_version="v9_missing"))
    q.push(RetrainMessage(id="ok-1", reason="r"))
    Worker(settings=prepped, redis=redis_client, max_jobs=2, poll_s=0.2).run()
    job = q.job("bad-data")
    assert job["status"] == "failed" and "v9_missing" in job["reason"]
    assert q.job("ok-1")["status"] == "done"


def test_killed_worker_job_is_taken_again_and_completes_once(prepped, redis_client, redis_server):
    settings = with_config(prepped, **SLOW)
    q = queue_for(settings, redis_client)
    q.push(RetrainMessage(id="kill-1", reason="kill test"))
    proc = start_worker(settings, redis_server.url, "--max-jobs", "1")
    try:
        wait_for(lambda: q.job("kill-1").get("status") == "running", 60.0, what="job running")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert redis_client.llen(q.keys.processing_queue) == 1
    registry = Registry(paths=Paths.from_settings(settings))
    assert registry.versions() == []
    # A new worker finds the orphan once the dead worker's lease has expired and runs it.
    Worker(settings=settings, redis=redis_client, max_jobs=1, poll_s=0.2, orphan_grace_s=0.5).run()
    job = q.job("kill-1")
    assert job["status"] == "done" and job["attempts"] == "2", job
    assert registry.versions() == ["v1"]
    assert registry.metadata("v1")["trigger"]["message_id"] == "kill-1"
    assert registry.metadata("v1")["config"]["model_params"]["n_estimators"] == 300
    assert redis_client.llen(q.keys.processing_queue) == 0 and redis_client.llen(q.keys.retrain_queue) == 0


def test_sigterm_lets_the_current_job_finish(prepped, redis_client, redis_server):
    settings = with_config(prepped, **SLOW)
    q = queue_for(settings, redis_client)
    q.push(RetrainMessage(id="term-1", reason="sigterm test"))
    proc = start_worker(settings, redis_server.url)
    try:
        wait_for(lambda: q.job("term-1").get("status") == "running", 60.0, what="job running")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert q.job("term-1")["status"] == "done"
    assert Registry(paths=Paths.from_settings(settings)).versions() == ["v1"]


def test_retrain_with_labelled_rows_builds_a_data_version_and_gates(prepped, redis_client):
    settings = with_config(prepped, **{"monitoring.gate.window_size": 400})
    train_and_register(settings, trigger=COMMAND_TRIGGER)  # v1, the pinned serving model
    paths = Paths.from_settings(settings)
    store = DataStore(paths=paths)
    production = store.read_table(paths.data_version_dir(settings.data.version) / "production.csv")
    write_labelled(settings, production.iloc[:1000])
    result = run_retrain(settings, RetrainMessage(id="drift-1", reason="f1 drop", evidence={"f1": 0.5}))
    assert result.created and result.version == "v2"
    dv = result.data_version
    assert dv == f"v{5}_retrain"
    entries = {e.path.rsplit("/", 1)[1]: e for e in store.entries_for(dv)}
    assert set(entries) == {"train.csv", "labelled.csv", "gate_window.csv"}
    assert entries["train.csv"].rows == 7000 + 600 and entries["gate_window.csv"].rows == 400
    inputs = {i.path for i in entries["train.csv"].inputs}
    assert inputs == {f"data/processed/{settings.data.version}/train.csv", f"data/processed/{dv}/labelled.csv"}
    assert entries["labelled.csv"].inputs[0].path.endswith("labelled.jsonl")
    md = Registry(paths=paths).metadata("v2")
    assert md["data_version"] == dv and md["trigger"]["evidence"] == {"f1": 0.5}
    assert md["gate"] is not None and md["gate"]["decision"] in ("promote", "keep")
    assert md["gate"]["window"]["rows"] == 400
    # The stored decision is the job's GateDecision, and it loads back unchanged.
    assert result.gate is not None and md["gate"] == result.gate.model_dump(mode="json")
    assert GateDecision.model_validate(md["gate"]) == result.gate
    assert result.job_fields()["gate_decision"] == md["gate"]["decision"]
    # Repeating the message changes nothing.
    again = run_retrain(settings, RetrainMessage(id="drift-1", reason="f1 drop"))
    assert (again.version, again.created, again.gate, again.promoted) == ("v2", False, None, False)
    assert again.job_fields() == {"version": "v2", "data_version": dv, "created": 0, "gate_decision": "", "promoted": 0}
    assert Registry(paths=paths).versions() == ["v1", "v2"]


def test_status_and_push_cli(prepped, redis_client, redis_server):
    env = dict(os.environ, CLOCKWORK_REDIS_URL=redis_server.url)
    cli = [sys.executable, "-m", "services.trainer"]
    pushed = subprocess.run(
        cli + ["push", "--reason", "from the cli", "--id", "cli-1", "--config", str(prepped.config_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == "cli-1"
    status = subprocess.run(
        cli + ["status", "cli-1", "--config", str(prepped.config_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "queued"
    missing = subprocess.run(
        cli + ["status", "nope", "--config", str(prepped.config_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "nope" in missing.stderr and "Traceback" not in missing.stderr
    bad = subprocess.run(
        cli + ["push", "--reason", "x", "--id", "bad id!", "--config", str(prepped.config_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "id" in bad.stderr and "Traceback" not in bad.stderr


def test_worker_survives_a_redis_restart(prepped, redis_client, redis_server):
    import threading

    import redis

    worker = Worker(settings=prepped, redis=redis.Redis.from_url(redis_server.url), max_jobs=1, poll_s=0.2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    time.sleep(0.3)
    redis_server.kill()
    time.sleep(0.5)
    redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    queue_for(prepped, client).push(RetrainMessage(id="after-restart", reason="r"))
    thread.join(60)
    assert not thread.is_alive()
    assert queue_for(prepped, client).job("after-restart")["status"] == "done"
