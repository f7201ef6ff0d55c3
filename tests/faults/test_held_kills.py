"""Fault scenarios 6 and 7: SIGKILL of the trainer worker and of the monitor at seeded random moments.

6. Retrain messages queued; the worker is SIGKILLed again and again while it trains, and restarted: every
   message ends done, one registered model per message id, and no version folder is ever partial.
7. The monitor loop is SIGKILLed at random moments while it joins logged predictions (three instances'
   files, growing between restarts) with their labels: exactly once, the labelled rows equal the joined
   predictions, none twice, none lost.
"""

from __future__ import annotations

import random
import re
import time
import uuid

import pandas as pd
import pytest

from services.monitor.store import MonitorStore
from shared.labelled import labelled_file, load_labelled
from shared.paths import METADATA_FILE, MODEL_FILE, Paths, RedisKeys
from shared.queue import DONE, RetrainQueue
from shared.registry import Registry
from shared.schemas import RetrainMessage
from tests.conftest import wait_for
from tests.faults.helpers import Ledger, Proc, models_per_message, service_env
from tests.monitor.helpers import append, day2, prediction_lines
from tests.trainer.helpers import with_config

pytestmark = pytest.mark.slow

SEED = 20261
WORKER_MESSAGES = 5
WORKER_KILLS = 3
# Long enough per job (~1 s here) that a kill lands inside the fit, the export or the registration; the kill
# comes up to KILL_WITHIN_S after a job started, so some land after it (in the next job, or between two).
WORKER_MODEL = {"model_params.n_estimators": 40, "model_params.max_depth": 8}
KILL_WITHIN_S = 1.2
RUNNING = re.compile(r"job \S+: running")


def test_worker_sigkilled_at_random_moments_finishes_every_message_once(retrain_project, own_redis, tmp_path):
    settings = with_config(retrain_project, **WORKER_MODEL)
    paths = Paths.from_settings(settings)
    client = own_redis.client()
    queue = RetrainQueue.from_settings(settings, redis=client)
    keys = RedisKeys.from_settings(settings)
    ids = [f"kill-{i}" for i in range(WORKER_MESSAGES)]
    for mid in ids:
        queue.push(RetrainMessage(id=mid, reason="worker kill test", include_production=False))
    rng = random.Random(SEED)
    env = service_env(own_redis.url)
    kills = []
    for k in range(WORKER_KILLS):
        worker = Proc(settings, "services.trainer", "worker", "--poll", "0.2", log=tmp_path / f"worker{k}.log", env=env)
        try:
            # A job of this worker is running (taken again after the last kill, or a new one): kill inside it.
            running = worker.log
            wait_for(lambda log=running: RUNNING.search(log()), 60.0, every=0.01, what=f"worker {k} running a job")
            time.sleep(rng.uniform(0.0, KILL_WITHIN_S))
        finally:
            worker.kill()
        kills.append({mid: queue.job(mid).get("status") for mid in ids})
    final = Proc(settings, "services.trainer", "worker", "--poll", "0.2", log=tmp_path / "final.log", env=env)
    try:

        def finished():
            return all(queue.job(mid).get("status") == DONE for mid in ids) and not client.llen(keys.processing_queue)

        wait_for(finished, 120.0, every=0.1, what="every message done after the kills")
    finally:
        final_code = final.stop()
    registry = Registry(paths=paths)
    per_message = models_per_message(registry)
    numbered = [p for p in paths.models_dir.iterdir() if re.fullmatch(r"v[0-9]+", p.name)]
    partial = [p.name for p in numbered if not ((p / MODEL_FILE).is_file() and (p / METADATA_FILE).is_file())]
    for version in registry.versions():
        registry.load_verified(version)  # sha256 matches: no version holds a torn model file
    ledger = Ledger(
        f"worker SIGKILLed {WORKER_KILLS} times (seed {SEED})",
        counts={
            "sent": WORKER_MESSAGES,
            "done": sum(queue.job(mid).get("status") == DONE for mid in ids),
            "dead_lettered": len(queue.dead_letters()),
            "kills": len(kills),
            "kills_with_a_job_running": sum("running" in k.values() for k in kills),
            "attempts": sum(int(queue.job(mid).get("attempts", 0)) for mid in ids),
            "versions": len(registry.versions()),
            "messages_with_a_model": len(per_message),
            "messages_with_two_models": sum(len(v) > 1 for v in per_message.values()),
            "partial_version_folders": len(partial),
            "left_in_queue": client.llen(keys.retrain_queue) + client.llen(keys.processing_queue),
            "final_worker_exit": final_code,
        },
    )
    ledger.balance("sent", ["done", "dead_lettered"])
    ledger.zero("dead_lettered", "messages_with_two_models", "partial_version_folders", "left_in_queue")
    ledger.zero("final_worker_exit")
    ledger.balance("sent", "versions")
    ledger.balance("sent", "messages_with_a_model")
    ledger.positive("kills_with_a_job_running")
    assert ledger.counts["attempts"] > WORKER_MESSAGES, f"{ledger}: no job was ever taken again"
    assert set(per_message) == set(ids), per_message
    assert {mid: queue.job(mid)["version"] for mid in ids} == {m: v[0] for m, v in per_message.items()}


