"""Live shadow benchmark: /predict throughput without and with deployment.shadow_version, in the same run.

    .venv/bin/python -m bench.shadow_bench [--config PATH --shadow vN] [--seconds 5] [--rounds 5] [--out FILE]

Without --config it builds a throw-away project (bench/inference_bench.py's: prep, v1 from the repository's
config.yaml) and registers a candidate v2 of the same size (model_params.random_state + 1: what a retrain
yields), so the shadow costs what a real one would. Two services start as separate uvicorn processes over the
same volume and model (bench/inference_bench.py's Server, pinned to core 0 when there are two or more cores,
the load generator on the others): `plain` (config.yaml as it is) and `shadow` (a copy with
deployment.shadow_version set). Rounds alternate between them so that noise hits both alike.

Reports: single-row /predict req/s of each (closed loop), the ratio shadow / plain (of the medians, and the
median of the per-round ratios), requests per CPU-second of each server, /predict/batch rows/s of each at
--batch-rows, rows per ONNX call; checks that every line the shadow service logged carries the shadow's answer
and that no shadow error was counted. Not a test: a benchmark, bounded in requests and time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

from bench.inference_bench import Server, build_project, free_port, reading_body
from bench.loadgen import run_load

TARGET = 0.75  # the shadow may cost at most 25% of /predict throughput


def add_candidate(config: Path) -> str:
    """Register a candidate of the same size as the pinned model (another seed); its version."""
    from services.trainer.train import train_and_register
    from shared.config import load_settings

    s = load_settings(config, env={})
    params = s.model_params.model_copy(update={"random_state": s.model_params.random_state + 1})
    return train_and_register(s.model_copy(update={"model_params": params}), trigger={"kind": "benchmark"})["version"]


def shadow_variant(config: Path, version: str) -> Path:
    """A copy of config.yaml beside it with deployment.shadow_version set (same volume, same pin)."""
    import yaml

    cfg = yaml.safe_load(config.read_text())
    cfg["deployment"]["shadow_version"] = version
    out = config.with_name("config-shadow.yaml")
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.shadow_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", help="an existing project (default: build a temporary one)")
    p.add_argument("--shadow", help="the shadow version, with --config (default: a candidate registered here)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    p.add_argument("--rounds", type=int, default=5, help="alternating throughput rounds per server")
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections per client process")
    p.add_argument("--clients", type=int, default=1, help="client processes")
    p.add_argument("--batch-rows", type=int, default=100, help="rows per /predict/batch request (0: skip)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    if bool(args.config) != bool(args.shadow):
        p.error("--config and --shadow go together")

    ncpu = len(os.sched_getaffinity(0))
    server_cpus = {0} if ncpu >= 2 else None
    client_cpus = set(sorted(os.sched_getaffinity(0))[1:]) if ncpu >= 2 else None
    tmp = None
    if args.config:
        config, shadow = Path(args.config).resolve(), args.shadow
    else:
        tmp = Path(tempfile.mkdtemp(prefix="clockwork-shadow-bench-"))
        print(f"building a benchmark project in {tmp} (prep + train v1 + a candidate) ...", flush=True)
        config = build_project(tmp / "project")
        shadow = add_candidate(config)

    from shared.config import load_settings
    from shared.paths import Paths

    settings = load_settings(config)
    one_reading = reading_body(settings)
    configs = {"plain": config, "shadow": shadow_variant(config, shadow)}
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), CLOCKWORK_LOG_LEVEL="WARNING")
    servers = {}
    for name, cfg in configs.items():
        port = free_port()
        servers[name] = Server(
            name,
            ["-m", "services.inference", "serve", "--config", str(cfg), "--instance-id", f"bench-{name}"],
            port,
            server_cpus,
            dict(env, CLOCKWORK_PORT=str(port)),
        )
    results: dict = {
        "machine": {"cpus": ncpu, "server_cpus": sorted(server_cpus or []), "client_cpus": sorted(client_cpus or [])},
        "settings": vars(args) | {"served": settings.deployment.model_version, "shadow": shadow},
    }
    try:
        for s in servers.values():
            s.wait_ready("/predict", one_reading)

        def drive(name: str, path: str = "/predict", body: bytes = one_reading, seconds: float = args.seconds):
            r = run_load(
                host="127.0.0.1",
                port=servers[name].port,
                path=path,
                body=body,
                processes=args.clients,
                connections=args.connections,
                seconds=seconds,
                max_requests=10_000_000,
                cpus=client_cpus,
            )
            if r.errors:
                raise SystemExit(f"{name} {path}: {r.errors} failed requests ({r.statuses})")
            return r

        for name in servers:  # warm-up
            drive(name, seconds=1.0)
        req_s: dict[str, list[float]] = {name: [] for name in servers}
        per_cpu: dict[str, list[float]] = {name: [] for name in servers}
        round_ratios = []
        for rnd in range(args.rounds):
            for name in servers if rnd % 2 == 0 else reversed(servers):
                cpu0 = servers[name].cpu_seconds()
                r = drive(name)
                cpu = servers[name].cpu_seconds() - cpu0
                req_s[name].append(r.requests / r.seconds)
                per_cpu[name].append(r.requests / cpu if cpu > 0 else float("nan"))
                print(f"round {rnd + 1}: {name:6s} {req_s[name][-1]:8.0f} req/s  {per_cpu[name][-1]:8.0f} req per "
                      "CPU-second", flush=True)  # fmt: skip
            round_ratios.append(req_s["shadow"][-1] / req_s["plain"][-1])
        medians = {name: statistics.median(v) for name, v in req_s.items()}
        cpu_medians = {name: statistics.median(v) for name, v in per_cpu.items()}
        ratio = medians["shadow"] / medians["plain"]
        results["predict"] = {
            "runs_req_s": req_s,
            "median_req_s": medians,
            "ratio": ratio,
            "round_ratios": round_ratios,
            "median_round_ratio": statistics.median(round_ratios),
            "runs_req_per_cpu_s": per_cpu,
            "median_req_per_cpu_s": cpu_medians,
            "ratio_per_cpu": cpu_medians["shadow"] / cpu_medians["plain"],
        }
        print(f"/predict: plain {medians['plain']:.0f} req/s, shadow {medians['shadow']:.0f} req/s, ratio of medians "
              f"{ratio:.3f}, median of per-round ratios {statistics.median(round_ratios):.3f} (target >= {TARGET})",
              flush=True)  # fmt: skip

        if args.batch_rows:
            body = json.dumps({"readings": [json.loads(one_reading)] * args.batch_rows}).encode()
            batch = {}
            for name in servers:
                r = drive(name, path="/predict/batch", body=body)
                batch[name] = r.requests * args.batch_rows / r.seconds
                print(f"/predict/batch {args.batch_rows} rows: {name:6s} {batch[name]:9.0f} rows/s", flush=True)
            results["batch"] = {"rows": args.batch_rows, "rows_s": batch, "ratio": batch["shadow"] / batch["plain"]}

        texts = {n: httpx.get(f"http://127.0.0.1:{s.port}/metrics", timeout=5).text for n, s in servers.items()}
        onnx = {n: metric(t, "clockwork_inference_onnx_rows_total") / metric(t, "clockwork_inference_onnx_runs_total")
                for n, t in texts.items()}  # fmt: skip
        errors = metric(texts["shadow"], "clockwork_shadow_errors_total")
        shadow_rows = metric(texts["shadow"], "clockwork_shadow_rows_total")
        log_path = Paths.from_settings(settings).prediction_log("bench-shadow")
        with open(log_path, "rb") as f:
            lines = f.read().splitlines()
        unshadowed = sum(1 for line in lines if b'"shadow":{"label"' not in line)
        results["checks"] = {
            "rows_per_onnx_call": onnx,
            "shadow_errors": errors,
            "shadow_rows": shadow_rows,
            "shadow_log_lines": len(lines),
            "lines_without_shadow": unshadowed,
        }
        print(f"rows per ONNX call: {onnx}; shadow service: {len(lines)} log lines, {unshadowed} without the "
              f"shadow's answer, {shadow_rows:.0f} shadow rows, {errors:.0f} shadow errors", flush=True)  # fmt: skip
        if errors or unshadowed:
            raise SystemExit("the shadow failed on some batches: see the counts above")
    finally:
        for s in servers.values():
            s.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
