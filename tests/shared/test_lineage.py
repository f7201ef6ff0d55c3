"""Lineage: request_id -> prediction -> model -> deployment -> data version -> manifest chain -> raw sha256 -> commit."""
from __future__ import annotations

import json

import pytest

from shared.config import Settings
from shared.deploylog import append_event
from shared.errors import NotFoundError
from shared.lineage import lineage
from shared.paths import Paths
from shared.registry import Registry
from tests.monitor.helpers import day2, stamp, write_traffic


@pytest.fixture
def paths(trained: Settings) -> Paths:
    return Paths.from_settings(trained)

def test_lineage_walks_from_a_request_back_to_the_raw_file_and_the_commit(trained, paths, capsys):
    md = Registry(paths=paths).metadata("v1")
    append_event(paths, event="start", version="v1", metadata=md, instance_id="i1", time=stamp(-10))
    ids = write_traffic(paths, day2(paths, "natural").iloc[:20])
    out = lineage(paths, ids[7])

    assert out["prediction"]["request_id"] == ids[7] and out["prediction"]["log"] == "logs/predictions/i1.jsonl"
    assert [f["request_id"] for f in out["feedback"]] == [ids[7]]
    assert out["model"]["version"] == "v1" and out["model"]["onnx_sha256"] == md["onnx_sha256"]
    assert out["model"]["metrics"]["f1"] == md["metrics"]["f1"]
    assert out["deployment"]["event"] == "start" and out["deployment"]["version"] == "v1"
    assert out["data"]["version"] == "v3_split"
    assert {e["path"] for e in out["data"]["manifest_entries"]} >= {"data/processed/v3_split/train.csv"}
    train_chain = next(c for c in out["data"]["provenance"] if c["path"].endswith("train.csv"))
    assert train_chain["data_version"] == "v3_split"
    assert train_chain["inputs"][0]["data_version"] == "v2_cleaned"
    assert train_chain["inputs"][0]["inputs"][0]["data_version"] == "v1_raw"
    (raw,) = out["raw"]["files"]
    assert raw["path"] == "data/raw/ai4i2020.csv" and raw["is_raw"] and raw["matches_config_raw_sha256"]
    assert raw["sha256"] == raw["sha256_on_disk"] == trained.dataset.raw_sha256
    assert out["code"]["model_git"]["commit"] == md["git"]["commit"]
    assert out["code"]["data_git_commits"]

    from services.monitor.__main__ import main

    assert main(["lineage", ids[7], "--config", str(trained.config_path)]) == 0
    assert json.loads(capsys.readouterr().out)["request_id"] == ids[7]


def test_lineage_of_an_unknown_request_says_so(paths):
    with pytest.raises(NotFoundError, match="no-such-request"):
        lineage(paths, "no-such-request")
