"""prep and the data store: versions, manifest, immutability, idempotency, raw integrity."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from services.prep import pipeline
from services.prep.recipes import apply_recipe
from shared.atomic import sha256_file
from shared.datastore import DataStore
from shared.errors import IntegrityError, VersionExistsError
from shared.paths import Paths
from tests.ai4i import FAILURE_MODES, FORBIDDEN_FEATURES, RAW_COLUMNS, encode_readings, engineer, engineered_names
from tests.conftest import ROOT


def _snapshot(volume):
    return {p.relative_to(volume).as_posix(): sha256_file(p) for p in sorted(volume.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def test_prep_produces_every_version_with_one_manifest_entry_per_file(prepped):
    paths = Paths.from_settings(prepped)
    store = DataStore(paths=paths)
    entries = store.entries()
    v = prepped.data.versions
    by_path = {e.path: e for e in entries}
    expected = [
        f"data/processed/{v.raw}/ai4i2020.csv",
        f"data/processed/{v.cleaned}/cleaned.csv",
        f"data/processed/{v.split}/train.csv",
        f"data/processed/{v.split}/production.csv",
        f"data/production/{v.day2}/natural.csv",
    ] + [f"data/production/{v.day2}/{r.name}.csv" for r in prepped.data.day2.recipes]
    assert sorted(by_path) == sorted(expected)
    assert len(entries) == len(expected)
    for rel, e in by_path.items():
        assert sha256_file(paths.volume / rel) == e.sha256
        assert e.producer == "services.prep.pipeline"
        assert e.inputs and all(len(i.sha256) == 64 for i in e.inputs)
        assert e.git_commit
    # lineage: v1_raw comes from the pinned raw file
    assert by_path[expected[0]].inputs[0].sha256 == prepped.dataset.raw_sha256
    assert by_path[expected[1]].params["label_counts"] == {"failure": 339, "normal": 9661}
    assert by_path[expected[2]].params["order_range"] == [1, 7000]


def test_second_run_changes_nothing(prepped):
    volume = prepped.volume
    before = _snapshot(volume)
    manifest_before = Paths.from_settings(prepped).manifest.read_bytes()
    pipeline.run(prepped)
    assert _snapshot(volume) == before
    assert Paths.from_settings(prepped).manifest.read_bytes() == manifest_before


def test_split_is_chronological_7000_3000(prepped):
    paths = Paths.from_settings(prepped)
    train = pd.read_csv(paths.train_file(prepped.data.versions.split))
    prod = pd.read_csv(paths.data_version_dir(prepped.data.versions.split) / "production.csv")
    assert len(train) == 7000 and len(prod) == 3000
    assert train.udi.tolist() == list(range(1, 7001))
    assert prod.udi.tolist() == list(range(7001, 10001))
    assert int(train.machine_failure.sum()) + int(prod.machine_failure.sum()) == 339


def test_flipped_byte_in_raw_file_is_refused_showing_both_hashes(project):
    raw = Paths.from_settings(project).raw_file
    data = bytearray(raw.read_bytes())
    data[100] ^= 0x01
    raw.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        pipeline.run(project)
    assert project.dataset.raw_sha256 in str(err.value)
    assert sha256_file(raw) in str(err.value)
    assert not Paths.from_settings(project).manifest.exists()


def test_prep_cli_refuses_changed_raw_file_with_exit_code(project):
    raw = Paths.from_settings(project).raw_file
    raw.write_bytes(raw.read_bytes().replace(b"298.1", b"298.2", 1))
    proc = subprocess.run([sys.executable, "-m", "services.prep", "--config", str(project.config_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "expected sha256 53d0e7b7" in proc.stderr and "actual" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_different_content_under_existing_version_is_refused(prepped):
    store = DataStore(paths=Paths.from_settings(prepped))
    path = Paths.from_settings(prepped).train_file(prepped.data.versions.split)
    step = store.begin(producer="tests", inputs=[])
    with pytest.raises(VersionExistsError, match="bump the version"):
        store.write_table(step, data_version=prepped.data.versions.split, path=path,
                          df=pd.DataFrame({"a": [1]}), params={})


def test_changed_cleaning_under_same_version_name_is_refused(prepped, monkeypatch):
    original = pipeline.clean

    def clean_differently(raw, dataset, **kw):
        df, params = original(raw, dataset, **kw)
        df.loc[0, "torque_nm"] = 50.0
        return df, params

    monkeypatch.setattr(pipeline, "clean", clean_differently)
    with pytest.raises(VersionExistsError, match="v2_cleaned"):
        pipeline.run(prepped)


def test_input_changed_during_step_refuses_the_entry(prepped):
    paths = Paths.from_settings(prepped)
    store = DataStore(paths=paths)
    src = paths.train_file(prepped.data.versions.split)
    step = store.begin(producer="tests", inputs=[src])
    src.write_bytes(src.read_bytes() + b"\n")
    with pytest.raises(IntegrityError, match="changed during the step"):
        store.write_table(step, data_version="v9_test", path=paths.data_version_dir("v9_test") / "x.csv",
                          df=pd.DataFrame({"a": [1]}), params={})
    assert not (paths.data_version_dir("v9_test") / "x.csv").exists()


def test_verify_reports_each_mismatch(prepped):
    paths = Paths.from_settings(prepped)
    store = DataStore(paths=paths)
    assert store.verify() == []
    target = paths.train_file(prepped.data.versions.split)
    target.write_bytes(target.read_bytes()[:-10])
    (paths.production_version_dir(prepped.data.versions.day2) / "natural.csv").unlink()
    problems = store.verify()
    assert len(problems) == 2
    assert any(p.startswith("mismatch: data/processed/v3_split/train.csv") for p in problems)
    assert any(p.startswith("missing: data/production/v4_day2/natural.csv") for p in problems)
    proc = subprocess.run([sys.executable, "-m", "services.prep", "verify", "--config", str(prepped.config_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "mismatch: data/processed/v3_split/train.csv" in proc.stdout


def test_next_data_version_number_follows_existing_versions(prepped):
    assert DataStore(paths=Paths.from_settings(prepped)).next_version_number() == 5


def test_no_feature_is_taken_or_derived_from_failure_modes(prepped):
    paths = Paths.from_settings(prepped)
    train = pd.read_csv(paths.train_file(prepped.data.versions.split))
    assert not set(RAW_COLUMNS) & FORBIDDEN_FEATURES
    names = engineered_names(derived=True)
    assert not set(names) & FORBIDDEN_FEATURES
    x = engineer(encode_readings(train), derived=True)
    assert x.shape == (7000, len(names))
    # Scrambling every failure-mode column and the identifiers leaves the features bit-identical.
    rng = np.random.default_rng(0)
    scrambled = train.copy()
    for col in FAILURE_MODES + ["udi", "product_id", "machine_failure"]:
        scrambled[col] = rng.permutation(scrambled[col].to_numpy())
    assert np.array_equal(engineer(encode_readings(scrambled), derived=True), x)


def test_drift_recipes_are_reproducible_and_touch_only_their_column(prepped):
    paths = Paths.from_settings(prepped)
    prod = pd.read_csv(paths.data_version_dir(prepped.data.versions.split) / "production.csv")
    day2 = paths.production_version_dir(prepped.data.versions.day2)
    for recipe in prepped.data.day2.recipes:
        drifted = pd.read_csv(day2 / f"{recipe.name}.csv")
        again = apply_recipe(prod, recipe, seed=prepped.data.day2.seed, dataset=prepped.dataset)
        assert drifted.equals(pd.read_csv(__import__("io").StringIO(again.to_csv(index=False))))
        others = [c for c in prod.columns if c != recipe.column]
        assert drifted[others].equals(prod[others])
        assert not np.allclose(drifted[recipe.column], prod[recipe.column])
    natural = pd.read_csv(day2 / "natural.csv")
    assert natural.equals(prod)


def test_manifest_lines_are_readable_json(prepped):
    for line in Paths.from_settings(prepped).manifest.read_text().splitlines():
        record = json.loads(line)
        assert {"data_version", "path", "sha256", "rows", "producer", "git_commit", "git_dirty", "inputs", "params", "created_at"} <= set(record)
