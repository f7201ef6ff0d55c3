"""The console in docker-compose.yml (published on the loopback to console.port, a port variable) and local mode."""
from __future__ import annotations

import yaml

from shared.config import load_settings
from tests.conftest import ROOT


def test_the_console_is_published_on_the_loopback_only_to_its_configured_port():
    console = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["console"]
    (mapping,) = console["ports"]
    host, _, container = mapping.rpartition(":")
    assert host.startswith("127.0.0.1:${CLOCKWORK_CONSOLE_PORT")
    assert int(container) == load_settings(ROOT / "config.yaml", env={}).console.port
    assert console["command"][:3] == ["python3", "-m", "services.console"]


def test_the_configured_console_binds_the_loopback():
    assert load_settings(ROOT / "config.yaml", env={}).console.host == "127.0.0.1"
    assert load_settings(ROOT / "examples" / "pump_fleet" / "config.yaml", env={}).console.host == "127.0.0.1"


def test_local_mode_starts_the_console():
    assert 'local.start("console", "console", "serve")' in (ROOT / "scripts" / "run_local.py").read_text()
