"""The fault suite's tools: real service processes, a load loop that counts what it got, log counters, ledgers.

A fault test states its ledger (what went in must come out: messages sent = done + dead-lettered,
predictions answered = predictions logged) with `Ledger`, whose assertion message carries every count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from shared.config import Settings
from shared.paths import Paths
from shared.registry import Registry
from tests.conftest import ROOT, RedisServer, free_port, wait_for

READING = {
    "type": "M",
    "air_temperature_k": 298.1,
    "process_temperature_k": 308.6,
    "rotational_speed_rpm": 1551.0,
    "torque_nm": 42.8,
    "tool_wear_min": 0.0,
}


# --- ledgers ---------------------------------------------------------------------------------------------
def record_ledger(title: str, **counts: object) -> None:
    """Append one experiment's figures to $CLOCKWORK_LEDGER_LOG when set (the closing note's scenario table)."""
    path = os.environ.get("CLOCKWORK_LEDGER_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{title}: " + ", ".join(f"{k}={v}" for k, v in counts.items()) + "\n")


@dataclass
class Ledger:
    """Named counts of one experiment; `balance` and `zero` assert with all of them in the message."""

    title: str
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        record_ledger(self.title, **self.counts)

    def __str__(self) -> str:
        return f"{self.title} ledger: " + ", ".join(f"{k}={v}" for k, v in self.counts.items())

    def balance(self, left: str | list[str], right: str | list[str]) -> None:
        """sum(left) == sum(right), e.g. balance("sent", ["done", "dead_lettered"])."""
        lhs = [left] if isinstance(left, str) else left
        rhs = [right] if isinstance(right, str) else right
        a, b = sum(self.counts[k] for k in lhs), sum(self.counts[k] for k in rhs)
        assert a == b, f"{self}: {' + '.join(lhs)} ({a}) != {' + '.join(rhs)} ({b})"

    def zero(self, *names: str) -> None:
        bad = {k: self.counts[k] for k in names if self.counts[k] != 0}
        assert not bad, f"{self}: expected zero {bad}"

    def exactly(self, **expected: int) -> None:
        bad = {k: self.counts[k] for k, v in expected.items() if self.counts[k] != v}
        assert not bad, f"{self}: expected {expected}, got {bad}"

    def positive(self, *names: str) -> None:
        bad = {k: self.counts[k] for k in names if self.counts[k] <= 0}
        assert not bad, f"{self}: expected some {bad}"


# --- Redis with its data on disk -------------------------------------------------------------------------
class PersistentRedis(RedisServer):
    """A redis-server whose data survives SIGKILL: append-only file, fsync on every write."""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(_redis_cmd(self.port, self.workdir)),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _pings(self.url), 10.0, what=f"redis-server on port {self.port}")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def _redis_cmd(port: int, workdir: Path) -> list[str]:
    from shared.embedded_redis import redis_binary

    return [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False


# --- service processes -----------------------------------------------------------------------------------
def service_env(redis_url: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CLOCKWORK_LOG_LEVEL="INFO", **extra)
    if redis_url:
        env["CLOCKWORK_REDIS_URL"] = redis_url
    return env


class Proc:
    """`python -m services.<name> ...` with its stderr in a file (read it with `.log()`)."""

    def __init__(self, settings: Settings, *args: str, log: Path, env: dict[str, str]) -> None:
        self.args = args
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", *args, "--config", str(settings.config_path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        self._log.close()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        finally:
            self._log.close()

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        finally:
            self._log.close()


class Inference(Proc):
    """`python -m services.inference serve --instance-id ID` on a free port; `ready()` waits for /ready."""

    def __init__(self, settings: Settings, instance_id: str, *, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.instance_id = instance_id
        env = dict(env or service_env(), CLOCKWORK_HOST="127.0.0.1", CLOCKWORK_PORT=str(self.port))
        super().__init__(settings, "services.inference", "serve", "--instance-id", instance_id, log=log, env=env)

    def ready(self, timeout: float = 30.0) -> dict:
        def probe():
            assert self.alive(), f"inference {self.instance_id} exited: {self.log()[-2000:]}"
            try:
                r = httpx.get(f"{self.url}/ready", timeout=2)
            except httpx.TransportError:
                return None
            return r.json() if r.status_code == 200 else None

        return wait_for(probe, timeout, what=f"inference {self.instance_id} ready")

    def get(self, route: str) -> httpx.Response:
        return httpx.get(f"{self.url}{route}", timeout=5)

    def metric(self, name: str) -> float:
        """A sample's value from /metrics (0 when absent)."""
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


# --- load --------------------------------------------------------------------------------------------------
@dataclass
class Answer:
    status: int  # -1: the request failed without an HTTP answer
    version: str | None
    request_id: str | None
    error: str | None = None


class Load:
    """Client threads posting /predict in a loop over keep-alive connections; every answer is kept.

    `rate` (requests per second over all threads) paces the clients; None sends as fast as answers come.
    """

    def __init__(self, url: str, threads: int = 2, reading: dict | None = None, rate: float | None = None) -> None:
        self.url = url
        self.reading = reading or READING
        self.pause = threads / rate if rate else 0.0
        self.stop_event = threading.Event()
        self.results: list[list[Answer]] = [[] for _ in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        out = self.results[i]
        with httpx.Client(base_url=self.url, timeout=10) as c:
            while not self.stop_event.is_set():
                try:
                    r = c.post("/predict", json=self.reading)
                    body = r.json() if r.status_code == 200 else {}
                    out.append(Answer(r.status_code, body.get("model_version"), body.get("request_id")))
                except Exception as e:  # noqa: BLE001 - a failed request is what the ledger counts
                    out.append(Answer(-1, None, None, repr(e)))
                if self.pause:
                    self.stop_event.wait(self.pause)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(15)

    @property
    def all(self) -> list[Answer]:
        return [a for r in self.results for a in r]

    def count(self) -> int:
        return sum(len(r) for r in self.results)

    def wait_more(self, n: int, timeout: float = 20.0) -> None:
        """Wait until `n` more requests were answered (or failed) than now."""
        start = self.count()
        wait_for(lambda: self.count() >= start + n, timeout, what=f"{n} more requests to {self.url}")

    @property
    def answered(self) -> list[Answer]:
        return [a for a in self.all if a.status == 200]

    @property
    def failed(self) -> list[Answer]:
        return [a for a in self.all if a.status != 200]


# --- logs ------------------------------------------------------------------------------------------------
def logged_predictions(paths: Paths, instance_id: str) -> list[dict]:
    """Every complete record of an instance's prediction log."""
    path = paths.prediction_log(instance_id)
    if not path.is_file():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


# --- the registry ----------------------------------------------------------------------------------------
def models_per_message(registry: Registry) -> dict[str, list[str]]:
    """message id -> the versions registered for it (one each, or a message was trained twice)."""
    out: dict[str, list[str]] = {}
    for version in registry.versions():
        mid = (registry.metadata(version).get("trigger") or {}).get("message_id")
        out.setdefault(mid, []).append(version)
    return out
