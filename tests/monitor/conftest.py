"""Monitor fixtures: `paths` of the trained project (v1 registered and pinned, see tests/conftest.py)."""
from __future__ import annotations

import pytest

from shared.config import Settings
from shared.paths import Paths


@pytest.fixture
def paths(trained: Settings) -> Paths:
    return Paths.from_settings(trained)
