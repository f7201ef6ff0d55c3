"""Registry: atomic, never-overwritten versions; models checked before anyone loads them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from services.trainer.train import COMMAND_TRIGGER, train_candidate
from shared.atomic import sha256_bytes
from shared.errors import InvalidVersionError, ModelLoadError, NotFoundError
from shared.onnx_model import load_session
from shared.paths import Paths
from shared.registry import Registry, metadata_json


@pytest.fixture
def candidate(prepped):
    return train_candidate(prepped, data_version=prepped.data.version)


def test_concurrent_registrations_get_distinct_complete_versions(prepped, candidate):
    registry = Registry(paths=Paths.from_settings(prepped))
    n = 6
    barrier = threading.Barrier(n)
    results, errors = [], []

    def register():
        try:
            barrier.wait()
            md = Registry(paths=Paths.from_settings(prepped)).register(
                model_bytes=candidate.model_bytes, metadata=candidate.metadata(trigger=COMMAND_TRIGGER, gate=None)
            )
            results.append(md["version"])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=register) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, n + 1)]
    assert registry.versions() == [f"v{i}" for i in range(1, n + 1)]
    for v in registry.versions():
        assert registry.metadata(v)["version"] == v
        registry.load_verified(v)
    log = registry.paths.metadata_log.read_text().splitlines()
    assert sorted(line.split()[1] for line in log) == sorted(results)
    assert not [p for p in registry.dir.iterdir() if p.name.startswith(".tmp-")]


def test_concurrent_registrations_from_two_processes(prepped, candidate, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(candidate.model_bytes)
    script = textwrap.dedent(f"""
        import json, sys
        from shared.config import load_settings
        from shared.paths import Paths
        from shared.registry import Registry
        from services.trainer.train import train_candidate
        s = load_settings({str(prepped.config_path)!r}, env={{}})
        cand = train_candidate(s, data_version=s.data.version)
        md = Registry(paths=Paths.from_settings(s)).register(
            model_bytes=cand.model_bytes, metadata=cand.metadata(trigger={{"kind": "command"}}, gate=None)
        )
        print(md["version"])
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert sorted(o[0].strip() for o in outs) == ["v1", "v2"]


