"""Every example's config.yaml is a complete Clockwork config: it loads, and it has the root config's keys."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.config import load_settings
from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*/config.yaml"))


def _keys(node, prefix="") -> set[str]:
    if not isinstance(node, dict):
        return set()
    out = set()
    for k, v in node.items():
        out.add(f"{prefix}{k}")
        if k != "dataset":  # the data set's own description differs by design
            out |= _keys(v, f"{prefix}{k}.")
    return out


def test_there_is_at_least_one_example():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_an_example_config_loads_and_has_the_root_configs_keys(path: Path):
    settings = load_settings(path, env={})
    assert settings.dataset.name != load_settings(ROOT / "config.yaml", env={}).dataset.name
    root, example = (yaml.safe_load(p.read_text()) for p in (ROOT / "config.yaml", path))
    assert _keys(example) == _keys(root), (sorted(_keys(root) - _keys(example)), sorted(_keys(example) - _keys(root)))
