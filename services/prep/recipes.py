"""Seeded drift recipes for the "day 2" production data sets.

A recipe changes one sensor column: `offset` adds value (a calibration error, a torque shift), `scale`
multiplies it (accelerated tool wear); Gaussian noise of `noise_std` is added. The random generator is
seeded by (day2.seed, the recipe name), so a recipe gives the same bytes every run whatever the order
of the recipes in config.yaml. Results are clipped to the physical ranges and rounded to the precision
of the source data.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from shared.config import DriftRecipe

# Decimal places of each sensor column in the source data.
PRECISION = {
    "air_temperature_k": 1,
    "process_temperature_k": 1,
    "rotational_speed_rpm": 0,
    "torque_nm": 1,
    "tool_wear_min": 0,
}


def recipe_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def apply_recipe(
    df: pd.DataFrame, recipe: DriftRecipe, *, seed: int, ranges: dict[str, tuple[float, float]]
) -> pd.DataFrame:
    out = df.copy()
    rng = recipe_rng(seed, recipe.name)
    col = out[recipe.column].to_numpy(dtype=np.float64)
    col = col + recipe.value if recipe.kind == "offset" else col * recipe.value
    if recipe.noise_std > 0:
        col = col + rng.normal(0.0, recipe.noise_std, size=len(col))
    low, high = ranges[recipe.column]
    col = np.clip(col, low, high).round(PRECISION[recipe.column])
    out[recipe.column] = col.astype(np.int64) if PRECISION[recipe.column] == 0 else col
    return out
