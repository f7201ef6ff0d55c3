"""Fault scenarios 1 and 2: Redis SIGKILLed under a full retrain queue, and Redis down under load.

1. Messages queued, a worker running them, Redis SIGKILLed and restarted with its data (append-only file):
   the worker reconnects by itself and every message ends done or dead-lettered, none twice.
2. Redis down while clients post /predict: inference answers every request (it does not need Redis) and logs
   each; the monitor keeps cycling (its retrain message waits) and the worker keeps waiting; when Redis
   returns, the monitor's message goes out and the worker runs it.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import time
from datetime import datetime

import pytest

from shared.paths import Paths, RedisKeys
from shared.queue import DONE, RetrainQueue
from shared.registry import Registry
from shared.schemas import RetrainMessage
from tests.conftest import wait_for
from tests.faults.helpers import Inference, Ledger, Load, Proc, logged_predictions, models_per_message, service_env
from tests.trainer.helpers import with_config

pytestmark = pytest.mark.slow

MESSAGES = 6
# Paced traffic the monitor keeps up with (at ~100/s and more its cycles stop ending: see the xfail below).
LOAD_RATE = 40.0
DRIFT_MIN_SAMPLES = 60


def test_redis_killed_with_the_retrain_queue_full_loses_and_repeats_nothing(retrain_project, own_redis, tmp_path):
    settings = retrain_project
    client = own_redis.client()
    queue = RetrainQueue.from_settings(settings, redis=client)
    keys = RedisKeys.from_settings(settings)
    ids = [f"full-{i}" for i in range(MESSAGES)]
    for mid in ids:
        queue.push(RetrainMessage(id=mid, reason="queue full, then Redis dies", include_production=False))
    client.lpush(keys.retrain_queue, b'{"id": "no-reason"}')  # malformed: must end dead-lettered, not lost
    sent = MESSAGES + 1

    worker = Proc(
        settings,
        "services.trainer",
        "worker",
        "--poll",
        "0.2",
        log=tmp_path / "worker.log",
        env=service_env(own_redis.url),
    )
    try:
        wait_for(lambda: queue.job(ids[0]).get("status") == "running", 60.0, every=0.005, what="the first job running")
        queued_at_kill = client.llen(keys.retrain_queue)
        own_redis.kill()
        time.sleep(1.5)  # the worker meets a dead Redis: mid-job and in its loop
        own_redis.start()
        client = own_redis.client()
        queue = RetrainQueue.from_settings(settings, redis=client)

        def finished():
            jobs = [queue.job(mid).get("status") for mid in ids]
            # the malformed message, pushed last, is taken last: finished when it is dead-lettered too
            return (all(s == DONE for s in jobs) and client.llen(keys.processing_queue) == 0
                    and client.llen(keys.retrain_queue) == 0 and len(queue.dead_letters()) == 1)

        wait_for(finished, 90.0, every=0.1, what="every message finished after the restart")
        assert worker.alive(), worker.log()[-2000:]
    finally:
        code = worker.stop()
    registry = Registry(paths=Paths.from_settings(settings))
    per_message = models_per_message(registry)
    dead = queue.dead_letters()
    ledger = Ledger(
        "redis killed, queue full",
        counts={
            "sent": sent,
            "queued_at_kill": queued_at_kill,
            "done": sum(queue.job(mid).get("status") == DONE for mid in ids),
            "dead_lettered": len(dead),
            "left_in_queue": client.llen(keys.retrain_queue),
            "left_in_processing": client.llen(keys.processing_queue),
            "versions": len(registry.versions()),
            "messages_with_a_model": len(per_message),
            "messages_with_two_models": sum(len(v) > 1 for v in per_message.values()),
            "worker_exit": code,
        },
    )
    ledger.balance("sent", ["done", "dead_lettered"])
    ledger.zero("left_in_queue", "left_in_processing", "messages_with_two_models", "worker_exit")
    ledger.positive("queued_at_kill")
    ledger.exactly(versions=MESSAGES, messages_with_a_model=MESSAGES)
    assert set(per_message) == set(ids), per_message
    assert '{"id": "no-reason"}' in dead[0]["raw"] and "reason" in dead[0]["reason"], dead
    # Each job names the version the registry holds for it.
    assert {mid: queue.job(mid)["version"] for mid in ids} == {m: v[0] for m, v in per_message.items()}
    assert "Redis" in worker.log(), "the worker should have logged meeting the dead Redis"


def test_redis_down_under_load_inference_answers_and_logs_everything_and_the_others_resume(served, own_redis, tmp_path):
    settings = with_config(
        served,
        **{
            "monitoring.interval_s": 0.3,
            "monitoring.drift_min_samples": DRIFT_MIN_SAMPLES,
            "model_params.n_estimators": 10,
            "model_params.max_depth": 4,
        },
    )
    paths = Paths.from_settings(settings)
    keys = RedisKeys.from_settings(settings)
    env = service_env(own_redis.url)
    inference = Inference(settings, "rd-1", log=tmp_path / "inference.log", env=env)
    worker = Proc(settings, "services.trainer", "worker", "--poll", "0.2", log=tmp_path / "worker.log", env=env)
    monitor = Proc(settings, "services.monitor", "run", log=tmp_path / "monitor.log", env=env)
    procs = (inference, worker, monitor)
    try:
        inference.ready()
        wait_for(paths.monitor_state.is_file, 30.0, what="the monitor's first cycle")
        with Load(inference.url, rate=LOAD_RATE) as load:
            load.wait_more(20)
            own_redis.kill()
            down_from = load.count()
            # Enough constant readings for the drift check to fire; the monitor cannot send its message.
            load.wait_more(DRIFT_MIN_SAMPLES + 20)
            wait_for(lambda: "Redis unavailable" in monitor.log(), 30.0, what="the monitor meeting the dead Redis")
            load.wait_more(20)
            down_to = load.count()
            alive_while_down = {p.args[0]: p.alive() for p in procs}
            own_redis.start()
            client = own_redis.client()
            sent = wait_for(lambda: client.get(keys.monitor_cooldown), 30.0, what="the monitor's retrain message")
            message_id = json.loads(sent)["message_id"]
            queue = RetrainQueue.from_settings(settings, redis=client)
            wait_for(lambda: queue.job(message_id).get("status") == DONE, 60.0, what=f"job {message_id} done")
            load.wait_more(20)
        codes = {p.args[0]: p.stop() for p in procs}
    finally:
        for p in procs:
            p.kill()
    logged = logged_predictions(paths, "rd-1")
    answers = load.all
    ledger = Ledger(
        "redis down under load",
        counts={
            "sent": len(answers),
            "answered": len(load.answered),
            "failed": len(load.failed),
            "logged": len(logged),
            "answered_while_redis_down": sum(a.status == 200 for a in answers[down_from:down_to]),
            "sent_while_redis_down": down_to - down_from,
            "monitor_messages_sent": 1 if sent else 0,
            "worker_jobs_done": int(queue.job(message_id).get("status") == DONE),
            "dead_lettered": len(queue.dead_letters()),
            "left_in_queue": client.llen(keys.retrain_queue) + client.llen(keys.processing_queue),
            "down_but_not_alive": sum(not alive for alive in alive_while_down.values()),
            **{f"exit_{name.split('.')[1]}": code for name, code in codes.items()},
        },
    )
    ledger.zero("failed", "dead_lettered", "left_in_queue", "down_but_not_alive")
    ledger.zero("exit_trainer", "exit_monitor")
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete: -15 is its clean exit.
    assert ledger.counts["exit_inference"] in (0, -signal.SIGTERM), str(ledger)
    assert "Application shutdown complete" in inference.log()
    ledger.balance("sent", "answered")
    ledger.balance("answered", "logged")
    ledger.balance("sent_while_redis_down", "answered_while_redis_down")
    ledger.positive("answered_while_redis_down")
    ledger.balance("monitor_messages_sent", "worker_jobs_done")
    assert {r["request_id"] for r in logged} == {a.request_id for a in load.answered}
    assert Registry(paths=paths).find_by_trigger(message_id) is not None


def cycle_times(log_text: str) -> list[datetime]:
    """When each monitor cycle ended, from its "cycle N:" log lines."""
    return [
        datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
        for m in re.finditer(r"(?m)^(\S+ \S+) INFO \[monitor\] services\.monitor\.monitor: cycle \d+:", log_text)
    ]


def test_the_monitor_keeps_finishing_cycles_under_continuous_traffic(served, own_redis, tmp_path):
    settings = with_config(served, **{"monitoring.interval_s": 0.3})
    env = service_env(own_redis.url)
    inference = Inference(settings, "busy-1", log=tmp_path / "inference.log", env=env)
    monitor = Proc(settings, "services.monitor", "run", log=tmp_path / "monitor.log", env=env)
    try:
        inference.ready()
        wait_for(Paths.from_settings(settings).monitor_state.is_file, 30.0, what="the monitor's first cycle")
        with Load(inference.url, rate=200.0) as load:
            started = datetime.now()
            time.sleep(15)
            ended = datetime.now()
        assert monitor.alive() and not load.failed
    finally:
        inference.kill()
        monitor.kill()
    ends = [t for t in cycle_times(monitor.log()) if t >= started] + [ended]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise([started, *ends])]
    ledger = Ledger(
        "monitor under continuous traffic",
        counts={"sent": load.count(), "cycles_ended": len(ends) - 1, "longest_gap_s": int(max(gaps))},
    )
    assert max(gaps) < 5.0, str(ledger)
