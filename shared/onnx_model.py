"""Run a Clockwork ONNX model: raw readings in, failure probability out.

The one way every part (trainer evaluation, inference, monitor, gate) runs a model file, so they all
see the same numbers. Sessions are single-threaded: serving runs many small requests side by side.
A model that references external data is refused before onnxruntime sees it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort

from shared.dataset import ONNX_INPUT, ONNX_OUTPUT
from shared.errors import ModelLoadError


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _attribute_tensors(node.attribute)


def _attribute_tensors(attributes) -> Iterator[onnx.TensorProto]:
    for attr in attributes:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield attr.sparse_tensor.values
            yield attr.sparse_tensor.indices
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for g in attr.graphs:
            yield from _graph_tensors(g)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in the model: initializers, constants and subgraphs, functions included."""
    yield from _graph_tensors(model.graph)
    for fn in model.functions:
        for node in fn.node:
            yield from _attribute_tensors(node.attribute)


def check_no_external_data(model: onnx.ModelProto, *, name: str = "model") -> None:
    """Raise ModelLoadError if any tensor lives outside the file (external data can read any path)."""
    for t in all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) > 0:
            raise ModelLoadError(
                f"{name}: tensor {t.name!r} references external data; only self-contained ONNX files are served"
            )


def parse_model(model_bytes: bytes, *, name: str = "model") -> onnx.ModelProto:
    try:
        return onnx.load_model_from_string(model_bytes)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types
        raise ModelLoadError(f"{name}: not a valid ONNX file: {e}") from e


class OnnxModel:
    """A loaded model: `predict_proba(readings float32 [N, F]) -> float32 [N]`, F the data set's features."""

    def __init__(self, session: ort.InferenceSession, *, name: str = "model", features: list[str]) -> None:
        self.session = session
        self.name = name
        self.features = list(features)

    def predict_proba(self, readings: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(readings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(
                f"readings must have shape [N, {len(self.features)}] ({', '.join(self.features)}), got {list(x.shape)}"
            )
        if len(x) == 0:
            return np.empty(0, dtype=np.float32)
        (out,) = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: x})
        return out.reshape(-1)


def load_session(model_bytes: bytes, *, name: str = "model", features: list[str]) -> OnnxModel:
    """Check the bytes (valid ONNX, no external data, the readings -> probability signature with one input column
    per feature of the data set) and load them."""
    model = parse_model(model_bytes, name=name)
    check_no_external_data(model, name=name)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(model_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelLoadError(f"{name}: onnxruntime cannot load it: {e}") from e
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if ONNX_INPUT not in inputs or len(inputs) != 1 or ONNX_OUTPUT not in outputs:
        raise ModelLoadError(
            f"{name}: wrong signature: inputs {sorted(inputs)}, outputs {sorted(outputs)}; "
            f"expected input {ONNX_INPUT!r} and output {ONNX_OUTPUT!r}"
        )
    inp = inputs[ONNX_INPUT]
    if inp.type != "tensor(float)" or (len(inp.shape) != 2 or inp.shape[1] != len(features)):
        raise ModelLoadError(
            f"{name}: input {ONNX_INPUT!r} must be float32 [N, {len(features)}] (the data set's features "
            f"{', '.join(features)}), got {inp.type} {inp.shape}"
        )
    return OnnxModel(session, name=name, features=features)
