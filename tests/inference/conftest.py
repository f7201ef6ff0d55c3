"""Fixtures: a project with two registered models (trained once per session), apps and live servers on it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared.config import Settings, load_settings
from shared.paths import Paths
from tests.conftest import ROOT, LiveServer, registered_project  # noqa: F401 - LiveServer used by tests here

V2_PARAMS = {"n_estimators": 20, "max_depth": 6}


@pytest.fixture(scope="session")
def served_template(prepped_template, tmp_path_factory) -> Path:
    """prep + v1 (the configured model) + v2 (a smaller forest), trained once; tests copy it."""
    dest = tmp_path_factory.mktemp("served") / "project"
    registered_project(prepped_template, dest, second_params=V2_PARAMS)
    return dest


def _set(text: str, key: str, value: str) -> str:
    """Replace `  key: ...` (the first one) in config text."""
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
    cfg.write_text(_set(_set(text, "model_version", "v1"), "reload_interval_s", "0.1"))
    return load_settings(cfg, env={})


@pytest.fixture
def paths(served) -> Paths:
    return Paths.from_settings(served)


@pytest.fixture
def client(served):
    from fastapi.testclient import TestClient

    from services.inference.app import create_app

    with TestClient(create_app(served, instance_id="test-1", api_key=None)) as c:
        yield c


@pytest.fixture
def live(served):
    from services.inference.app import create_app

    with LiveServer(create_app(served, instance_id="live-1", api_key=None)) as server:
        yield server
