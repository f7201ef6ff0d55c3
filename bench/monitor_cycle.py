"""One monitor cycle in this process, for bench.monitor_bench: its cost and a fingerprint of what it computed.

    python bench/monitor_cycle.py CONFIG OUT.json      (run as a script, with PYTHONPATH = the tree to measure)

Run as a script (not `-m`) so that `services` and `shared` come from PYTHONPATH: the benchmark runs it once with
this tree and once with a baseline tree exported from git, on the same logs. It imports nothing from bench/.

It runs ONE `Monitor.cycle()` (ingest, measure, reports; no Redis) and writes to OUT.json its wall seconds, CPU
seconds (this process's, the cycle's part), peak RSS (`resource.getrusage`), the ingest counts, and a fingerprint
of everything the cycle computed: the report (less its time stamps, paths and timing), the state file (less its
time stamps), a SHA-256 of the labelled file, and of each store table's rows in their order (pending and orphans
by arrival, the windows by time; the `seq` numbers themselves left out), with the store's meta, offsets, counts
and totals as they are. Two trees that compute the same fingerprint on the same logs measure the same thing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import sqlite3
import sys
import time
from pathlib import Path

TABLES = {
    "pending": "SELECT request_id, time, model_version, vals, probability, predicted FROM pending ORDER BY seq",
    "orphans": "SELECT request_id, time, label FROM orphans ORDER BY seq",
    "inputs": "SELECT time, model_version, vals FROM inputs ORDER BY time, seq",
    "windows": "SELECT model_version, time, label, predicted, probability FROM windows "
    "ORDER BY model_version, time, seq",
}


def fingerprint(paths, report) -> dict:
    """What the cycle computed, comparable across trees (see the module docstring)."""
    out: dict = {}
    rep = report.model_dump(mode="json")
    rep.pop("created_at")
    rep.pop("paths")
    rep["ingest"].pop("read_seconds")
    out["report"] = rep
    state = json.loads(paths.monitor_state.read_text())
    state.pop("updated_at", None)
    for entry in state.get("history", []):
        entry.pop("time", None)
    out["state"] = state
    labelled = paths.labelled_file
    data = labelled.read_bytes() if labelled.is_file() else b""
    out["labelled"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    conn = sqlite3.connect(f"file:{paths.monitor_store}?mode=ro", uri=True)
    try:
        for name, sql in TABLES.items():
            h, n = hashlib.sha256(), 0
            for row in conn.execute(sql):
                h.update(json.dumps(row).encode() + b"\n")
                n += 1
            out[name] = {"rows": n, "sha256": h.hexdigest()}
        out["meta"] = dict(conn.execute("SELECT key, value FROM meta ORDER BY key"))
        out["offsets"] = dict(conn.execute("SELECT key, offset FROM offsets ORDER BY key"))
        out["totals"] = dict(conn.execute("SELECT name, n FROM totals ORDER BY name"))
        out["counts"] = [list(r) for r in conn.execute("SELECT * FROM counts ORDER BY model_version")]
    finally:
        conn.close()
    return out


def main(config: Path, out: Path) -> None:
    from services.monitor.monitor import Monitor
    from shared.config import load_settings

    logging.basicConfig(level=logging.ERROR)
    settings = load_settings(config, env={})
    monitor = Monitor(settings=settings, redis_client=None)
    before = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    report = monitor.cycle()
    seconds = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ingest = report.ingest
    assert ingest is not None
    result = {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime, 2),
        "ingest_seconds": ingest.read_seconds,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "new_predictions": ingest.new_predictions,
        "new_feedback": ingest.new_feedback,
        "joined": ingest.new_labelled,
        "pending_after": ingest.pending_predictions,
        "fingerprint": fingerprint(monitor.paths, report),
    }
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