# --- scenario 7 -----------------------------------------------------------------------------------------------
MONITOR_BATCHES = 4
BATCH_ROWS = 8_000
INSTANCES = 3


def labelled_bytes(paths: Paths) -> int:
    """Size of the labelled file (it grows as the monitor appends; cheap enough to poll every few ms)."""
    try:
        return labelled_file(paths).stat().st_size
    except FileNotFoundError:
        return 0


def test_monitor_sigkilled_at_random_moments_joins_every_label_exactly_once(served, own_redis, tmp_path):
    settings = with_config(served, **{"monitoring.interval_s": 0.2})
    paths = Paths.from_settings(settings)
    base = day2(paths, "natural")
    rng = random.Random(SEED)
    env = service_env(own_redis.url)
    all_ids: list[str] = []
    labelled_ids: set[str] = set()
    truth: dict[str, int] = {}
    kills = []
    for b in range(MONITOR_BATCHES):
        # New traffic lands while no monitor runs: three instances, a label often in another instance's
        # file, one prediction in ten never labelled.
        df = pd.concat([base] * (BATCH_ROWS // len(base) + 1), ignore_index=True).iloc[:BATCH_ROWS]
        ids = [uuid.uuid4().hex for _ in range(BATCH_ROWS)]
        preds, fbs, _ = prediction_lines(paths, df, ids=ids, start=b * BATCH_ROWS)
        for k in range(INSTANCES):
            append(paths.prediction_log_dir / f"inst{k}.jsonl", preds[k::INSTANCES])
            fb = [line for i, line in enumerate(fbs) if (i + 1) % INSTANCES == k and i % 10 != 0]
            append(paths.feedback_log_dir / f"inst{k}.jsonl", fb)
        all_ids += ids
        labelled_ids |= {rid for i, rid in enumerate(ids) if i % 10 != 0}
        truth.update(zip(ids, df["machine_failure"].astype(int), strict=True))

        before = labelled_bytes(paths)
        monitor = Proc(settings, "services.monitor", "run", log=tmp_path / f"monitor{b}.log", env=env)
        try:
            wait_for(lambda n=before: labelled_bytes(paths) > n, 60.0, every=0.002, what=f"monitor {b} appending")
            # at once or a few ms later: the monitor is fast, and a kill after its cycle proves nothing
            time.sleep(rng.uniform(0.0, 0.005))
        finally:
            monitor.kill()
        read = _store_view(paths)["totals"].get("predictions_read", 0)
        kills.append({"predictions_read": read, "predictions_logged": len(all_ids)})

    final = Proc(settings, "services.monitor", "run", "--once", log=tmp_path / "final.log", env=env)
    final_code = final.wait(120)
    got = load_labelled(paths)
    state = _store_view(paths)
    labels = dict(zip(got["request_id"], got["machine_failure"], strict=True))
    ledger = Ledger(
        f"monitor SIGKILLed {MONITOR_BATCHES} times (seed {SEED})",
        counts={
            "predictions_logged": len(all_ids),
            "labels_logged": len(labelled_ids),
            "kills": len(kills),
            "kills_with_work_left": sum(k["predictions_read"] < k["predictions_logged"] for k in kills),
            "predictions_read": state["totals"]["predictions_read"],
            "feedback_read": state["totals"]["feedback_read"],
            "labelled_rows": len(got),
            "labelled_unique": got["request_id"].nunique(),
            "labelled_not_logged": len(set(got["request_id"]) - labelled_ids),
            "labelled_missing": len(labelled_ids - set(got["request_id"])),
            "wrong_labels": sum(truth[r] != y for r, y in labels.items()),
            "pending": len(state["pending"]),
            "unlabelled": len(all_ids) - len(labelled_ids),
            "orphans": len(state["orphans"]),
            "uncommitted_bytes": labelled_file(paths).stat().st_size - state["labelled_bytes"],
            "final_exit": final_code,
        },
    )
    ledger.balance("predictions_logged", "predictions_read")
    ledger.balance("labels_logged", "feedback_read")
    ledger.balance("labels_logged", "labelled_rows")
    ledger.balance("labelled_rows", "labelled_unique")
    ledger.balance("unlabelled", "pending")
    ledger.positive("kills_with_work_left")
    ledger.zero("labelled_not_logged", "labelled_missing", "wrong_labels", "orphans", "uncommitted_bytes", "final_exit")
    counts = state["counts"]["v1"]
    assert counts.predictions == len(all_ids) and counts.labelled == len(labelled_ids)


def _store_view(paths) -> dict:
    """What the monitor's store holds now (read through its own API, then closed)."""
    if not paths.monitor_store.exists():
        return {"totals": {}, "pending": set(), "orphans": set(), "labelled_bytes": 0, "counts": {}}
    with MonitorStore.open(paths.monitor_store, features=paths.settings.dataset.feature_names) as store:
        return {
            "totals": store.totals(),
            "pending": store.ids("pending"),
            "orphans": store.ids("orphans"),
            "labelled_bytes": store.labelled_length()[0],
            "counts": store.counts(),
        }
