"""Lineage benchmark: the lineage index against the full scan it replaced, and /predict beside /lineage loopers.

    .venv/bin/python -m bench.lineage_bench [--sizes 1000000,10000000] [--lookups 1000] [--scan-lookups 10]
                                            [--seconds 3] [--rounds 3] [--no-service] [--out FILE]

It builds a throw-away project in a temporary folder (bench.inference_bench.build_project: prep, one model), then
for each size writes a synthetic prediction log of that many lines (4 instance files, plus a feedback line for
one request in ten), bytes written directly in the format services/inference/logs.py writes (the same orjson
options; checked against it), and reports:
- the index build from nothing (`LineageIndex.catch_up`): seconds, rows/s, index size;
- a catch-up after 1,000 new lines (what every lookup pays when traffic goes on);
- lookups of random logged ids, p50/p99 ms: the index (catch-up + query + pread + parse) and the whole
  `shared.lineage.lineage` chain; the former full scan (kept below as `scan`, the code the index replaced) for a
  few ids at the first size only, and the ratio.
Then the 12-loopers run (tests/faults/test_inference_faults.py's experiment): `python -m services.inference` on the
project of the last size, /predict throughput alone and with 12 clients looping on GET /lineage/<a logged id>
(alternating rounds, medians). Not a test: a benchmark.
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
import time
from pathlib import Path

import httpx
import orjson

from bench.inference_bench import BODY, build_project, free_port, percentile
from bench.loadgen import run_load
from shared.config import load_settings
from shared.lineage import lineage
from shared.lineage_index import LineageIndex
from shared.paths import LOG_SUFFIX, Paths
from shared.schemas import PredictionRecord

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = 4
KEY = "bench-lineage-key"
LINE_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE  # services/inference/logs.py


def record(i: int, rid: str) -> dict:
    """The i-th synthetic prediction, as services/inference/logs.py's PredictionLog.append builds it."""
    return {
        "time": f"2026-01-{1 + i // 86_400_000 % 28:02d}T{i // 3_600_000 % 24:02d}:{i // 60_000 % 60:02d}:"
        f"{i // 1000 % 60:02d}.{i % 1000 * 1000:06d}Z",
        "request_id": rid,
        "model_version": "v1",
        "inputs": {
            "type": "LMH"[i % 3],
            "air_temperature_k": 295.0 + (i % 97) / 10,
            "process_temperature_k": 305.0 + (i % 89) / 10,
            "rotational_speed_rpm": float(1200 + i % 1500),
            "torque_nm": 20.0 + (i % 400) / 10,
            "tool_wear_min": float(i % 250),
        },
        "probability": (i % 9973) / 9973,
        "label": int(i % 9973 >= 4986),
        "threshold": 0.5,
    }


