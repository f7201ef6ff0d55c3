"""Fault scenario 5: two inference processes on one volume, and a third that reuses an instance id.

Each instance has its own id and its own prediction log; a second process with an id already running is
refused at start with an error naming the held file, and the running one does not notice; under load on
both, answered = logged for each instance and no record lands in the other's log.
"""

from __future__ import annotations

import pytest

from shared import deploylog
from shared.paths import Paths
from tests.faults.helpers import Inference, Ledger, Load, logged_predictions

pytestmark = pytest.mark.slow


def test_two_instances_on_one_volume_log_apart_and_a_duplicate_id_is_refused(served, tmp_path):
    paths = Paths.from_settings(served)
    a = Inference(served, "inst-a", log=tmp_path / "a.log")
    b = Inference(served, "inst-b", log=tmp_path / "b.log")
    dup = None
    try:
        a.ready()
        b.ready()
        with Load(a.url) as load_a, Load(b.url) as load_b:
            load_a.wait_more(50)
            load_b.wait_more(50)
            dup = Inference(served, "inst-a", log=tmp_path / "dup.log")
            dup_exit = dup.wait(60)
            load_a.wait_more(50)
            load_b.wait_more(50)
        assert a.alive() and b.alive()
    finally:
        for proc in (a, b, dup):
            if proc is not None:
                proc.kill()
    held = paths.prediction_log("inst-a")
    dup_log = dup.log()
    assert dup_exit != 0 and "Application startup complete" not in dup_log, dup_log[-2000:]
    assert f"{held} is held by another running instance" in dup_log, dup_log[-2000:]

    logs = {i: logged_predictions(paths, i) for i in ("inst-a", "inst-b")}
    ids = {i: {r["request_id"] for r in recs} for i, recs in logs.items()}
    answered = {"inst-a": load_a.answered, "inst-b": load_b.answered}
    starts = [r["instance_id"] for r in deploylog.read_rows(paths) if r["event"] == "start"]
    ledger = Ledger(
        "two instances",
        counts={
            "sent_a": load_a.count(),
            "answered_a": len(answered["inst-a"]),
            "failed_a": len(load_a.failed),
            "logged_a": len(logs["inst-a"]),
            "answered_a_not_in_log_a": sum(x.request_id not in ids["inst-a"] for x in answered["inst-a"]),
            "sent_b": load_b.count(),
            "answered_b": len(answered["inst-b"]),
            "failed_b": len(load_b.failed),
            "logged_b": len(logs["inst-b"]),
            "answered_b_not_in_log_b": sum(x.request_id not in ids["inst-b"] for x in answered["inst-b"]),
            "ids_in_both_logs": len(ids["inst-a"] & ids["inst-b"]),
            "start_rows_a": starts.count("inst-a"),
            "start_rows_b": starts.count("inst-b"),
            "start_rows": len(starts),
        },
    )
    ledger.zero("failed_a", "failed_b", "answered_a_not_in_log_a", "answered_b_not_in_log_b", "ids_in_both_logs")
    ledger.balance("sent_a", "answered_a")
    ledger.balance("sent_b", "answered_b")
    ledger.balance("answered_a", "logged_a")
    ledger.balance("answered_b", "logged_b")
    # The refused process wrote no deployment row: one start per running instance.
    ledger.exactly(start_rows_a=1, start_rows_b=1, start_rows=2)
    # Its own log file is whole: every line a record (the refused process wrote nothing into it).
    assert held.read_bytes().endswith(b"\n") and len(held.read_bytes().splitlines()) == len(logs["inst-a"])


def test_a_duplicate_instance_exits_1_with_one_line_and_no_traceback(served, tmp_path):
    a = Inference(served, "inst-a", log=tmp_path / "a.log")
    try:
        a.ready()
        dup = Inference(served, "inst-a", log=tmp_path / "dup.log")
        code = dup.wait(60)
    finally:
        a.kill()
    assert code == 1 and "Traceback" not in dup.log(), f"exit {code}: {dup.log()[-1500:]}"
