"""Names of the default data set (AI4I 2020) for tests that are about it, read from the root config.yaml.

The code knows no data set; tests about AI4I's own facts (its columns, its failure modes) take them from here, so
that they too follow the config rather than a list written in code.
"""
from __future__ import annotations

from pathlib import Path

from shared.config import load_settings

DATASET = load_settings(Path(__file__).resolve().parent.parent / "config.yaml", env={}).dataset
LABEL = DATASET.label.name
ORDER = DATASET.order.name
RAW_COLUMNS = DATASET.feature_names  # the model's input, in order
NUMERIC_FEATURES = [c.name for c in DATASET.numeric]
NEVER_FEATURES = [c.name for c in DATASET.never_features]
FAILURE_MODES = [n for n in NEVER_FEATURES if n in ("twf", "hdf", "pwf", "osf", "rnf")]
FORBIDDEN_FEATURES = frozenset([ORDER, LABEL, *NEVER_FEATURES])
encode_readings = DATASET.encode


def engineer(readings, *, derived: bool = True):
    return DATASET.engineer(readings, derived=derived)


def engineered_names(*, derived: bool = True) -> list[str]:
    return DATASET.engineered_names(derived=derived)
