"""Inference benchmark: /predict (model + logging + metrics) against validation-only FastAPI baselines.

    .venv/bin/python -m bench.inference_bench [--config PATH] [--seconds 5] [--rounds 3] [--out FILE]

Without --config it builds a throw-away project (raw data copy, prep, one model trained from the
repository's config.yaml) in a temporary folder, so the repository's volume is not touched.
It starts, as separate uvicorn processes with the same settings (one worker, the service's
uvicorn_config): the inference service (`python -m services.inference`) and the baselines of
bench/baseline_app.py. On a machine with two or more cores the servers are pinned to core 0 and the
load generator (bench/loadgen.py, raw keep-alive sockets, separate processes) to the others, so the
client is not what is measured. Rounds alternate between the servers so that noise hits all alike.

Reports: single-row /predict throughput of each server and the ratio service / fastest baseline
(medians over rounds), p50/p99 latency at a fixed request rate (open loop), /predict/batch rows/s.
Not a test: a benchmark, bounded in requests and time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.loadgen import Result, run_load

ROOT = Path(__file__).resolve().parent.parent


def reading_body(settings) -> bytes:
    """The body every server is driven with: the example reading of the config's dataset section (the one the
    service's document shows: mid-range values, first levels), keyed by the data set's own column names."""
    from services.inference.reading import ReadingSchema

    schema = ReadingSchema.build(settings.dataset)
    return json.dumps(schema.by_source(schema.example)).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_project(dest: Path) -> Path:
    """A fresh project: the repository's config.yaml, the raw data, prep, one trained model (v1)."""
    import yaml

    from services.prep import pipeline
    from services.trainer.train import train_and_register
    from shared.config import load_settings

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    raw = dest / cfg["volume_root"] / cfg["dataset"]["raw_file"]
    raw.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "volumes" / cfg["dataset"]["raw_file"], raw)
    shutil.copyfile(ROOT / "config.yaml", dest / "config.yaml")
    settings = load_settings(dest / "config.yaml", env={})
    pipeline.run(settings)
    md = train_and_register(settings, trigger={"kind": "benchmark"})
    if md["version"] != settings.deployment.model_version:
        raise SystemExit(
            f"benchmark project: trained {md['version']} but config pins {settings.deployment.model_version}"
        )
    return dest / "config.yaml"


