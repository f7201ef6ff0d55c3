"""shared.pin (promote/rollback edit the pin safely) and shared.deploylog (rows, serving_at, rollback target)."""
from __future__ import annotations

import csv
import multiprocessing as mp
from datetime import datetime, timedelta, timezone

import pytest

from services.inference.__main__ import main as cli
from shared import deploylog, pin
from shared.config import Settings, load_settings
from shared.errors import ConfigError, InvalidVersionError, ModelLoadError, NotFoundError
from shared.paths import Paths
from shared.schemas import DEPLOYMENT_LOG_COLUMNS


@pytest.fixture
def paths(served: Settings) -> Paths:
    return Paths.from_settings(served)

def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b) if x != y]


# --- pin -------------------------------------------------------------------------------------
def test_set_pin_changes_one_line_and_keeps_comments(served, paths):
    cfg = served.config_path
    before = cfg.read_text()
    assert pin.read_pin(cfg) == "v1"
    assert pin.set_pin(cfg, "v2", paths=paths) == "v1"
    after = cfg.read_text()
    assert changed_lines(before, after) == [("  model_version: v1", "  model_version: v2")]
    assert "# The model version inference serves." in after
    assert pin.read_pin(cfg) == "v2"
    assert load_settings(cfg, env={}).deployment.model_version == "v2"
    row = deploylog.read_rows(paths)[-1]
    assert (row["event"], row["version"], row["previous_version"]) == ("promote", "v2", "v1")


def test_set_pin_keeps_quotes_and_trailing_comments(served, paths):
    cfg = served.config_path
    cfg.write_text(cfg.read_text().replace("  model_version: v1\n", '  model_version: "v1"   # pinned by hand\n'))
    pin.set_pin(cfg, "v2", paths=paths)
    assert '  model_version: "v2"   # pinned by hand\n' in cfg.read_text()


@pytest.mark.parametrize("version,error", [("v9", NotFoundError), ("../v1", InvalidVersionError), ("2", InvalidVersionError)])
def test_set_pin_refuses_unknown_or_invalid_versions(served, paths, version, error):
    before = served.config_path.read_text()
    with pytest.raises(error):
        pin.set_pin(served.config_path, version, paths=paths)
    assert served.config_path.read_text() == before


def test_set_pin_refuses_a_corrupt_model(served, paths):
    model = paths.model_file("v2")
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    before = served.config_path.read_text()
    with pytest.raises(ModelLoadError, match="sha256"):
        pin.set_pin(served.config_path, "v2", paths=paths)
    assert served.config_path.read_text() == before


def test_set_pin_refuses_an_incomplete_version(served, paths):
    paths.metadata_file("v2").unlink()
    with pytest.raises(NotFoundError):
        pin.set_pin(served.config_path, "v2", paths=paths)


def test_set_pin_refuses_when_the_config_would_not_load(served, paths):
    cfg = served.config_path
    cfg.write_text(cfg.read_text().replace("  threshold: 0.5\n", "  threshold: 7\n", 1))
    before = cfg.read_text()
    with pytest.raises(ConfigError, match="does not load"):
        pin.set_pin(cfg, "v2", paths=paths)
    assert cfg.read_text() == before
    assert not [p for p in cfg.parent.iterdir() if p.name.startswith(".config.yaml")]


def test_edit_pin_text_handles_flow_style_and_nested_keys():
    assert pin.edit_pin_text("deployment: {model_version: v1, port: 1}\n", "v4") == "deployment: {model_version: v4, port: 1}\n"
    text = "# top\ndeployment:\n  # c\n  nested:\n    model_version: v8\n  model_version: v1 # x\nother: 1\n"
    assert pin.edit_pin_text(text, "v2") == text.replace("model_version: v1 # x", "model_version: v2 # x")


def test_promote_and_rollback_commands(served, paths, tmp_path):
    cfg = str(served.config_path)
    before = served.config_path.read_text()
    # what served: v1 started, then promote v2 (the service would swap)
    deploylog.append_event(paths, event="start", version="v1", instance_id="i1")
    assert cli(["promote", "v2", "--config", cfg]) == 0
    deploylog.append_event(paths, event="swap", version="v2", previous_version="v1", instance_id="i1")
    assert pin.read_pin(cfg) == "v2"
    assert cli(["rollback", "--config", cfg]) == 0
    assert pin.read_pin(cfg) == "v1"
    after = served.config_path.read_text()
    assert after == before  # comments, order, layout: byte for byte the original again
    events = [(r["event"], r["version"], r["previous_version"]) for r in deploylog.read_rows(paths)]
    assert events[-1] == ("rollback", "v1", "v2")
    assert cli(["promote", "v7", "--config", cfg]) == 1
    assert cli(["status", "--config", cfg]) == 0


