"""prep: raw CSV -> v1_raw -> v2_cleaned -> v3_split (train / production) -> v4_day2 sets.

Cleaning rules (v2_cleaned):
- column names to snake_case (shared.features.SOURCE_TO_SNAKE); the exact source header is required;
- types checked: integer udi, text product_id, type in {L, M, H}, numeric sensors, 0/1 flags; no missing value;
- physical ranges checked against deployment.input_ranges (the same ranges inference enforces);
- rows sorted by udi, which must be unique;
- the label is `machine_failure` as recorded. The data's quirks are kept, not "fixed": failures with no
  mode flag stay failures, and rows with RNF=1 but machine_failure=0 stay non-failures, because the
  label is what the plant recorded and the mode flags are never used (they are the label in disguise).
  Their counts are recorded in the manifest parameters.
The failure-mode columns and identifiers stay in the tables for analysis; shared.features keeps them out
of every feature set.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from services.prep.recipes import apply_recipe
from shared.atomic import atomic_write_text
from shared.config import Settings
from shared.datastore import DataStore, check_raw
from shared.errors import DataValidationError
from shared.features import FAILURE_MODES, LABEL, NUMERIC_FEATURES, SOURCE_COLUMNS, SOURCE_TO_SNAKE, TYPE_CODES
from shared.paths import Paths

log = logging.getLogger(__name__)
PRODUCER = "services.prep.pipeline"
ATTRIBUTION = """AI4I 2020 Predictive Maintenance Dataset (derived files)

