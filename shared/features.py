"""The feature contract shared by prep, trainer, inference and monitor.

A reading is six raw values. The ONNX model takes them as one float32 tensor named `readings` of
shape [N, 6], columns in RAW_COLUMNS order, product type encoded by TYPE_CODES, and returns the
failure probability as `probability` [N, 1]. Feature engineering (type one-hot, physical features)
lives inside the ONNX graph, so serving can never compute features differently from training.

Identifiers (udi, product_id) and the failure-mode columns (twf, hdf, pwf, osf, rnf) are never
features: the mode flags are the label in disguise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Source CSV header -> snake_case name used everywhere after ingestion.
SOURCE_TO_SNAKE = {
    "UDI": "udi",
    "Product ID": "product_id",
    "Type": "type",
    "Air temperature [K]": "air_temperature_k",
    "Process temperature [K]": "process_temperature_k",
    "Rotational speed [rpm]": "rotational_speed_rpm",
    "Torque [Nm]": "torque_nm",
    "Tool wear [min]": "tool_wear_min",
    "Machine failure": "machine_failure",
    "TWF": "twf",
    "HDF": "hdf",
    "PWF": "pwf",
    "OSF": "osf",
    "RNF": "rnf",
}
SOURCE_COLUMNS = list(SOURCE_TO_SNAKE)

ID_COLUMNS = ["udi", "product_id"]
LABEL = "machine_failure"
FAILURE_MODES = ["twf", "hdf", "pwf", "osf", "rnf"]
# Never features: identifiers, the label and the label in disguise.
FORBIDDEN_FEATURES = frozenset(ID_COLUMNS + [LABEL] + FAILURE_MODES)

NUMERIC_FEATURES = [
    "air_temperature_k",
    "process_temperature_k",
    "rotational_speed_rpm",
    "torque_nm",
    "tool_wear_min",
]
CATEGORICAL_FEATURES = ["type"]
RAW_COLUMNS = ["type"] + NUMERIC_FEATURES  # the model's input, in this order
TYPE_CODES = {"L": 0.0, "M": 1.0, "H": 2.0}
ONNX_INPUT = "readings"
ONNX_OUTPUT = "probability"

# Names a client may use for a field: snake_case or the data set's own column name.
FIELD_ALIASES = {snake: src for src, snake in SOURCE_TO_SNAKE.items() if snake in RAW_COLUMNS}

# Engineered features, in the order the model sees them after the raw numeric readings.
PHYSICAL_FEATURES = ["temp_diff_k", "power_w", "strain_nm_min"]
TYPE_ONEHOT = ["type_l", "type_m", "type_h"]


def assert_no_forbidden(columns: list[str]) -> None:
    bad = sorted(set(columns) & FORBIDDEN_FEATURES)
    if bad:
        raise ValueError(f"forbidden columns among features: {bad}")


def encode_readings(df: pd.DataFrame) -> np.ndarray:
    """Cleaned table (snake_case) -> float32 [N, 6] model input. Unknown product types raise."""
    unknown = sorted(set(df["type"].unique()) - set(TYPE_CODES))
    if unknown:
        raise ValueError(f"unknown product type(s) {unknown}; expected one of {sorted(TYPE_CODES)}")
    out = np.empty((len(df), len(RAW_COLUMNS)), dtype=np.float32)
    out[:, 0] = df["type"].map(TYPE_CODES).to_numpy(dtype=np.float32)
    for i, col in enumerate(NUMERIC_FEATURES, start=1):
        out[:, i] = df[col].to_numpy(dtype=np.float32)
    return out


def engineer(readings: np.ndarray, *, physical: bool) -> np.ndarray:
    """Reference feature engineering in numpy, float32, the same arithmetic as the ONNX front graph.

    [type_code, air, process, speed, torque, wear] ->
    [air, process, speed, torque, wear, type_l, type_m, type_h, (temp_diff, power, strain)]
    """
    x = readings.astype(np.float32, copy=False)
    code = x[:, 0:1]
    onehot = np.concatenate([(code == c).astype(np.float32) for c in (0.0, 1.0, 2.0)], axis=1)
    parts = [x[:, 1:6], onehot]
    if physical:
        air, proc, speed, torque, wear = (x[:, i : i + 1] for i in range(1, 6))
        temp_diff = proc - air
        power = torque * speed * np.float32(2 * np.pi / 60)
        strain = wear * torque
        parts += [temp_diff, power, strain]
    return np.concatenate(parts, axis=1).astype(np.float32)


def engineered_names(*, physical: bool) -> list[str]:
    return NUMERIC_FEATURES + TYPE_ONEHOT + (PHYSICAL_FEATURES if physical else [])
