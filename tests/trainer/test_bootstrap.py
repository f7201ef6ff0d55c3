"""bootstrap: a fresh system trains its first model once; the healthcheck only tells."""

from __future__ import annotations

from services.trainer.train import bootstrap
from shared.paths import Paths
from shared.registry import Registry


def test_bootstrap_trains_the_pinned_first_version_once(prepped):
    registry = Registry(paths=Paths.from_settings(prepped))
    assert bootstrap(prepped, check_only=True) == 1
    assert registry.versions() == []
    assert bootstrap(prepped) == 0
    assert registry.versions() == ["v1"]
    assert registry.metadata("v1")["trigger"]["kind"] == "bootstrap"
    assert bootstrap(prepped) == 0
    assert registry.versions() == ["v1"]
    assert bootstrap(prepped, check_only=True) == 0


def test_bootstrap_check_fails_on_a_corrupt_pinned_model(prepped):
    assert bootstrap(prepped) == 0
    model = Paths.from_settings(prepped).model_file("v1")
    model.write_bytes(model.read_bytes()[:-5] + b"xxxxx")
    assert bootstrap(prepped, check_only=True) == 1
    # A registry with versions but a broken pin is not silently retrained.
    assert bootstrap(prepped) == 1
    assert Registry(paths=Paths.from_settings(prepped)).versions() == ["v1"]
