"""Inference fixtures: `paths` of the served project (v1 and v2 registered, see tests/conftest.py), the app in
process and on a live server."""
from __future__ import annotations

import pytest

from shared.config import Settings
from shared.paths import Paths
from tests.conftest import ROOT, V2_PARAMS, LiveServer  # noqa: F401 - names tests here import


@pytest.fixture
def paths(served: Settings) -> Paths:
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
