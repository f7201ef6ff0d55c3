"""Monitor fixtures: a prepped project with model v1 registered (trained once per session, copied per test)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared.config import Settings, load_settings
from shared.paths import Paths
from tests.conftest import registered_project


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


@pytest.fixture
def paths(trained) -> Paths:
    return Paths.from_settings(trained)
