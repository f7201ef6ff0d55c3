"""Training data of one data version: read, checked cell by cell, in time order, split, turned into arrays.

Nothing here writes. Every refusal is a DataValidationError naming the file (and, for a bad cell, its line and
column), raised before anything is fitted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.dataset import DatasetConfig
from shared.datastore import DataStore
from shared.errors import DataValidationError, NotFoundError
from shared.paths import PRODUCTION_FILE, Paths


def load_training_table(
    store: DataStore, paths: Paths, data_version: str, ds: DatasetConfig
) -> tuple[pd.DataFrame, Path]:
    """(the data version's train.csv, checked and in time order; its path)."""
    train_path = paths.train_file(data_version)
    if not train_path.is_file():
        raise NotFoundError(f"training data not found: {train_path} (data version {data_version}); run prep first")
    return chronological(check_table(store.read_table(train_path), ds, where=train_path), ds), train_path


def load_production_table(
    store: DataStore, paths: Paths, data_version: str, ds: DatasetConfig
) -> tuple[pd.DataFrame, Path] | None:
    """(the data version's production.csv, checked; its path), or None when the version has none."""
    prod_path = paths.data_version_dir(data_version) / PRODUCTION_FILE
    if not prod_path.is_file():
        return None
    return check_table(store.read_table(prod_path), ds, where=prod_path), prod_path


def chronological(df: pd.DataFrame, ds: DatasetConfig) -> pd.DataFrame:
    """Rows in time order: by the dataset's order column where every row has one, else file order (retrain data
    appends newer rows)."""
    col = ds.order.name
    if col in df.columns and df[col].notna().all():
        key = pd.to_datetime(df[col], utc=True) if ds.order.kind == "timestamp" else df[col]
        return (
            df.assign(_cw_order=key)
            .sort_values("_cw_order", kind="stable")
            .drop(columns="_cw_order")
            .reset_index(drop=True)
        )
    return df.reset_index(drop=True)


def split_holdout(df: pd.DataFrame, fraction: float, *, where: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_val = int(round(len(df) * fraction))
    if n_val < 1 or len(df) - n_val < 2:
        raise DataValidationError(
            f"{where}: {len(df)} rows cannot be split with training.validation_fraction={fraction}"
        )
    return df.iloc[: len(df) - n_val].reset_index(drop=True), df.iloc[len(df) - n_val :].reset_index(drop=True)


def labels(df: pd.DataFrame, ds: DatasetConfig, *, where: Path) -> np.ndarray:
    label = ds.label.name
    if label not in df.columns:
        raise DataValidationError(f"{where}: label column {label!r} missing")
    y = df[label]
    if y.isna().any() or not y.isin([0, 1]).all():
        raise DataValidationError(f"{where}: {label} must be 0/1 on every row")
    return y.to_numpy(dtype=np.int64)


def readings(df: pd.DataFrame, ds: DatasetConfig, *, where: Path) -> np.ndarray:
    """The model input (float32 [N, F], categorical as level index) of a cleaned table."""
    features = ds.feature_names
    missing = [c for c in features if c not in df.columns]
    if missing:
        raise DataValidationError(f"{where}: columns {missing} missing")
    if df[features].isna().any().any():
        raise DataValidationError(f"{where}: missing values in {features}")
    try:
        return ds.encode(df)
    except ValueError as e:
        raise DataValidationError(f"{where}: {e}") from e


def check_table(df: pd.DataFrame, ds: DatasetConfig, *, where: Path) -> pd.DataFrame:
    """The columns and cell values training relies on, checked before anything is fitted: the first bad cell
    is named by its line in the file (the header is line 1), its column and what it holds. Returns df."""
    label = ds.label.name
    needed = ds.feature_names + [label]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataValidationError(f"{where}: columns {missing} missing")

    def fail(bad: pd.Series, col: str, why: str) -> None:
        i = int(np.flatnonzero(bad.to_numpy())[0])
        value = df[col].iloc[i]
        value = value.item() if isinstance(value, np.generic) else value
        more = f" ({int(bad.sum())} rows in all)" if bad.sum() > 1 else ""
        raise DataValidationError(f"{where}: line {i + 2}: column {col}: {why.format(value=repr(value))}{more}")

    for col in needed:
        empty = df[col].isna()
        if empty.any():
            fail(empty, col, "no value")
    # The order column orders rows in time; rows appended by a retrain have none (NaN), but an integer order
    # value must be a number.
    numeric = [c.name for c in ds.numeric] + [label]
    if ds.order.kind == "integer" and ds.order.name in df.columns:
        numeric.append(ds.order.name)
    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = df[col].notna() & ~np.isfinite(values.astype(np.float64))
        if bad.any():
            fail(bad, col, "{value} is not a finite number")
    for cat in ds.categorical:
        bad = ~df[cat.name].astype(str).isin(cat.levels)
        if bad.any():
            fail(bad, cat.name, "{value} is not one of " + ", ".join(cat.levels))
    bad = ~pd.to_numeric(df[label]).isin([0, 1])
    if bad.any():
        fail(bad, label, "{value} is not 0 or 1")
    return df


def data_files(store: DataStore, data_version: str) -> list[dict]:
    latest: dict[str, Any] = {}
    for e in store.entries_for(data_version):
        latest[e.path] = e
    return [{"path": e.path, "sha256": e.sha256, "rows": e.rows} for e in latest.values()]
