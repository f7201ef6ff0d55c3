"""Monitor ingest benchmark: one cycle over 1M new logged predictions, with 0%, 50% and 100% of them labelled,
this tree against a baseline commit in the same run, on the same logs.

    .venv/bin/python -m bench.monitor_bench [--rows 1000000] [--shares 0,0.5,1] [--config CONFIG] [--rounds N]
                                            [--baseline COMMIT | --no-baseline]

Without `--config` it builds a throw-away project in a temporary folder (bench.inference_bench.build_project:
prep and one trained model, v1), so the cycle measures against a real registry and training table. For each
share it clears the logs and the monitor's files, writes `--rows` prediction lines (and feedback lines for the
labelled share, one second after their prediction) through the inference service's own writers
(services.inference.logs.PredictionLog / FeedbackLog, so the bytes are exactly what the service logs). Then,
for the baseline (the services and shared packages of `--baseline`, exported with `git archive`) and for this
tree, alternating `--rounds` times, it clears the monitor's files and runs ONE monitor cycle (Monitor.cycle:
ingest, measure, reports; no Redis) in a fresh process (bench/monitor_cycle.py): its wall seconds, its CPU
seconds (the figure to trust on a shared, busy machine) and that process's peak RSS (resource.getrusage).
It compares what the two ingested (the store's tables, offsets, counts and totals, the labelled file's bytes:
monitor_cycle.fingerprint less the report and state, whose contents grew since the baseline: drift correction,
the label-free estimate, the chain of actions) and prints one JSON line per share: each tree's medians, the
ratios baseline / this tree, and `identical` (the exit status is 1 if any share differs, naming the parts that
do). Each tree reads the project with its own config.yaml (the baseline's from the baseline commit, pointed at the
same volume), and this tree's with `logs.compact_each_cycle` off: the cycle measured is ingest, measure and
reports; compacting closed log segments into Parquet is measured apart (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CYCLE = Path(__file__).resolve().with_name("monitor_cycle.py")
# The baseline: the last commit before the ingest renovation (block parsing, the paused collector, one dumps for
# the labelled lines, the store's id sets), whose store schema and outputs are this tree's.
BASELINE = "1e81d15"
BATCH = 1000  # predictions per append (one time stamp each), as a coalescing server writes them


def write_logs(config: Path, rows: int, share: float, seed: int = 7) -> dict:
    """Fresh logs on the project's volume: `rows` predictions, a label for `share` of them."""
    import pandas as pd

    from services.inference.logs import FeedbackLog, PredictionLog
    from shared.config import load_settings
    from shared.paths import Paths

    settings = load_settings(config, env={})
    paths = Paths.from_settings(settings)
    for d in (paths.prediction_log_dir, paths.feedback_log_dir):
        shutil.rmtree(d, ignore_errors=True)
    clear_monitor(config)
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


def clear_monitor(config: Path) -> None:
    """Remove the monitor's files (state, store, labelled rows, reports); the logs stay."""
    from shared.config import load_settings
    from shared.paths import Paths

    paths = Paths.from_settings(load_settings(config, env={}))
    for d in (paths.labelled_dir, paths.reports_dir):
        shutil.rmtree(d, ignore_errors=True)
    for f in (paths.monitor_state, paths.monitor_store):
        for p in f.parent.glob(f.name + "*"):
            p.unlink()


