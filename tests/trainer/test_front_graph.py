"""The ONNX front graph built from the dataset section computes exactly what DatasetConfig.engineer computes."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from services.trainer.export import front_graph as dataset_front_graph
from shared.dataset import DatasetConfig

PUMPS = {
    "name": "pumps", "raw_file": "data/raw/pumps.csv", "raw_sha256": "0" * 64,
    "order": {"name": "ts", "source": "Timestamp", "kind": "timestamp"},
    "label": {"name": "failed", "source": "Failed", "failure": ["yes"], "normal": ["no"]},
    "features": [
        {"name": "flow", "source": "Flow [m3/h]", "kind": "numeric", "unit": "m3/h", "range": [1.0, 500.0]},
        {"name": "model", "source": "Model", "kind": "categorical", "levels": ["a", "b", "c", "d", "e"]},
        {"name": "pressure", "source": "Pressure [bar]", "kind": "numeric", "unit": "bar", "range": [0.0, 40.0]},
        {"name": "temp", "source": "Temp [C]", "kind": "numeric", "unit": "C", "range": [-20.0, 120.0]},
    ],
    "never_features": [{"name": "cause", "source": "Cause"}],
    "derived": [
        {"name": "hydraulic_kw", "expr": "flow * pressure / 36"},
        {"name": "pressure_per_flow", "expr": "pressure / flow"},
        {"name": "cooling", "expr": "-(temp - 20) * 0.5 + pressure"},
    ],
}


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"readings": x})[0]


@pytest.mark.parametrize("derived", [True, False])
def test_front_graph_equals_the_reference_bit_for_bit(derived):
    ds = DatasetConfig.model_validate(PUMPS)
    rng = np.random.default_rng(7)
    n = 2000
    x = np.column_stack([rng.uniform(1, 500, n), rng.integers(0, 5, n), rng.uniform(0, 40, n),
                         rng.uniform(-20, 120, n)]).astype(np.float32)
    out = _run(dataset_front_graph(ds, derived=derived), x)
    assert out.shape == (n, len(ds.engineered_names(derived=derived)))
    assert np.array_equal(out, ds.engineer(x, derived=derived))
    assert out[:, 3:8].sum(axis=1).tolist() == [1.0] * n  # one level of five, always


def test_the_same_schema_gives_the_same_graph_bytes():
    ds = DatasetConfig.model_validate(PUMPS)
    a = dataset_front_graph(ds, derived=True).SerializeToString(deterministic=True)
    b = dataset_front_graph(DatasetConfig.model_validate(PUMPS), derived=True).SerializeToString(deterministic=True)
    assert a == b