def test_rollback_without_history_fails_cleanly(served, paths):
    with pytest.raises(NotFoundError, match="nothing to roll back"):
        pin.rollback(served.config_path, paths=paths)
    assert cli(["rollback", "--config", str(served.config_path)]) == 1


# --- deployment log ----------------------------------------------------------------------------
def test_rows_have_the_contract_columns_and_one_header(paths):
    md = {"onnx_sha256": "a" * 64, "data_version": "v3_split", "git": {"commit": "abc", "dirty": False}}
    deploylog.append_event(paths, event="start", version="v1", metadata=md, instance_id="i1", detail="multi\nline, \"quoted\"")
    deploylog.append_event(paths, event="swap_failed", version="v2", previous_version="v1", instance_id="i1", detail="bad")
    with open(paths.deployment_log, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == DEPLOYMENT_LOG_COLUMNS
    assert len(rows) == 3
    first = dict(zip(rows[0], rows[1]))
    assert first["onnx_sha256"] == "a" * 64 and first["data_version"] == "v3_split" and first["git_commit"] == "abc"
    assert first["detail"] == 'multi line, "quoted"'
    with pytest.raises(ValueError):
        deploylog.append_event(paths, event="deploy", version="v1", instance_id="i1")


def _append_many(args):
    volume_config, worker = args
    settings = load_settings(volume_config, env={})
    p = Paths.from_settings(settings)
    for i in range(50):
        deploylog.append_event(p, event="swap", version=f"v{i}", previous_version="v0", instance_id=f"w{worker}",
                               detail="x" * 500)


def test_concurrent_writers_never_interleave(served, paths):
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        pool.map(_append_many, [(str(served.config_path), w) for w in range(4)])
    text = paths.deployment_log.read_text()
    assert text.count("time,event,version") == 1
    rows = deploylog.read_rows(paths)
    assert len(rows) == 200
    assert all(r["detail"] == "x" * 500 and r["event"] == "swap" for r in rows)


def test_serving_at_answers_what_was_serving(paths):
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

    def at(minutes):
        return (t0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    deploylog.append_event(paths, event="start", version="v1", instance_id="a", time=at(0))
    deploylog.append_event(paths, event="promote", version="v2", previous_version="v1", instance_id="cli", time=at(9))
    deploylog.append_event(paths, event="swap", version="v2", previous_version="v1", instance_id="a", time=at(10))
    deploylog.append_event(paths, event="swap_failed", version="v3", previous_version="v2", instance_id="a", time=at(20))
    deploylog.append_event(paths, event="start", version="v2", instance_id="b", time=at(25))
    deploylog.append_event(paths, event="swap", version="v1", previous_version="v2", instance_id="a", time=at(30))

    assert deploylog.serving_at(paths, at(-1)) is None
    assert deploylog.serving_at(paths, at(0))["version"] == "v1"
    assert deploylog.serving_at(paths, at(9.5))["version"] == "v1"  # a promote is intent, not serving
    assert deploylog.serving_at(paths, t0 + timedelta(minutes=15))["version"] == "v2"
    assert deploylog.serving_at(paths, at(21))["version"] == "v2"  # a failed swap changes nothing
    assert deploylog.serving_at(paths, at(31))["version"] == "v1"
    assert deploylog.serving_at(paths, at(31), instance_id="b")["version"] == "v2"
    assert deploylog.serving_at(paths, "2026-01-01T12:10:00+00:00")["event"] == "swap"
    assert deploylog.serving_at(paths, datetime(2026, 1, 1, 12, 5))["version"] == "v1"  # naive means UTC


def test_serving_at_with_no_log(paths):
    assert deploylog.serving_at(paths, "2026-01-01T00:00:00Z") is None


def test_rollback_target_walks_back_through_history():
    def rows(*events):
        return [{"event": e, "version": v} for e, v in events]

    history = rows(("start", "v1"), ("promote", "v2"), ("swap", "v2"), ("promote", "v3"), ("swap", "v3"))
    assert deploylog.rollback_target(history, "v3") == "v2"
    history += rows(("rollback", "v2"), ("swap", "v2"))
    assert deploylog.rollback_target(history, "v2") == "v1"
    history += rows(("rollback", "v1"), ("swap", "v1"))
    assert deploylog.rollback_target(history, "v1") is None
    # pinned by hand past what served: back to the last served version
    assert deploylog.rollback_target(rows(("start", "v1"), ("swap", "v2")), "v5") == "v2"
    assert deploylog.rollback_target([], "v1") is None