Derived from: S. Matzka, "AI4I 2020 Predictive Maintenance Dataset", UCI Machine Learning Repository,
2020, https://doi.org/10.24432/C5HS5C. License: Creative Commons Attribution 4.0 International (CC BY 4.0).
The files here were produced by Clockwork's prep service; manifest.txt records how.
"""


def validate_source(df: pd.DataFrame, where: Path) -> None:
    if list(df.columns) != SOURCE_COLUMNS:
        raise DataValidationError(f"{where}: header {list(df.columns)} differs from the expected {SOURCE_COLUMNS}")
    if df.isna().any().any():
        bad = df.columns[df.isna().any()].tolist()
        raise DataValidationError(f"{where}: missing values in columns {bad}")


def clean(raw: pd.DataFrame, *, ranges: dict[str, tuple[float, float]], where: Path) -> tuple[pd.DataFrame, dict]:
    df = raw.rename(columns=SOURCE_TO_SNAKE)
    int_cols = ["udi", "rotational_speed_rpm", "tool_wear_min", LABEL, *FAILURE_MODES]
    for col in int_cols + ["air_temperature_k", "process_temperature_k", "torque_nm"]:
        if not pd.api.types.is_numeric_dtype(df[col]):
            raise DataValidationError(f"{where}: column {col} must be numeric, got {df[col].dtype}")
    for col in int_cols:
        if not (df[col] == df[col].round()).all():
            raise DataValidationError(f"{where}: column {col} must hold whole numbers")
        df[col] = df[col].astype(np.int64)
    for col in [LABEL, *FAILURE_MODES]:
        bad = ~df[col].isin([0, 1])
        if bad.any():
            raise DataValidationError(f"{where}: column {col} must be 0/1; udi {df.loc[bad, 'udi'].head(5).tolist()}")
    bad_type = ~df["type"].isin(list(TYPE_CODES))
    if bad_type.any():
        raise DataValidationError(
            f"{where}: type must be one of {sorted(TYPE_CODES)}; udi {df.loc[bad_type, 'udi'].head(5).tolist()}"
        )
    for col in NUMERIC_FEATURES:
        low, high = ranges[col]
        out = (df[col] < low) | (df[col] > high)
        if out.any():
            raise DataValidationError(
                f"{where}: {col} outside physical range [{low}, {high}] at udi {df.loc[out, 'udi'].head(5).tolist()}"
            )
    if df["udi"].duplicated().any():
        raise DataValidationError(f"{where}: duplicate udi {df.loc[df['udi'].duplicated(), 'udi'].head(5).tolist()}")
    df = df.sort_values("udi", kind="stable").reset_index(drop=True)
    any_mode = df[FAILURE_MODES].sum(axis=1) > 0
    quirks = {
        "failures_without_mode_flag": int(((df[LABEL] == 1) & ~any_mode).sum()),
        "mode_flag_without_failure": int(((df[LABEL] == 0) & any_mode).sum()),
        "rule": "label = machine_failure as recorded; mode flags kept for analysis, "
        "never features, never used to change the label",
    }
    return df, quirks


def run(settings: Settings) -> list:
    """Produce every prep file; unchanged inputs, code and config leave everything as it is."""
    paths = Paths.from_settings(settings)
    store = DataStore(paths=paths)
    data = settings.data
    v = data.versions
    ranges = settings.deployment.input_ranges
    entries = []

    raw_sha = check_raw(paths)
    log.info("raw file %s sha256 %s verified", paths.raw_file, raw_sha)

    # v1_raw: the raw file as ingested, schema-checked, byte for byte.
    step = store.begin(producer=PRODUCER, inputs=[paths.raw_file])
    raw_bytes = paths.raw_file.read_bytes()
    raw = pd.read_csv(paths.raw_file)
    validate_source(raw, paths.raw_file)
    v1_path = paths.data_version_dir(v.raw) / paths.raw_file.name
    entries.append(
        store.write_bytes(
            step,
            data_version=v.raw,
            path=v1_path,
            data=raw_bytes,
            rows=len(raw),
            params={"step": "ingest", "schema": SOURCE_COLUMNS},
        )
    )
    _attribution(paths.processed_dir)

    # v2_cleaned
    step = store.begin(producer=PRODUCER, inputs=[v1_path])
    cleaned, quirks = clean(pd.read_csv(v1_path), ranges=ranges, where=v1_path)
    v2_path = paths.data_version_dir(v.cleaned) / "cleaned.csv"
    entries.append(
        store.write_table(
            step,
            data_version=v.cleaned,
            path=v2_path,
            df=cleaned,
            params={"step": "clean", "ranges": {k: list(r) for k, r in ranges.items()}, **quirks},
        )
    )

    # v3_split: chronological by udi.
    if data.train_rows + data.production_rows != len(cleaned):
        raise DataValidationError(
            f"data.train_rows ({data.train_rows}) + data.production_rows ({data.production_rows}) must equal the "
            f"{len(cleaned)} cleaned rows in {v2_path}"
        )
    step = store.begin(producer=PRODUCER, inputs=[v2_path])
    train = cleaned.iloc[: data.train_rows].reset_index(drop=True)
    production = cleaned.iloc[data.train_rows :].reset_index(drop=True)
    split_params = {
        "step": "split",
        "order": "udi ascending",
        "train_rows": data.train_rows,
        "production_rows": data.production_rows,
    }
    entries.append(
        store.write_table(
            step,
            data_version=v.split,
            path=paths.train_file(v.split),
            df=train,
            params={**split_params, "part": "train", "udi_range": [int(train.udi.iloc[0]), int(train.udi.iloc[-1])]},
        )
    )
    prod_path = paths.data_version_dir(v.split) / "production.csv"
    entries.append(
        store.write_table(
            step,
            data_version=v.split,
            path=prod_path,
            df=production,
            params={
                **split_params,
                "part": "production",
                "udi_range": [int(production.udi.iloc[0]), int(production.udi.iloc[-1])],
            },
        )
    )

    # v4_day2: the later timeframe as is, plus one set per seeded drift recipe.
    step = store.begin(producer=PRODUCER, inputs=[prod_path])
    day2_dir = paths.production_version_dir(v.day2)
    entries.append(
        store.write_table(
            step,
            data_version=v.day2,
            path=day2_dir / "natural.csv",
            df=production,
            params={"step": "day2", "recipe": "natural"},
        )
    )
    for recipe in data.day2.recipes:
        drifted = apply_recipe(production, recipe, seed=data.day2.seed, ranges=ranges)
        entries.append(
            store.write_table(
                step,
                data_version=v.day2,
                path=day2_dir / f"{recipe.name}.csv",
                df=drifted,
                params={"step": "day2", "seed": data.day2.seed, "recipe": recipe.model_dump(mode="json")},
            )
        )
    _attribution(paths.production_dir)
    return entries


def _attribution(folder: Path) -> None:
    target = folder / "ATTRIBUTION.md"
    if not target.is_file() or target.read_text(encoding="utf-8") != ATTRIBUTION:
        atomic_write_text(target, ATTRIBUTION)