def test_killed_write_leaves_no_visible_version(prepped, candidate):
    """A trainer killed (SIGKILL) after writing model.onnx, before claiming vN: only a .tmp folder remains."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from shared.config import load_settings
        from shared.paths import Paths
        from shared.registry import Registry
        from services.trainer.train import train_candidate
        s = load_settings({str(prepped.config_path)!r}, env={{}})
        cand = train_candidate(s, data_version=s.data.version)
        reg = Registry(paths=Paths.from_settings(s))
        reg._claim = lambda tmp, md: os.kill(os.getpid(), signal.SIGKILL)
        reg.register(model_bytes=cand.model_bytes, metadata=cand.metadata(trigger={{"kind": "command"}}, gate=None))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9
    registry = Registry(paths=Paths.from_settings(prepped))
    leftovers = [p for p in registry.dir.iterdir() if p.name.startswith(".tmp-")]
    assert len(leftovers) == 1 and (leftovers[0] / "model.onnx").is_file()
    assert registry.versions() == [] and registry.latest() is None
    md = registry.register(
        model_bytes=candidate.model_bytes, metadata=candidate.metadata(trigger=COMMAND_TRIGGER, gate=None)
    )
    assert md["version"] == "v1" and registry.versions() == ["v1"]
    assert registry.remove_stale_temp(older_than_s=0) == [leftovers[0].name]


def test_registered_version_is_never_overwritten(prepped, candidate):
    registry = Registry(paths=Paths.from_settings(prepped))
    md = registry.register(
        model_bytes=candidate.model_bytes, metadata=candidate.metadata(trigger=COMMAND_TRIGGER, gate=None)
    )
    before = registry.paths.metadata_file("v1").read_bytes()
    # A claim of v1 finds it taken and moves on to v2.
    md2 = registry.register(
        model_bytes=candidate.model_bytes, metadata=candidate.metadata(trigger=COMMAND_TRIGGER, gate=None)
    )
    assert (md["version"], md2["version"]) == ("v1", "v2")
    assert registry.paths.metadata_file("v1").read_bytes() == before


def test_tampered_model_is_refused(prepped, candidate):
    registry = Registry(paths=Paths.from_settings(prepped))
    registry.register(
        model_bytes=candidate.model_bytes, metadata=candidate.metadata(trigger=COMMAND_TRIGGER, gate=None)
    )
    path = registry.paths.model_file("v1")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        registry.load_verified("v1")


def test_unknown_and_invalid_versions(prepped):
    registry = Registry(paths=Paths.from_settings(prepped))
    with pytest.raises(NotFoundError, match="v7"):
        registry.load_verified("v7")
    with pytest.raises(InvalidVersionError):
        registry.metadata("../../etc")


def external_data_model(tmp_path) -> bytes:
    """readings -> probability, with a weight whose data lives in an outside file."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [6, 1], np.ones(6, dtype=np.float32).tobytes(), raw=True)
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("MatMul", ["readings", "w"], ["probability"])],
            "g",
            [helper.make_tensor_value_info("readings", TensorProto.FLOAT, ["N", 6])],
            [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1])],
            initializer=[weight],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    onnx.save_model(
        model,
        tmp_path / "ext.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return (tmp_path / "ext.onnx").read_bytes()


def test_external_data_model_is_refused(prepped, candidate, tmp_path):
    data = external_data_model(tmp_path)
    with pytest.raises(ModelLoadError, match="external data"):
        load_session(data, features=prepped.dataset.feature_names)
    registry = Registry(paths=Paths.from_settings(prepped))
    with pytest.raises(ModelLoadError, match="external data"):
        registry.register(model_bytes=data, metadata=candidate.metadata(trigger=COMMAND_TRIGGER, gate=None))
    # Planted by hand next to a metadata.json whose sha256 matches: still refused at load time.
    md = registry.register(
        model_bytes=candidate.model_bytes, metadata=candidate.metadata(trigger=COMMAND_TRIGGER, gate=None)
    )
    registry.paths.model_file("v1").write_bytes(data)
    registry.paths.metadata_file("v1").write_bytes(metadata_json(dict(md, onnx_sha256=sha256_bytes(data))))
    with pytest.raises(ModelLoadError, match="external data"):
        registry.load_verified("v1")


def test_onnx_model_rejects_wrong_shape_and_garbage(prepped, candidate):
    features = prepped.dataset.feature_names
    model = load_session(candidate.model_bytes, features=features)
    with pytest.raises(ValueError, match=r"\[N, 6\]"):
        model.predict_proba(np.zeros((2, 5), dtype=np.float32))
    assert model.predict_proba(np.zeros((0, 6), dtype=np.float32)).shape == (0,)
    with pytest.raises(ModelLoadError):
        load_session(b"not an onnx file", features=features)
    with pytest.raises(ModelLoadError, match=r"must be float32 \[N, 5\]"):
        load_session(candidate.model_bytes, features=features[:5])


def test_repair_metadata_log_appends_missing_and_torn_lines_once(prepped):
    from services.trainer.train import COMMAND_TRIGGER, train_and_register

    train_and_register(prepped, trigger=COMMAND_TRIGGER)
    train_and_register(prepped, trigger=COMMAND_TRIGGER)
    registry = Registry(paths=Paths.from_settings(prepped))
    log_file = registry.paths.metadata_log
    v1_line, v2_line = log_file.read_text().splitlines()
    # v1's line lost, v2's torn by a kill mid-append.
    log_file.write_text(v2_line[:40])
    assert registry.repair_metadata_log() == ["v1", "v2"]
    assert log_file.read_text().splitlines() == [v2_line[:40], v1_line, v2_line]
    assert registry.repair_metadata_log() == []
