"""Monitor ingest benchmark: one cycle over 1M new logged predictions, with 0%, 50% and 100% of them labelled.

    .venv/bin/python -m bench.monitor_bench [--rows 1000000] [--shares 0,0.5,1] [--config CONFIG]

Without `--config` it builds a throw-away project in a temporary folder (bench.inference_bench.build_project:
prep and one trained model, v1), so the cycle measures against a real registry and training table. For each
share it clears the logs and the monitor's files, writes `--rows` prediction lines (and feedback lines for the
labelled share, one second after their prediction) through the inference service's own writers
(services.inference.logs.PredictionLog / FeedbackLog, so the bytes are exactly what the service logs), then runs
ONE monitor cycle (Monitor.cycle: ingest, measure, reports; no Redis) in a fresh process and reports its wall
seconds, its CPU seconds (the figure to trust on a shared, busy machine) and that process's peak RSS
(resource.getrusage). Prints one JSON line per share.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = 1000  # predictions per append (one time stamp each), as a coalescing server writes them


def write_logs(config: Path, rows: int, share: float, seed: int = 7) -> dict:
    """Fresh logs on the project's volume: `rows` predictions, a label for `share` of them."""
    import pandas as pd

    from services.inference.logs import FeedbackLog, PredictionLog
    from shared.config import load_settings
    from shared.paths import Paths

    settings = load_settings(config, env={})
    paths = Paths.from_settings(settings)
    for d in (paths.prediction_log_dir, paths.feedback_log_dir, paths.labelled_dir, paths.reports_dir):
        shutil.rmtree(d, ignore_errors=True)
    for f in (paths.monitor_state, paths.monitor_store):
        for p in f.parent.glob(f.name + "*"):
            p.unlink()
    dataset = settings.dataset
    production = paths.production_version_dir(settings.data.versions.day2) / "natural.csv"
    df = pd.read_csv(production)
    inputs = [{c: r[c] for c in dataset.feature_names} for r in df.to_dict("records")]
    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    preds = PredictionLog(paths.prediction_log("bench"))
    fbs = FeedbackLog(paths.feedback_log("bench"))
    labelled = 0
    try:
        for start in range(0, rows, BATCH):
            n = min(BATCH, rows - start)
            when = t0 + timedelta(seconds=start / 1000)
            stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            results = [(f"bench-{start + i:08x}", rng.random(), rng.random() < 0.03) for i in range(n)]
            preds.append(
                stamp,
                "v1",
                0.5,
                [inputs[(start + i) % len(inputs)] for i in range(n)],
                [(rid, p, int(y)) for rid, p, y in results],
            )
            later = (when + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            for rid, _, y in results:
                if rng.random() < share:
                    fbs.append(later, rid, int(y))
                    labelled += 1
    finally:
        preds.close()
        fbs.close()
    return {
        "predictions": rows,
        "labels": labelled,
        "log_mb": round(sum(p.stat().st_size for p in (preds.path, fbs.path)) / 1e6, 1),
    }


def run_cycle(config: Path) -> dict:
    """One monitor cycle in this process: seconds and peak RSS."""
    import logging

    from services.monitor.monitor import Monitor
    from shared.config import load_settings

    logging.basicConfig(level=logging.ERROR)
    settings = load_settings(config, env={})
    monitor = Monitor(settings=settings, redis_client=None)
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    t = time.perf_counter()
    report = monitor.cycle()
    seconds = time.perf_counter() - t
    ingest = report.ingest
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime - cpu_before, 2),  # this process's, the cycle's part
        "ingest_seconds": ingest.read_seconds,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "new_predictions": ingest.new_predictions,
        "new_feedback": ingest.new_feedback,
        "joined": ingest.new_labelled,
        "pending_after": ingest.pending_predictions,
        "unread_bytes": ingest.unread_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="an existing project's config.yaml (default: a throw-away one)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shares", default="0,0.5,1")
    ap.add_argument("--cycle-only", type=Path, help=argparse.SUPPRESS)  # the child: one cycle on this config
    args = ap.parse_args(argv)
    if args.cycle_only:
        sys.stdout.write(json.dumps(run_cycle(args.cycle_only)) + "\n")
        return 0
    config = args.config
    if config is None:
        from bench.inference_bench import build_project

        config = build_project(Path(tempfile.mkdtemp(prefix="clockwork-monitor-bench-")))
    for share in (float(s) for s in args.shares.split(",")):
        written = write_logs(config, args.rows, share)
        child = subprocess.run(
            [sys.executable, "-m", "bench.monitor_bench", "--cycle-only", str(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            sys.stderr.write(child.stderr[-3000:])
            return 1
        result = {"labelled_share": share, **written, **json.loads(child.stdout.splitlines()[-1])}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
