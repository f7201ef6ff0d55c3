"""Fixtures: a temporary project (config.yaml + volume with the raw data) and a real Redis server."""
from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from shared.config import Settings, load_settings
from shared.embedded_redis import redis_binary

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_project(dest: Path, **overrides) -> Path:
    """A project folder: config.yaml (with dotted-key overrides) and volumes/data/raw with the raw CSV."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    dest.mkdir(parents=True, exist_ok=True)
    raw = dest / "volumes" / cfg["dataset"]["raw_file"]
    raw.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "volumes" / "data" / "raw" / "ai4i2020.csv", raw)
    path = dest / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def project(tmp_path) -> Settings:
    """A fresh project with the default config, the raw data and nothing else."""
    return load_settings(write_project(tmp_path / "project"), env={})


@pytest.fixture(scope="session")
def prepped_template(tmp_path_factory) -> Path:
    """Prep run once per session; tests copy it (see `prepped`)."""
    from services.prep import pipeline

    dest = tmp_path_factory.mktemp("prepped") / "project"
    settings = load_settings(write_project(dest), env={})
    pipeline.run(settings)
    return dest


def registered_project(prepped_template: Path, dest: Path, *, second_params: dict | None = None) -> Settings:
    """A copy of the prepped project with v1 (the configured model) registered, and v2 trained with
    `second_params` in model_params when given."""
    from services.trainer.train import train_and_register

    shutil.copytree(prepped_template, dest)
    settings = load_settings(dest / "config.yaml", env={})
    assert train_and_register(settings, trigger={"kind": "test"})["version"] == "v1"
    if second_params:
        other = settings.model_copy(update={"model_params": settings.model_params.model_copy(update=second_params)})
        assert train_and_register(other, trigger={"kind": "test"})["version"] == "v2"
    return settings


def wait_for(predicate, timeout: float = 15.0, *, every: float = 0.05, what: str = "condition"):
    """Poll until predicate() is truthy and return its value; fail the test after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def prepped(tmp_path, prepped_template) -> Settings:
    """A fresh project on which prep has run (a private copy: tests may change it)."""
    dest = tmp_path / "project"
    shutil.copytree(prepped_template, dest)
    return load_settings(dest / "config.yaml", env={})


class RedisServer:
    """A real redis-server on a free loopback port; kill() and start() to test faults."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_client(redis_server):
    """A client on a flushed database."""
    import redis

    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


class LiveServer:
    """uvicorn in a thread on a free port (real HTTP, real lifespan)."""

    def __init__(self, app) -> None:
        import uvicorn

        from services.inference.__main__ import uvicorn_config

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)


# --- projects with registered models (trained once per session, copied per test) ---------------------------
V2_PARAMS = {"n_estimators": 20, "max_depth": 6}


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory, prepped_template) -> Path:
    dest = tmp_path_factory.mktemp("trained") / "project"
    registered_project(prepped_template, dest)
    return dest


@pytest.fixture
def trained(tmp_path, trained_template) -> Settings:
    """A private project: prep done, v1 registered and pinned (config's deployment.model_version)."""
    dest = tmp_path / "project"
    shutil.copytree(trained_template, dest)
    return load_settings(dest / "config.yaml", env={})


@pytest.fixture(scope="session")
def served_template(prepped_template, tmp_path_factory) -> Path:
    """prep + v1 (the configured model) + v2 (a smaller forest), trained once; tests copy it."""
    dest = tmp_path_factory.mktemp("served") / "project"
    registered_project(prepped_template, dest, second_params=V2_PARAMS)
    return dest


def set_config_line(text: str, key: str, value: str) -> str:
    """Replace `  key: ...` (the first one) in config text, keeping everything else (comments included)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip().startswith(f"{key}:"):
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = f"{indent}{key}: {value}\n"
            return "".join(lines)
    raise KeyError(key)


@pytest.fixture
def served(tmp_path, served_template) -> Settings:
    """A private copy of the served project, its config.yaml the repository's own text (comments included),
    pinned to v1, with a short deployment.reload_interval_s so that swaps are quick."""
    dest = tmp_path / "project"
    shutil.copytree(served_template, dest)
    cfg = dest / "config.yaml"
    text = (ROOT / "config.yaml").read_text()
    cfg.write_text(set_config_line(set_config_line(text, "model_version", "v1"), "reload_interval_s", "0.1"))
    return load_settings(cfg, env={})


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """A command's main() configures the root logger (shared.logging_setup, force=True) onto the stderr pytest
    captured for that test: restore the root logger after each test, so no test inherits its level or a
    handler whose stream is closed."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