class Server:
    def __init__(self, name: str, args: list[str], port: int, cpus: set[int] | None, env: dict) -> None:
        self.name, self.port = name, port
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )

    def wait_ready(self, path: str, body: bytes, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"{self.name} exited: {self.log.read().decode(errors='replace')[-2000:]}")
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{self.port}{path}",
                    content=body,
                    timeout=2,
                    headers={"Content-Type": "application/json"},
                )
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.name} did not answer on port {self.port}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (from /proc)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def inline_variant(config: Path) -> Path:
    """A copy of config.yaml beside it with deployment.coalesce.enabled false (same volume, same model)."""
    import yaml

    cfg = yaml.safe_load(config.read_text())
    cfg["deployment"]["coalesce"]["enabled"] = False
    out = config.with_name("config-inline.yaml")
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.inference_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="an existing project whose pinned model to serve (default: build a temporary one)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    p.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds per server")
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections per client process")
    p.add_argument("--clients", type=int, default=1, help="client processes")
    p.add_argument("--rate", type=float, default=2000.0, help="fixed request rate (req/s) for the latency run")
    p.add_argument("--batch-rows", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="throughput rounds only (no latency, no batch)")
    args = p.parse_args(argv)

    ncpu = len(os.sched_getaffinity(0))
    server_cpus = {0} if ncpu >= 2 else None
    client_cpus = set(sorted(os.sched_getaffinity(0))[1:]) if ncpu >= 2 else None
    tmp = None
    if args.config:
        config = Path(args.config).resolve()
    else:
        tmp = Path(tempfile.mkdtemp(prefix="clockwork-bench-"))
        print(f"building a benchmark project in {tmp} (prep + train) ...", flush=True)
        config = build_project(tmp / "project")

    from shared.config import load_settings
    from shared.paths import Paths

    settings = load_settings(config)
    one_reading = reading_body(settings)
    inline_config = inline_variant(config)
    env = dict(os.environ, PYTHONPATH=str(ROOT), CLOCKWORK_LOG_LEVEL="WARNING")
    ports = {name: free_port() for name in ("service", "service-inline", "baseline-direct", "baseline-fastapi")}
    servers = {
        "service": Server(
            "service",
            ["-m", "services.inference", "serve", "--config", str(config), "--instance-id", "bench"],
            ports["service"],
            server_cpus,
            dict(env, CLOCKWORK_PORT=str(ports["service"])),
        ),
        "service-inline": Server(
            "service-inline",
            ["-m", "services.inference", "serve", "--config", str(inline_config), "--instance-id", "bench-inline"],
            ports["service-inline"],
            server_cpus,
            dict(env, CLOCKWORK_PORT=str(ports["service-inline"])),
        ),
        "baseline-direct": Server(
            "baseline-direct",
            [
                "-m",
                "bench.baseline_app",
                "--config",
                str(config),
                "--variant",
                "direct",
                "--port",
                str(ports["baseline-direct"]),
            ],
            ports["baseline-direct"],
            server_cpus,
            env,
        ),
        "baseline-fastapi": Server(
            "baseline-fastapi",
            [
                "-m",
                "bench.baseline_app",
                "--config",
                str(config),
                "--variant",
                "fastapi",
                "--port",
                str(ports["baseline-fastapi"]),
            ],
            ports["baseline-fastapi"],
            server_cpus,
            env,
        ),
    }
    results: dict = {
        "machine": {"cpus": ncpu, "server_cpus": sorted(server_cpus or []), "client_cpus": sorted(client_cpus or [])},
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "connections": args.connections,
            "clients": args.clients,
            "rate": args.rate,
        },
        "model": {
            "version": settings.deployment.model_version,
            "n_estimators": settings.model_params.n_estimators,
            "max_depth": settings.model_params.max_depth,
        },
    }
    log_path = Paths.from_settings(settings).prediction_log_dir / "bench.jsonl"
    try:
        for s in servers.values():
            s.wait_ready("/predict", one_reading)
        lines_before = _count_lines(log_path)

        def drive(
            name: str,
            path: str = "/predict",
            body: bytes = one_reading,
            seconds: float = args.seconds,
            rate: float | None = None,
        ) -> Result:
            return run_load(
                host="127.0.0.1",
                port=servers[name].port,
                path=path,
                body=body,
                processes=args.clients,
                connections=args.connections if rate is None else 32,
                seconds=seconds,
                max_requests=10_000_000,
                rate=rate,
                cpus=client_cpus,
            )

        for name in servers:  # warm-up
            drive(name, seconds=1.0)
        throughput: dict[str, list[float]] = {name: [] for name in servers}
        per_cpu: dict[str, list[float]] = {name: [] for name in servers}
        round_ratios: list[float] = []
        service_requests = 0
        for rnd in range(args.rounds):
            this_round = {}
            for name in servers:
                cpu0 = servers[name].cpu_seconds()
                r = drive(name)
                cpu = servers[name].cpu_seconds() - cpu0
                if r.errors:
                    raise SystemExit(f"{name}: {r.errors} failed requests ({r.statuses})")
                if name == "service":
                    service_requests += r.requests
                this_round[name] = r.requests / r.seconds
                throughput[name].append(this_round[name])
                per_cpu[name].append(r.requests / cpu if cpu > 0 else float("nan"))
                print(
                    f"round {rnd + 1}: {name:17s} {this_round[name]:8.0f} req/s  "
                    f"{per_cpu[name][-1]:8.0f} req per CPU-second",
                    flush=True,
                )
            round_ratios.append(
                this_round["service"] / max(v for n, v in this_round.items() if n.startswith("baseline"))
            )
        medians = {name: statistics.median(v) for name, v in throughput.items()}
        cpu_medians = {name: statistics.median(v) for name, v in per_cpu.items()}
        fastest = max((n for n in medians if n.startswith("baseline")), key=medians.get)
        ratio = medians["service"] / medians[fastest]
        cpu_fastest = max((n for n in cpu_medians if n.startswith("baseline")), key=cpu_medians.get)
        cpu_ratio = cpu_medians["service"] / cpu_medians[cpu_fastest]
        results["throughput"] = {
            "runs_req_s": throughput,
            "median_req_s": medians,
            "fastest_baseline": fastest,
            "ratio": ratio,
            "round_ratios": round_ratios,
            "median_round_ratio": statistics.median(round_ratios),
            "runs_req_per_cpu_s": per_cpu,
            "median_req_per_cpu_s": cpu_medians,
            "fastest_baseline_per_cpu": cpu_fastest,
            "ratio_per_cpu": cpu_ratio,
        }
        print(
            f"/predict: service {medians['service']:.0f} req/s, "
            f"fastest baseline ({fastest}) {medians[fastest]:.0f} req/s, "
            f"ratio of medians {ratio:.3f}, median of per-round ratios {statistics.median(round_ratios):.3f}",
            flush=True,
        )
        print(
            f"/predict per CPU-second of the server: service {cpu_medians['service']:.0f}, "
            f"fastest baseline ({cpu_fastest}) "
            f"{cpu_medians[cpu_fastest]:.0f}, ratio {cpu_ratio:.3f}",
            flush=True,
        )

        text = httpx.get(f"http://127.0.0.1:{servers['service'].port}/metrics", timeout=5).text
        runs = float(re.search(r"^clockwork_inference_onnx_runs_total (\S+)$", text, re.M).group(1))
        rows = float(re.search(r"^clockwork_inference_onnx_rows_total (\S+)$", text, re.M).group(1))
        results["throughput"]["service_rows_per_onnx_call"] = rows / runs
        print(f"service: {rows / runs:.1f} /predict rows per ONNX call (coalesced)", flush=True)

        latency = {}
        for name in () if args.quick else ("service", "service-inline", fastest):
            r = drive(name, rate=args.rate, seconds=args.seconds)
            if name == "service":
                service_requests += r.requests
            lat = [x * 1000 for x in r.latencies]
            latency[name] = {
                "rate": args.rate,
                "achieved_req_s": r.requests / r.seconds,
                "errors": r.errors,
                "p50_ms": percentile(lat, 0.50),
                "p99_ms": percentile(lat, 0.99),
                "max_ms": max(lat),
            }
            print(
                f"latency at {args.rate:.0f} req/s: {name:17s} p50 {latency[name]['p50_ms']:.3f} ms, "
                f"p99 {latency[name]['p99_ms']:.3f} ms",
                flush=True,
            )
        results["latency"] = latency

        batch = {}
        reading = json.loads(one_reading)
        for rows in () if args.quick else args.batch_rows:
            rows_body = json.dumps({"readings": [reading] * rows}).encode()
            r = drive("service", path="/predict/batch", body=rows_body, seconds=args.seconds)
            if r.errors:
                raise SystemExit(f"/predict/batch with {rows} rows: {r.errors} failed ({r.statuses})")
            service_requests += r.requests * rows
            batch[rows] = {"req_s": r.requests / r.seconds, "rows_s": r.requests * rows / r.seconds}
            print(
                f"/predict/batch {rows:5d} rows: {batch[rows]['req_s']:8.1f} req/s = "
                f"{batch[rows]['rows_s']:9.0f} rows/s",
                flush=True,
            )
        results["batch"] = batch

        time.sleep(0.5)
        logged = _count_lines(log_path) - lines_before
        results["prediction_log"] = {
            "path": str(log_path),
            "lines_written": logged,
            "predictions_measured": service_requests,
        }
        print(f"prediction log: {logged} lines for {service_requests} measured predictions (plus warm-up)", flush=True)
        if logged < service_requests:
            raise SystemExit("the service logged fewer predictions than it answered")
    finally:
        for s in servers.values():
            s.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