def baseline_tree(ref: str, into: Path) -> Path:
    """The services and shared packages of commit `ref`, exported from this repository into `into`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "services", "shared"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"cannot export the baseline {ref!r} from {ROOT}: {archive.stderr.decode().strip()}")
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


# The fingerprint's parts both trees must agree on: what was ingested (the report and state carry more since).
INGESTED = ("labelled", "pending", "orphans", "inputs", "windows", "offsets", "totals", "counts")


def tree_configs(config: Path, ref: str | None, work: Path) -> dict[str, Path]:
    """config.yaml per tree: this tree's with compaction off; the baseline's own (from `ref`) on the same volume."""
    import yaml

    from shared.config import load_settings

    volume = str(load_settings(config, env={}).volume)
    current = yaml.safe_load(config.read_text())
    current["volume_root"] = volume
    current.setdefault("logs", {})["compact_each_cycle"] = False
    out = {"current": work / "config.current.yaml"}
    out["current"].write_text(yaml.safe_dump(current, sort_keys=False))
    if ref is not None:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:config.yaml"], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
        base = yaml.safe_load(text)
        base["volume_root"] = volume
        out["baseline"] = work / "config.baseline.yaml"
        out["baseline"].write_text(yaml.safe_dump(base, sort_keys=False))
    return out


def run_cycle(config: Path, tree: Path, out: Path, *, project: Path) -> dict:
    """One cycle in a fresh process importing `tree`'s services and shared (bench/monitor_cycle.py), reading the
    project with `config` (the tree's own); the monitor's files are cleared first (through `project`'s config)."""
    clear_monitor(project)
    env = dict(os.environ, PYTHONPATH=str(tree))
    child = subprocess.run(
        [sys.executable, str(CYCLE), str(config), str(out)], cwd=tree, env=env, capture_output=True, text=True
    )
    if child.returncode != 0:
        raise SystemExit(f"the cycle on {tree} failed:\n{child.stderr[-3000:]}")
    return json.loads(out.read_text())


def differences(a: dict, b: dict, where: str = "") -> list[str]:
    """The keys (dotted) where two fingerprints differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{where}.{k}")]
    return [] if a == b else [where.lstrip(".")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, help="an existing project's config.yaml (default: a throw-away one)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shares", default="0,0.5,1")
    ap.add_argument("--rounds", type=int, default=1, help="cycles per tree and share, alternating (medians)")
    ap.add_argument("--baseline", default=BASELINE, help=f"the git commit to compare with (default {BASELINE})")
    ap.add_argument("--no-baseline", action="store_true", help="measure this tree only")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="clockwork-monitor-bench-"))
    config = args.config
    if config is None:
        from bench.inference_bench import build_project

        config = build_project(work / "project")
    trees = {"current": ROOT}
    if not args.no_baseline:
        trees = {"baseline": baseline_tree(args.baseline, work / "baseline"), **trees}
    configs = tree_configs(config, None if args.no_baseline else args.baseline, work)
    status = 0
    for share in (float(s) for s in args.shares.split(",")):
        written = write_logs(config, args.rows, share)
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                runs[name].append(run_cycle(configs[name], tree, work / f"{name}.json", project=config))
        result: dict = {"labelled_share": share, **written}
        for name, cycles in runs.items():
            fields = ("seconds", "cpu_seconds", "ingest_seconds", "peak_rss_mb")
            result[name] = {f: round(statistics.median(c[f] for c in cycles), 2) for f in fields}
            result[name] |= {f: cycles[0][f] for f in ("joined", "pending_after")}
            result[name]["per_round"] = [[c["seconds"], c["cpu_seconds"]] for c in cycles]
        prints = [{k: c["fingerprint"].get(k) for k in INGESTED} for cycles in runs.values() for c in cycles]
        diff = sorted({d for p in prints[1:] for d in differences(prints[0], p)})
        result["identical"] = not diff
        if diff:
            result["differences"] = diff
            status = 1
        if "baseline" in runs:
            b, c = result["baseline"], result["current"]
            result["ratio_baseline_over_current"] = {
                "wall": round(b["seconds"] / c["seconds"], 2),
                "cpu": round(b["cpu_seconds"] / c["cpu_seconds"], 2),
                "peak_rss": round(b["peak_rss_mb"] / c["peak_rss_mb"], 2),
            }
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    for name in trees:  # the throw-away project (if one was built) stays, for another run with --config
        (work / f"{name}.json").unlink(missing_ok=True)
    shutil.rmtree(work / "baseline", ignore_errors=True)
    if args.config is not None:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