def write_logs(paths: Paths, n: int) -> list[str]:
    """n prediction lines over INSTANCES files (ids like RequestIds: <prefix>-<counter>), a feedback line for one in
    ten; the request ids. Lines are built from a template (orjson for the varying parts), checked against orjson."""
    for d in (paths.prediction_log_dir, paths.feedback_log_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    prefixes = [f"{random.getrandbits(64):016x}" for _ in range(INSTANCES)]
    ids: list[str] = []
    per = n // INSTANCES
    for k, prefix in enumerate(prefixes):
        instance = f"bench{k}{LOG_SUFFIX}"
        with open(paths.prediction_log_dir / instance, "wb") as pf, open(paths.feedback_log_dir / instance, "wb") as ff:
            for lo in range(0, per, 100_000):
                batch = range(lo, min(per, lo + 100_000))
                rids = [f"{prefix}-{j + 1:07x}" for j in batch]
                pairs = list(zip(batch, rids, strict=True))
                pf.write(b"".join(orjson.dumps(record(k * per + j, rid), option=LINE_OPTS) for j, rid in pairs))
                ff.write(b"".join(orjson.dumps({"time": "2026-02-01T00:00:00.000000Z", "request_id": rid,
                                                "label": j % 2}, option=LINE_OPTS)
                                  for j, rid in pairs if j % 10 == 0))  # fmt: skip
                ids += rids
    sample = (paths.prediction_log_dir / f"bench0{LOG_SUFFIX}").read_bytes()[:4000].split(b"\n")[0]
    assert PredictionRecord.model_validate_json(sample).to_line().encode() == sample, sample  # the services' format
    return ids


def scan(directory: Path, request_id: str) -> list[tuple[Path, int, bytes]]:
    """The full scan the index replaced (shared/lineage.py before the index): every *.jsonl read in 64 KiB blocks,
    searched for `"request_id":"<id>"`; (file, line number, line) of the complete lines holding it."""
    needle = b'"request_id":"' + request_id.encode() + b'"'
    found = []
    for path in sorted(directory.glob(f"*{LOG_SUFFIX}")):
        lines_before, tail = 0, b""
        with open(path, "rb") as f:
            while True:
                data = f.read(1 << 16)
                block = tail + data if tail else data
                counted_to, line_no = 0, lines_before
                at = block.find(needle)
                while at >= 0:
                    start = block.rfind(b"\n", 0, at) + 1
                    end = block.find(b"\n", at)
                    if end < 0:
                        break
                    line_no += block.count(b"\n", counted_to, start)
                    counted_to = start
                    found.append((path, line_no + 1, block[start : end + 1]))
                    at = block.find(needle, end + 1)
                if not data:
                    break
                cut = block.rfind(b"\n") + 1
                if at >= 0 and cut > 0:
                    cut = min(cut, block.rfind(b"\n", 0, at) + 1)
                lines_before += block.count(b"\n", 0, cut)
                tail = block[cut:]
    return found


def timed(fn, ids: list[str]) -> list[float]:
    out = []
    for rid in ids:
        t = time.perf_counter()
        fn(rid)
        out.append((time.perf_counter() - t) * 1000)
    return out


def stats_ms(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": round(percentile(values, 0.5), 3), "p99_ms": round(percentile(values, 0.99), 3)}


def index_lookup(paths: Paths):
    def look(rid: str) -> None:
        hits = LineageIndex(paths).find(rid)
        assert any(h.kind == "prediction" for h in hits), rid
        PredictionRecord.model_validate_json(next(h.text for h in hits if h.kind == "prediction"))

    return look


def scan_lookup(paths: Paths):
    def look(rid: str) -> None:
        (_, _, line), *_ = scan(paths.prediction_log_dir, rid)
        scan(paths.feedback_log_dir, rid)
        PredictionRecord.model_validate_json(line)

    return look


def size_run(paths: Paths, n: int, *, lookups: int, scan_lookups: int) -> dict:
    t = time.perf_counter()
    ids = write_logs(paths, n)
    written_s = time.perf_counter() - t
    log_bytes = sum(p.stat().st_size for d in (paths.prediction_log_dir, paths.feedback_log_dir) for p in d.iterdir())
    for p in paths.lineage_index.parent.glob(paths.lineage_index.name + "*"):
        p.unlink()
    t = time.perf_counter()
    built = LineageIndex(paths).catch_up()
    build_s = time.perf_counter() - t
    out: dict = {"lines": n, "log_bytes": log_bytes, "write_s": round(written_s, 1), "build_s": round(build_s, 2),
                 "build_rows_per_s": round(built.rows / build_s), "index_rows": built.rows,
                 "index_bytes": paths.lineage_index.stat().st_size}  # fmt: skip
    with open(paths.prediction_log_dir / f"bench0{LOG_SUFFIX}", "ab") as f:
        f.write(b"".join(orjson.dumps(record(i, f"new-{i}"), option=LINE_OPTS) for i in range(1000)))
    t = time.perf_counter()
    new = LineageIndex(paths).catch_up()
    out["catch_up_1000_new_ms"] = round((time.perf_counter() - t) * 1000, 2)
    assert new.rows == 1000, new
    rng = random.Random(n)
    sample = rng.sample(ids, lookups)
    out["index_lookup"] = stats_ms(timed(index_lookup(paths), sample))
    out["lineage_chain"] = stats_ms(timed(lambda rid: lineage(paths, rid), sample[: min(lookups, 200)]))
    if scan_lookups:
        out["scan_lookup"] = stats_ms(timed(scan_lookup(paths), sample[:scan_lookups]))
        out["scan_over_index_p50"] = round(out["scan_lookup"]["p50_ms"] / out["index_lookup"]["p50_ms"])
    return out


LOOPER = """
import sys, threading, time, http.client
port, seconds, n, key, rid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
counts, stop = {}, time.monotonic() + seconds
def loop():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.monotonic() < stop:  # a careless client: no pause, Retry-After ignored
        conn.request("GET", "/lineage/" + rid, headers={"X-API-Key": key})
        r = conn.getresponse(); r.read()
        counts[r.status] = counts.get(r.status, 0) + 1
threads = [threading.Thread(target=loop) for _ in range(n)]
[t.start() for t in threads]; [t.join() for t in threads]
print(counts)
"""


def loopers_run(config: Path, rid: str, *, seconds: float, rounds: int) -> dict:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOCKWORK_")}
    env |= {"CLOCKWORK_PORT": str(port), "CLOCKWORK_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "services.inference", "serve", "--config", str(config),
                             "--instance-id", "served"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("the inference service did not become ready")
            time.sleep(0.2)
        t = time.perf_counter()
        first = httpx.get(f"{url}/lineage/{rid}", headers={"X-API-Key": KEY}, timeout=60)
        first_s = time.perf_counter() - t
        assert first.status_code == 200, first.text[:300]

        def rps() -> float:
            r = run_load(host="127.0.0.1", port=port, path="/predict", body=BODY, connections=16, seconds=seconds)
            assert r.errors == 0, r.statuses
            return r.requests / r.seconds

        alone, contended, answers = [], [], []
        for _ in range(rounds):
            alone.append(rps())
            loopers = subprocess.Popen([sys.executable, "-c", LOOPER, str(port), str(seconds + 1.5), "12", KEY, rid],
                                       stdout=subprocess.PIPE, text=True)  # fmt: skip
            time.sleep(1.0)
            contended.append(rps())
            answers.append(loopers.communicate(timeout=120)[0].strip())
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "first_lookup_s": round(first_s, 3),
        "alone_rps": [round(x) for x in alone],
        "with_12_loopers_rps": [round(x) for x in contended],
        "ratio_of_medians": round(statistics.median(contended) / statistics.median(alone), 3),
        "median_of_ratios": round(statistics.median(c / a for c, a in zip(contended, alone, strict=True)), 3),
        "loopers_answers": answers,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000000,10000000", help="prediction lines per run, comma-separated")
    p.add_argument("--lookups", type=int, default=1000, help="random logged ids looked up through the index")
    p.add_argument("--scan-lookups", type=int, default=10, help="ids looked up by the full scan, first size only")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per /predict throughput run")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the loopers run")
    p.add_argument("--no-service", action="store_true", help="skip the 12-loopers run")
    p.add_argument("--out", help="write the results as JSON here too")
    args = p.parse_args(argv)
    results: dict = {"sizes": []}
    with tempfile.TemporaryDirectory(prefix="lineage-bench-") as tmp:
        config = build_project(Path(tmp) / "project")
        paths = Paths.from_settings(load_settings(config, env={}))
        ids: list[str] = []
        for k, n in enumerate(int(s) for s in args.sizes.split(",")):
            r = size_run(paths, n, lookups=args.lookups, scan_lookups=args.scan_lookups if k == 0 else 0)
            results["sizes"].append(r)
            print(json.dumps(r), flush=True)
            ids = ["new-7"]
        if not args.no_service and ids:
            results["loopers"] = loopers_run(config, ids[0], seconds=args.seconds, rounds=args.rounds)
            print(json.dumps(results["loopers"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
