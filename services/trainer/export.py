"""scikit-learn model -> one self-contained ONNX file: raw readings in, failure probability out.

The file is three graphs merged with onnx.compose.merge_models:
  front    readings [N, F] -> features [N, E]   (DatasetConfig.engineer, in ONNX ops)
  model    features -> probabilities [N, 2]     (skl2onnx, zipmap off)
  tail     probabilities -> probability [N, 1]  (column of class 1, then decision.calibration's map:
                                                services.trainer.calibration, then clipped to [0, 1])
Every name and producer field is fixed, so the same fitted model gives the same bytes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType

from services.trainer.calibration import NONE, Calibration, calibration_nodes
from shared.dataset import ONNX_INPUT, ONNX_OUTPUT, DatasetConfig
from shared.errors import ExportError
from shared.expressions import Expr, sanitize

FEATURES = "features"
PROBABILITIES = "probabilities"
GRAPH_NAME = "clockwork_failure_model"
PRODUCER = "clockwork.services.trainer"
# The op sets the whole file declares (the skl2onnx part and the hand-built parts must agree).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
IR_VERSION = 8


def _const(name: str, values, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name=name)


def _opset_imports(opsets: dict[str, int]) -> list[onnx.OperatorSetIdProto]:
    return [helper.make_opsetid(domain, opsets[domain]) for domain in sorted(opsets)]


def _model(graph: onnx.GraphProto, opsets: dict[str, int]) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=_opset_imports(opsets), ir_version=IR_VERSION, producer_name=PRODUCER)


def front_graph(dataset: DatasetConfig, *, derived: bool, opsets: dict[str, int] | None = None) -> onnx.ModelProto:
    """readings [N, F] -> features [N, E] for any data set, the same float32 arithmetic as DatasetConfig.engineer.

    Numeric features (one Gather of their columns), one-hot of each categorical's level index, then each derived
    feature's expression compiled node by node (shared.dataset.Expr: one ONNX op per operation, constants folded).
    Every name is cw_* and derived from the schema, so the same schema gives the same graph bytes.
    """
    index = {name: i for i, name in enumerate(dataset.feature_names)}
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    numeric = [index[c.name] for c in dataset.numeric]
    inits.append(_const("cw_numeric_idx", numeric))
    nodes.append(helper.make_node("Gather", [ONNX_INPUT, "cw_numeric_idx"], ["cw_numeric"], axis=1, name="cw_numeric"))
    parts = ["cw_numeric"]
    columns: dict[str, str] = {}

    def column(name: str) -> str:
        """The [N, 1] slice of one input column (made once)."""
        if name not in columns:
            out = f"cw_col_{sanitize(name)}"
            i = index[name]
            inits.extend([_const(f"{out}_start", [i]), _const(f"{out}_end", [i + 1]), _const(f"{out}_axis", [1])])
            nodes.append(
                helper.make_node("Slice", [ONNX_INPUT, f"{out}_start", f"{out}_end", f"{out}_axis"], [out], name=out)
            )
            columns[name] = out
        return columns[name]

    for col in dataset.categorical:
        code = column(col.name)
        for j in range(len(col.levels)):
            tag = f"cw_{sanitize(col.name)}_{j}"
            inits.append(_const(f"{tag}_code", [float(j)], dtype=np.float32))
            nodes.append(helper.make_node("Equal", [code, f"{tag}_code"], [f"{tag}_is"], name=f"{tag}_equal"))
            nodes.append(helper.make_node("Cast", [f"{tag}_is"], [tag], to=TensorProto.FLOAT, name=f"{tag}_cast"))
            parts.append(tag)
    if derived:
        for name, expr in dataset.expressions():
            parts.append(_compile(expr, f"cw_d_{sanitize(name)}", column, nodes, inits))
    nodes.append(helper.make_node("Concat", parts, [FEATURES], axis=1, name="cw_concat_features"))
    n_features = len(dataset.engineered_names(derived=derived))
    graph = helper.make_graph(
        nodes,
        "cw_features",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, ["N", len(dataset.feature_names)])],
        [helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["N", n_features])],
        initializer=inits,
    )
    return _model(graph, opsets or {"": TARGET_OPSET[""]})


def _compile(expr: Expr, out: str, column, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> str:
    """ONNX nodes computing `expr` into tensor `out` (sub-results named out_a, out_b, ...), [N, 1] float32."""
    if expr.op == "col":
        return column(expr.name)
    if expr.op == "const":
        inits.append(_const(out, [expr.value], dtype=np.float32))
        return out
    if expr.op == "neg":
        arg = _compile(expr.args[0], f"{out}_a", column, nodes, inits)
        nodes.append(helper.make_node("Neg", [arg], [out], name=out))
        return out
    left = _compile(expr.args[0], f"{out}_a", column, nodes, inits)
    right = _compile(expr.args[1], f"{out}_b", column, nodes, inits)
    nodes.append(helper.make_node(expr.op, [left, right], [out], name=out))
    return out


def tail_graph(*, calibration: Calibration = NONE, opsets: dict[str, int] | None = None) -> onnx.ModelProto:
    """probabilities [N, 2] -> probability [N, 1] (class 1, calibrated)."""
    cal_nodes, cal_inits = calibration_nodes(calibration, "cw_class1", "cw_calibrated")
    inits = [
        _const("cw_class1_start", [1]),
        _const("cw_class1_end", [2]),
        _const("cw_class1_axis", [1]),
        _const("cw_zero", 0.0, dtype=np.float32),
        _const("cw_one", 1.0, dtype=np.float32),
        *cal_inits,
    ]
    nodes = [
        helper.make_node(
            "Slice",
            [PROBABILITIES, "cw_class1_start", "cw_class1_end", "cw_class1_axis"],
            ["cw_class1"],
            name="cw_class1",
        ),
        *cal_nodes,
        # A forest's float32 sum of leaf shares can land a hair outside [0, 1] (1.0000001): a probability is not.
        helper.make_node("Clip", ["cw_calibrated", "cw_zero", "cw_one"], [ONNX_OUTPUT], name="cw_clip01"),
    ]
    graph = helper.make_graph(
        nodes,
        "cw_class1",
        [helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    return _model(graph, opsets or {"": TARGET_OPSET[""]})


def sklearn_graph(estimator, *, n_features: int) -> onnx.ModelProto:
    """skl2onnx conversion with a fixed name, zipmap off, our op sets."""
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    model = to_onnx(
        estimator,
        initial_types=[(FEATURES, FloatTensorType([None, n_features]))],
        name=GRAPH_NAME,
        target_opset=dict(TARGET_OPSET),
        options={id(final): {"zipmap": False}},
    )
    out_names = [o.name for o in model.graph.output]
    if PROBABILITIES not in out_names:
        raise ExportError(f"skl2onnx gave outputs {out_names}, expected {PROBABILITIES!r}")
    model.ir_version = IR_VERSION
    # skl2onnx may list a domain twice; keep one entry per domain (the highest), sorted.
    opsets: dict[str, int] = {}
    for op in model.opset_import:
        opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
    del model.opset_import[:]
    model.opset_import.extend(_opset_imports(opsets))
    return model


def opsets_of(model: onnx.ModelProto) -> dict[str, int]:
    return {op.domain: op.version for op in model.opset_import}


def export(
    estimator, *, dataset: DatasetConfig, derived: bool, doc_string: str, calibration: Calibration = NONE
) -> bytes:
    """The whole model file as bytes (deterministic for a deterministic estimator)."""
    n_features = len(dataset.engineered_names(derived=derived))
    body = sklearn_graph(estimator, n_features=n_features)
    opsets = opsets_of(body)
    # Hand-built parts name everything cw_*, so no name collides with skl2onnx's (merge_models checks).
    merged = compose.merge_models(
        front_graph(dataset, derived=derived, opsets=opsets),
        body,
        io_map=[(FEATURES, FEATURES)],
        outputs=[PROBABILITIES],
    )
    merged = compose.merge_models(
        merged,
        tail_graph(calibration=calibration, opsets=opsets),
        io_map=[(PROBABILITIES, PROBABILITIES)],
        outputs=[ONNX_OUTPUT],
    )
    del merged.opset_import[:]  # merge_models concatenates the (equal) op set lists
    merged.opset_import.extend(_opset_imports(opsets))
    merged.graph.name = GRAPH_NAME
    merged.doc_string = doc_string
    merged.producer_name = PRODUCER
    merged.producer_version = "1"
    merged.domain = "ai.clockwork"
    merged.model_version = 1
    del merged.metadata_props[:]
    onnx.checker.check_model(merged, full_check=True)
    return merged.SerializeToString(deterministic=True)
