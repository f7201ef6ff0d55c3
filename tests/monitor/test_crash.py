"""kill -9 the monitor in the middle of a big backlog, restart it: nothing lost, nothing counted twice."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pandas as pd

from services.monitor.state import load_state
from shared.labelled import committed_length, labelled_file, load_labelled
from tests.conftest import ROOT
from tests.monitor.helpers import append, day2, open_store, prediction_lines

ROWS = 90_000
INSTANCES = 3


def committed_rows(paths) -> int:
    return committed_length(paths)[1]  # read-only, beside the running monitor (WAL)


def start_monitor(settings, redis_url: str) -> subprocess.Popen:
    env = dict(os.environ, CLOCKWORK_REDIS_URL=redis_url, PYTHONPATH=str(ROOT), CLOCKWORK_LOG_LEVEL="WARNING")
    return subprocess.Popen([sys.executable, "-m", "services.monitor", "--config", str(settings.config_path), "--once"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_mid_run_then_restart_loses_and_double_counts_nothing(trained, paths, redis_server, redis_client):
    base = day2(paths, "natural")
    df = pd.concat([base] * (ROWS // len(base) + 1), ignore_index=True).iloc[:ROWS]
    ids = [uuid.uuid4().hex for _ in range(ROWS)]
    preds, fbs, _ = prediction_lines(paths, df, ids=ids)
    # Three inference instances; a label often lands in another instance's feedback file; 10% never get one.
    for k in range(INSTANCES):
        append(paths.prediction_log_dir / f"inst{k}.jsonl", preds[k::INSTANCES])
        fb = [line for i, line in enumerate(fbs) if (i + 1) % INSTANCES == k and i % 10 != 0]
        append(paths.feedback_log_dir / f"inst{k}.jsonl", fb)
    labelled_ids = {rid for i, rid in enumerate(ids) if i % 10 != 0}

    kills = []
    for _ in range(3):
        before = committed_rows(paths)
        proc = start_monitor(trained, redis_server.url)
        deadline = time.time() + 60
        while proc.poll() is None and committed_rows(paths) <= before and time.time() < deadline:
            time.sleep(0.005)
        if proc.poll() is not None:
            break
        time.sleep(0.15 * len(kills))  # land at different points of a step
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        size, rows = committed_length(paths)
        kills.append({"committed": rows, "uncommitted_bytes": labelled_file(paths).stat().st_size - size})
    assert kills and 0 < kills[0]["committed"] < len(labelled_ids), kills

    proc = start_monitor(trained, redis_server.url)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]

    got = load_labelled(paths)
    assert len(got) == len(labelled_ids), kills
    assert got["request_id"].is_unique
    assert set(got["request_id"]) == labelled_ids
    with open_store(paths) as store:
        counts, totals = store.counts()["v1"], store.totals()
        assert counts.predictions == ROWS and counts.labelled == len(labelled_ids)
        assert store.ids("pending") == set(ids) - labelled_ids and not store.ids("orphans")
        assert totals["predictions_read"] == ROWS and totals["feedback_read"] == len(labelled_ids)
        assert labelled_file(paths).stat().st_size == store.labelled_length()[0]
    # The joined rows carry the right labels.
    truth = dict(zip(ids, df["machine_failure"].astype(int)))
    assert all(truth[r] == y for r, y in zip(got["request_id"], got["machine_failure"]))


def test_sigterm_stops_the_loop_cleanly_after_the_cycle(trained, paths, redis_server):
    env = dict(os.environ, CLOCKWORK_REDIS_URL=redis_server.url, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "services.monitor", "--config", str(trained.config_path)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while not paths.monitor_state.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"stopping after the current cycle" in err and load_state(paths.monitor_state).cycles == 1
