"""Fault-suite fixtures: projects with registered models, and a Redis of the test's own that it may kill."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared.config import Settings, load_settings
from tests.conftest import registered_project
from tests.faults.helpers import PersistentRedis
from tests.trainer.helpers import with_config

V2_PARAMS = {"n_estimators": 10, "max_depth": 4}
# Retrains in these tests: a small forest (fast), a short lease (a dead worker's job returns within ~1 s).
RETRAIN = {"model_params.n_estimators": 10, "model_params.max_depth": 4, "redis.lease_s": 1.0}


@pytest.fixture(scope="session")
def faults_served_template(prepped_template, tmp_path_factory) -> Path:
    """prep + v1 (the configured model, pinned) + v2 (a small forest), trained once per session."""
    dest = tmp_path_factory.mktemp("faults-served") / "project"
    registered_project(prepped_template, dest, second_params=V2_PARAMS)
    return dest


@pytest.fixture
def served(tmp_path, faults_served_template) -> Settings:
    """A private copy pinned to v1 whose services poll config.yaml every 0.1 s."""
    dest = tmp_path / "project"
    shutil.copytree(faults_served_template, dest)
    return with_config(load_settings(dest / "config.yaml", env={}), **{"deployment.reload_interval_s": 0.1})


@pytest.fixture
def retrain_project(prepped) -> Settings:
    """A prepped project (no model yet) whose retrains are quick and whose leases are short."""
    return with_config(prepped, **RETRAIN)


@pytest.fixture
def own_redis(tmp_path):
    """A Redis for this test alone (append-only, fsync always: its data survives a SIGKILL)."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = PersistentRedis(workdir)
    server.start()
    yield server
    server.kill()
