"""Cleaning and checks of a raw table, from the dataset section of config.yaml (shared.dataset.DatasetConfig).

`read_raw` reads the raw CSV; `check_source` requires every configured column (one line naming the first
missing one and the file); `clean` returns the cleaned table:
- the configured columns only, in the raw file's order, renamed from their source header to their name
  (unconfigured columns are dropped and recorded);
- no missing value in the time order, a feature or the label (a never-feature may be empty: a failure cause
  exists only for failures);
- the time-order column: whole numbers (kind integer) or ISO 8601 times (kind timestamp), unique; the rows are
  sorted by it (stable);
- a numeric feature: numbers, finite, inside its declared range; a categorical feature: one of its levels;
- the label: one of its declared failure / normal values, recorded as 1 / 0. The label is kept as recorded:
  the never-features (identifiers, leakage) stay in the table for analysis, never used to change it.
Every refusal is one `DataValidationError` line: how many rows, the first one (its line in the raw file, the
column, the value) and what was expected. Pure: reads nothing but its arguments, writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from shared.dataset import CategoricalColumn, DatasetConfig, NumericColumn
from shared.errors import DataValidationError

HEADER_LINES = 1  # the raw file's line of a row is its position + 1 + HEADER_LINES


def read_raw(path: Path, dataset: DatasetConfig) -> pd.DataFrame:
    """The raw CSV as read by pandas, categorical features as text (a level "1" stays "1")."""
    text_columns = {c.source: str for c in dataset.categorical}
    return pd.read_csv(path, dtype=text_columns)


def check_source(df: pd.DataFrame, dataset: DatasetConfig, *, where: Path) -> None:
    missing = [s for s in dataset.source_to_name if s not in df.columns]
    if missing:
        more = f" (and {len(missing) - 1} more: {missing[1:]})" if len(missing) > 1 else ""
        raise DataValidationError(
            f"{where}: column {missing[0]!r} of dataset {dataset.name} is missing{more}; the file's header is "
            f"{list(df.columns)}"
        )


def _line(df: pd.DataFrame, position: int) -> int:
    """The raw file's line number of the row at `position` (the frame's index holds the read order)."""
    return int(df.index[position]) + 1 + HEADER_LINES


def _refuse(df: pd.DataFrame, bad: pd.Series | np.ndarray, column: str, why: str, *, where: Path) -> None:
    """Raise one line when any row of `bad` is true: how many, and the first one with its value."""
    mask = np.asarray(bad, dtype=bool)
    if not mask.any():
        return
    first = int(np.flatnonzero(mask)[0])
    value = _plain(df[column].iloc[first])
    raise DataValidationError(
        f"{where}: {int(mask.sum())} row(s) with {column} {why}; the first at line {_line(df, first)}: {value!r}"
    )


def clean(raw: pd.DataFrame, dataset: DatasetConfig, *, where: Path) -> tuple[pd.DataFrame, dict]:
    """(the cleaned table, parameters for the manifest). DataValidationError names the first problem."""
    check_source(raw, dataset, where=where)
    to_name = dataset.source_to_name
    kept = [s for s in raw.columns if s in to_name]
    dropped = [str(s) for s in raw.columns if s not in to_name]
    df = raw[kept].rename(columns=to_name)
    for col in [dataset.order.name, *dataset.feature_names, dataset.label.name]:
        _refuse(df, df[col].isna(), col, "missing", where=where)
    _check_order(df, dataset, where=where)
    for feature in dataset.features:
        if isinstance(feature, NumericColumn):
            _check_numeric(df, feature, where=where)
        else:
            _check_levels(df, feature, where=where)
    _check_ranges(df, dataset, where=where)
    label = dataset.label
    text = df[label.name].astype(str).str.strip()
    declared = {str(v) for v in [*label.failure, *label.normal]}
    why = f"not among failure {label.failure} / normal {label.normal}"
    _refuse(df, ~text.isin(declared), label.name, why, where=where)
    df[label.name] = label.encode(df[label.name])
    df = df.sort_values(dataset.order.name, kind="stable", key=_order_key(dataset)).reset_index(drop=True)
    params: dict = {
        "ranges": {c.name: list(c.range) for c in dataset.numeric},
        "label_counts": {"failure": int(df[label.name].sum()), "normal": int((df[label.name] == 0).sum())},
        "rule": f"label = {label.name} as recorded; never_features kept for analysis, never features, "
        "never used to change the label",
    }
    if dropped:
        params["dropped_columns"] = dropped
    return df, params


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds (so that a message shows 350.5, not np.float64(350.5))."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _order_key(dataset: DatasetConfig) -> Callable[[pd.Series], pd.Series] | None:
    """The sort key of the time order: a timestamp sorts by the time it means, not by its text."""
    if dataset.order.kind == "timestamp":
        return lambda s: pd.to_datetime(s, utc=True, format="ISO8601")
    return None


def _check_order(df: pd.DataFrame, dataset: DatasetConfig, *, where: Path) -> None:
    name = dataset.order.name
    col = df[name]
    if dataset.order.kind == "integer":
        numbers = pd.to_numeric(col, errors="coerce")
        whole = numbers.notna() & np.isfinite(numbers.astype(float)) & (numbers == numbers.round())
        _refuse(df, ~whole, name, "not a whole number (the time order is an integer)", where=where)
        df[name] = numbers.astype(np.int64)
        key = df[name]
    else:
        key = pd.to_datetime(col.astype(str), utc=True, format="ISO8601", errors="coerce")
        _refuse(df, key.isna(), name, "not an ISO 8601 time (the time order is a timestamp)", where=where)
    _refuse(df, key.duplicated(keep="first"), name, "repeated (the time order must be unique)", where=where)


def _check_numeric(df: pd.DataFrame, c: NumericColumn, *, where: Path) -> None:
    col = df[c.name]
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        numbers = pd.to_numeric(col, errors="coerce")
        _refuse(df, numbers.isna(), c.name, "not a number", where=where)
        df[c.name] = col = numbers
    _refuse(df, ~np.isfinite(col.to_numpy(dtype=np.float64)), c.name, "not a finite number", where=where)


def _check_ranges(df: pd.DataFrame, dataset: DatasetConfig, *, where: Path) -> None:
    """One line for every value outside its declared range: how many rows, the first (line, column, value)."""
    outside = {}
    for c in dataset.numeric:
        values = df[c.name].to_numpy(dtype=np.float64)
        outside[c.name] = (values < c.range[0]) | (values > c.range[1])
    rows = np.logical_or.reduce(list(outside.values())) if outside else np.zeros(len(df), dtype=bool)
    if not rows.any():
        return
    first = int(np.flatnonzero(rows)[0])
    name = next(n for n, mask in outside.items() if mask[first])
    low, high = dataset.column(name).range  # type: ignore[union-attr]
    raise DataValidationError(
        f"{where}: {int(rows.sum())} row(s) hold a value outside its declared range; the first at line "
        f"{_line(df, first)}: {name} = {_plain(df[name].iloc[first])!r}, range [{low:g}, {high:g}]"
    )


def _check_levels(df: pd.DataFrame, c: CategoricalColumn, *, where: Path) -> None:
    _refuse(df, ~df[c.name].astype(str).isin(c.levels), c.name, f"not one of its levels {c.levels}", where=where)
