"""Monitor fixtures: a prepped project with model v1 registered (trained once per session, copied per test)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared.config import Settings, load_settings
from shared.paths import Paths


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory, prepped_template) -> Path:
    from services.trainer.train import train_and_register

    dest = tmp_path_factory.mktemp("trained") / "project"
    shutil.copytree(prepped_template, dest)
    settings = load_settings(dest / "config.yaml", env={})
    train_and_register(settings, trigger={"kind": "command", "command": "tests/monitor fixture"})
    return dest


@pytest.fixture
def trained(tmp_path, trained_template) -> Settings:
    """A private project: prep done, v1 registered and pinned (config's deployment.model_version)."""
    dest = tmp_path / "project"
    shutil.copytree(trained_template, dest)
    return load_settings(dest / "config.yaml", env={})


@pytest.fixture
def paths(trained) -> Paths:
    return Paths.from_settings(trained)
