"""Training data of one data version: read, checked cell by cell, in time order, split, turned into arrays.

Nothing here writes. Every refusal is a DataValidationError naming the file (and, for a bad cell, its line and
column), raised before anything is fitted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.datastore import DataStore
from shared.errors import DataValidationError, NotFoundError
from shared.features import LABEL, NUMERIC_FEATURES, RAW_COLUMNS, TYPE_CODES, encode_readings
from shared.paths import Paths

PRODUCTION_FILE = "production.csv"


def load_training_table(store: DataStore, paths: Paths, data_version: str) -> tuple[pd.DataFrame, Path]:
    """(the data version's train.csv, checked and in time order; its path)."""
    train_path = paths.train_file(data_version)
    if not train_path.is_file():
        raise NotFoundError(f"training data not found: {train_path} (data version {data_version}); run prep first")
    return chronological(check_table(store.read_table(train_path), where=train_path)), train_path


def load_production_table(store: DataStore, paths: Paths, data_version: str) -> tuple[pd.DataFrame, Path] | None:
    """(the data version's production.csv, checked; its path), or None when the version has none."""
    prod_path = paths.data_version_dir(data_version) / PRODUCTION_FILE
    if not prod_path.is_file():
        return None
    return check_table(store.read_table(prod_path), where=prod_path), prod_path


def chronological(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in time order: by udi where every row has one, else file order (retrain data appends newer rows)."""
    if "udi" in df.columns and df["udi"].notna().all():
        return df.sort_values("udi", kind="stable").reset_index(drop=True)
    return df.reset_index(drop=True)


def split_holdout(df: pd.DataFrame, fraction: float, *, where: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_val = int(round(len(df) * fraction))
    if n_val < 1 or len(df) - n_val < 2:
        raise DataValidationError(
            f"{where}: {len(df)} rows cannot be split with training.validation_fraction={fraction}"
        )
    return df.iloc[: len(df) - n_val].reset_index(drop=True), df.iloc[len(df) - n_val :].reset_index(drop=True)


def labels(df: pd.DataFrame, *, where: Path) -> np.ndarray:
    if LABEL not in df.columns:
        raise DataValidationError(f"{where}: label column {LABEL!r} missing")
    y = df[LABEL]
    if y.isna().any() or not y.isin([0, 1]).all():
        raise DataValidationError(f"{where}: {LABEL} must be 0/1 on every row")
    return y.to_numpy(dtype=np.int64)


def readings(df: pd.DataFrame, *, where: Path) -> np.ndarray:
    missing = [c for c in RAW_COLUMNS if c not in df.columns]
    if missing:
        raise DataValidationError(f"{where}: columns {missing} missing")
    if df[RAW_COLUMNS].isna().any().any():
        raise DataValidationError(f"{where}: missing values in {RAW_COLUMNS}")
    try:
        return encode_readings(df)
    except ValueError as e:
        raise DataValidationError(f"{where}: {e}") from e


def check_table(df: pd.DataFrame, *, where: Path) -> pd.DataFrame:
    """The columns and cell values training relies on, checked before anything is fitted: the first bad cell
    is named by its line in the file (the header is line 1), its column and what it holds. Returns df."""
    missing = [c for c in RAW_COLUMNS + [LABEL] if c not in df.columns]
    if missing:
        raise DataValidationError(f"{where}: columns {missing} missing")

    def fail(bad: pd.Series, col: str, why: str) -> None:
        i = int(np.flatnonzero(bad.to_numpy())[0])
        value = df[col].iloc[i]
        value = value.item() if isinstance(value, np.generic) else value
        more = f" ({int(bad.sum())} rows in all)" if bad.sum() > 1 else ""
        raise DataValidationError(f"{where}: line {i + 2}: column {col}: {why.format(value=repr(value))}{more}")

    for col in RAW_COLUMNS + [LABEL]:
        empty = df[col].isna()
        if empty.any():
            fail(empty, col, "no value")
    # udi orders the rows in time; rows appended by a retrain have none (NaN), but a value must be a number.
    for col in NUMERIC_FEATURES + [LABEL] + (["udi"] if "udi" in df.columns else []):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = df[col].notna() & ~np.isfinite(values.astype(np.float64))
        if bad.any():
            fail(bad, col, "{value} is not a finite number")
    bad = ~df["type"].isin(list(TYPE_CODES))
    if bad.any():
        fail(bad, "type", "{value} is not one of " + ", ".join(sorted(TYPE_CODES)))
    bad = ~pd.to_numeric(df[LABEL]).isin([0, 1])
    if bad.any():
        fail(bad, LABEL, "{value} is not 0 or 1")
    return df


def data_files(store: DataStore, data_version: str) -> list[dict]:
    latest: dict[str, Any] = {}
    for e in store.entries_for(data_version):
        latest[e.path] = e
    return [{"path": e.path, "sha256": e.sha256, "rows": e.rows} for e in latest.values()]
