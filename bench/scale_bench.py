"""Scale benchmark: single-row /predict throughput with 1 and with 2 inference processes (deployment.workers).

    .venv/bin/python -m bench.scale_bench [--config PATH] [--seconds 5] [--rounds 3] [--out FILE]

Without --config it builds a throw-away project as bench/inference_bench.py does (prep + one model). It starts
two services on the same volume and model, `python -m services.inference serve` with deployment.workers 1 and 2
(a copy of config.yaml beside it differs in that key only), and drives both with the same load generator
(bench/loadgen.py, raw keep-alive sockets, closed loop), alternating rounds so that noise hits both alike.
CPU placement: with 4 or more cores the servers share the first half of the cores and the load generator the
rest; with fewer, nothing is pinned (on 2 cores the client competes with the servers for both; the report says
so, and the CPU-time figures show what each request cost the server whatever the placement).

Reports (medians over rounds): req/s of each, the ratio 2 workers / 1 worker, and requests per CPU-second of
the server (the parent and its workers summed). Checks that every answered request was logged: across both
workers' logs for the 2-worker service. Not a test: a benchmark, bounded in requests and time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.inference_bench import Server, build_project, free_port, reading_body
from bench.loadgen import run_load

ROOT = Path(__file__).resolve().parent.parent
WORKERS = (1, 2)


def workers_variant(config: Path, workers: int) -> Path:
    """A copy of config.yaml beside it with deployment.workers set (same volume, same model)."""
    import yaml

    cfg = yaml.safe_load(config.read_text())
    cfg["deployment"]["workers"] = workers
    out = config.with_name(f"config-workers{workers}.yaml")
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its descendants so far."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def count_lines(paths: list[Path]) -> int:
    n = 0
    for path in paths:
        if path.exists():
            with open(path, "rb") as f:
                n += sum(chunk.count(b"\n") for chunk in iter(lambda f=f: f.read(1 << 20), b""))
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.scale_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", help="an existing project whose pinned model to serve (default: build a temporary one)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections per client process")
    p.add_argument("--clients", type=int, default=1, help="client processes")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 4:
        server_cpus, client_cpus = set(cores[: len(cores) // 2]), set(cores[len(cores) // 2 :])
    else:
        server_cpus = client_cpus = None
    tmp = None
    if args.config:
        config = Path(args.config).resolve()
    else:
        tmp = Path(tempfile.mkdtemp(prefix="clockwork-scale-bench-"))
        print(f"building a benchmark project in {tmp} (prep + train) ...", flush=True)
        config = build_project(tmp / "project")

    from shared.config import load_settings
    from shared.paths import Paths

    settings = load_settings(config)
    paths = Paths.from_settings(settings)
    body = reading_body(settings)
    env = dict(os.environ, PYTHONPATH=str(ROOT), CLOCKWORK_LOG_LEVEL="WARNING")
    servers: dict[int, Server] = {}
    # one process keeps the id it is given; N > 1 suffixes it (services/inference/workers.py)
    logs = {n: [paths.prediction_log(f"scale{n}-{i}" if n > 1 else f"scale{n}") for i in range(n)] for n in WORKERS}
    results: dict = {
        "machine": {
            "cpus": len(cores),
            "server_cpus": sorted(server_cpus or []),
            "client_cpus": sorted(client_cpus or []),
            "pinned": server_cpus is not None,
        },
        "settings": vars(args) | {"config": str(config)},
        "model": {"n_estimators": settings.model_params.n_estimators, "max_depth": settings.model_params.max_depth},
    }
    try:
        for n in WORKERS:
            port = free_port()
            cmd = ["-m", "services.inference", "serve", "--config", str(workers_variant(config, n))]
            servers[n] = Server(
                f"{n} worker(s)",
                [*cmd, "--instance-id", f"scale{n}"],
                port,
                server_cpus,
                dict(env, CLOCKWORK_PORT=str(port)),
            )
        for s in servers.values():
            s.wait_ready("/predict", body)
        before = {n: count_lines(logs[n]) for n in WORKERS}

        def drive(n: int, seconds: float):
            return run_load(
                host="127.0.0.1",
                port=servers[n].port,
                path="/predict",
                body=body,
                processes=args.clients,
                connections=args.connections,
                seconds=seconds,
                max_requests=10_000_000,
                cpus=client_cpus,
            )

        for n in WORKERS:  # warm-up (both workers of the 2-worker service get connections)
            drive(n, 1.0)
        req_s: dict[int, list[float]] = {n: [] for n in WORKERS}
        per_cpu: dict[int, list[float]] = {n: [] for n in WORKERS}
        ratios: list[float] = []
        answered = {n: 0 for n in WORKERS}
        for rnd in range(args.rounds):
            for n in WORKERS:
                cpu0 = cpu_seconds(servers[n].proc.pid)
                r = drive(n, args.seconds)
                cpu = cpu_seconds(servers[n].proc.pid) - cpu0
                if r.errors:
                    raise SystemExit(f"{n} worker(s): {r.errors} failed requests ({r.statuses})")
                answered[n] += r.requests
                req_s[n].append(r.requests / r.seconds)
                per_cpu[n].append(r.requests / cpu if cpu > 0 else float("nan"))
                print(
                    f"round {rnd + 1}: {n} worker(s) {req_s[n][-1]:8.0f} req/s  {per_cpu[n][-1]:8.0f} req per "
                    "server CPU-second",
                    flush=True,
                )
            ratios.append(req_s[2][-1] / req_s[1][-1])
        medians = {n: statistics.median(v) for n, v in req_s.items()}
        cpu_medians = {n: statistics.median(v) for n, v in per_cpu.items()}
        ratio = medians[2] / medians[1]
        results["throughput"] = {
            "runs_req_s": req_s,
            "median_req_s": medians,
            "ratio_2_over_1": ratio,
            "round_ratios": ratios,
            "runs_req_per_cpu_s": per_cpu,
            "median_req_per_cpu_s": cpu_medians,
        }
        placement = "servers and client pinned apart" if server_cpus else "unpinned: the client shares the cores"
        print(
            f"/predict: 1 worker {medians[1]:.0f} req/s, 2 workers {medians[2]:.0f} req/s, ratio {ratio:.2f} "
            f"(per-round ratios {', '.join(f'{x:.2f}' for x in ratios)}; {len(cores)} cores, {placement})",
            flush=True,
        )
        print(
            f"per server CPU-second: 1 worker {cpu_medians[1]:.0f} req, 2 workers {cpu_medians[2]:.0f} req",
            flush=True,
        )
    finally:
        for s in servers.values():
            s.stop()
    logged = {n: count_lines(logs[n]) - before[n] for n in WORKERS}
    split = {p.stem: count_lines([p]) for p in logs[2]}  # how the kernel spread the connections
    results["prediction_logs"] = {"answered_measured": answered, "lines_written": logged, "per_worker": split}
    print(f"prediction logs: {logged} lines for {answered} measured answers (plus warm-up)", flush=True)
    print(f"2 workers, lines per worker: {split}", flush=True)
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    if any(logged[n] < answered[n] for n in WORKERS):
        raise SystemExit("a service logged fewer predictions than it answered")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
