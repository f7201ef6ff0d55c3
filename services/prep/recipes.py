"""Seeded drift recipes for the "day 2" production data sets, on any dataset feature.

A numeric feature: `offset` adds value (a calibration error, a shift), `scale` multiplies it (accelerated wear);
Gaussian noise of `noise_std` is added; the result is clipped to the feature's declared range and rounded to the
precision of the data (an integer column stays integer; a decimal column keeps its number of decimals).
A categorical feature: `levels` re-draws a `share` of the rows (chosen at random) to `level`.
The random generator is seeded by (day2.seed, the recipe name), so a recipe gives the same bytes every run
whatever the order of the recipes in config.yaml. Pure: returns a new frame.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from shared.config import DriftRecipe
from shared.dataset import CategoricalColumn, DatasetConfig

MAX_DECIMALS = 6


def recipe_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def decimals(values: np.ndarray) -> int | None:
    """The fewest decimals that write every value exactly (None: more than MAX_DECIMALS, do not round)."""
    for d in range(MAX_DECIMALS + 1):
        if np.array_equal(np.round(values, d), values):
            return d
    return None


def apply_recipe(df: pd.DataFrame, recipe: DriftRecipe, *, seed: int, dataset: DatasetConfig) -> pd.DataFrame:
    out = df.copy()
    rng = recipe_rng(seed, recipe.name)
    column = dataset.column(recipe.column)
    if isinstance(column, CategoricalColumn):
        chosen = rng.random(len(out)) < float(recipe.share or 0.0)
        out.loc[chosen, recipe.column] = recipe.level
        return out
    source = out[recipe.column]
    is_int = pd.api.types.is_integer_dtype(source)
    col = source.to_numpy(dtype=np.float64)
    places = 0 if is_int else decimals(col)
    value = float(recipe.value if recipe.value is not None else 0.0)
    col = col + value if recipe.kind == "offset" else col * value
    if recipe.noise_std > 0:
        col = col + rng.normal(0.0, recipe.noise_std, size=len(col))
    low, high = column.range
    col = np.clip(col, low, high)
    if places is not None:
        col = col.round(places)
    out[recipe.column] = col.astype(np.int64) if is_int else col
    return out
