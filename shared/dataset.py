"""The data set is config: its columns, time order, label, leakage columns and derived features.

`dataset:` in config.yaml is the only place that knows a data set. This module is its schema and what
follows from it, for every service:
- `DatasetConfig`: the section's schema, with the checks that make a bad schema one clear line (an unknown
  column in an expression, a division by a column whose range holds 0, a leakage column used as a feature,
  duplicate names);
- the model's input: one float32 tensor `readings` [N, F], the features in config order, a categorical
  feature as the index of its level (`encode`), so that the ONNX file takes raw readings;
- derived features: small arithmetic expressions over numeric features (+ - * /, numbers, `pi`), parsed
  once (`Expr`), evaluated in float32 in numpy (`Expr.evaluate`) and compiled into ONNX nodes
  (services/trainer/export.py) in the same order of operations, so serving never computes them
  differently from training. A sub-expression without columns (e.g. `(2 * pi / 60)`) is folded into one
  float32 constant.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.expressions import Expr, parse_expr

NAME_RE = r"^[a-z][a-z0-9_]{0,62}$"
ONNX_INPUT = "readings"
ONNX_OUTPUT = "probability"
Name = Annotated[str, Field(pattern=NAME_RE)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Column(_Strict):
    name: Name  # the name used everywhere after prep (snake_case)
    source: Annotated[str, Field(min_length=1)]  # the raw file's header
    unit: str = ""
    description: str = ""
    aliases: list[Annotated[str, Field(min_length=1)]] = []  # more names the API accepts

    @property
    def accepted_names(self) -> list[str]:
        """Every name a client may use for this column: its name, the raw header, the aliases."""
        out = [self.name]
        for n in [self.source, *self.aliases]:
            if n not in out:
                out.append(n)
        return out


class NumericColumn(_Column):
    kind: Literal["numeric"]
    range: tuple[float, float]  # the physically valid range: prep refuses raw rows outside it, so does the API

    @field_validator("range", mode="before")
    @classmethod
    def _pair(cls, v: object) -> object:
        """YAML gives a list; numbers stay strict (an int is a float, a string is not)."""
        if (
            isinstance(v, list)
            and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        ):
            return (float(v[0]), float(v[1]))
        return v

    @model_validator(mode="after")
    def _range(self) -> NumericColumn:
        low, high = self.range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"range of {self.name}: low must be below high, both finite, got {list(self.range)}")
        return self


class CategoricalColumn(_Column):
    kind: Literal["categorical"]
    levels: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2)]

    @model_validator(mode="after")
    def _levels(self) -> CategoricalColumn:
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels of {self.name} must be unique, got {self.levels}")
        return self

    def code(self, level: str) -> float:
        return float(self.levels.index(level))


Feature = Annotated[NumericColumn | CategoricalColumn, Field(discriminator="kind")]


class OrderColumn(_Strict):
    """The column that orders rows in time: the split, the replay order and drift windows follow it."""

    name: Name
    source: Annotated[str, Field(min_length=1)]
    kind: Literal["integer", "timestamp"]


class LabelColumn(_Strict):
    """The label and which of its raw values mean failure; any other value in the data is refused."""

    name: Name
    source: Annotated[str, Field(min_length=1)]
    failure: Annotated[list[int | str], Field(min_length=1)]
    normal: Annotated[list[int | str], Field(min_length=1)]

    @model_validator(mode="after")
    def _disjoint(self) -> LabelColumn:
        both = set(map(str, self.failure)) & set(map(str, self.normal))
        if both:
            raise ValueError(f"label values {sorted(both)} are declared both failure and normal")
        return self

    def encode(self, raw: pd.Series) -> pd.Series:
        """Raw label values -> 1 (failure) / 0 (normal); ValueError names undeclared values."""
        text = raw.astype(str).str.strip()
        failure = {str(v) for v in self.failure}
        normal = {str(v) for v in self.normal}
        bad = ~text.isin(failure | normal)
        if bad.any():
            values = sorted(text[bad].unique().tolist())[:5]
            raise ValueError(
                f"label {self.source!r}: {int(bad.sum())} row(s) hold values other than the declared "
                f"failure {self.failure} / normal {self.normal}: {values}"
            )
        return text.isin(failure).astype("int64")


class KeptColumn(_Strict):
    """A column kept in the cleaned data for analysis and lineage, never a feature (identifiers, leakage)."""

    name: Name
    source: Annotated[str, Field(min_length=1)]


class DerivedFeature(_Strict):
    name: Name
    expr: Annotated[str, Field(min_length=1, max_length=500)]
    unit: str = ""
    description: str = ""


class DatasetConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]
    raw_file: Annotated[str, Field(min_length=1)]
    raw_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    attribution: str = ""
    order: OrderColumn
    label: LabelColumn
    features: Annotated[list[Feature], Field(min_length=1)]
    never_features: list[KeptColumn] = []
    derived: list[DerivedFeature] = []

    @model_validator(mode="after")
    def _consistent(self) -> DatasetConfig:
        names = [self.order.name, self.label.name, *(c.name for c in self.features)]
        names += [c.name for c in self.never_features] + [d.name for d in self.derived]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(
                f"column names must be unique across order, label, features, never_features and derived: {dup}"
            )
        sources = [self.order.source, self.label.source, *(c.source for c in self.features)]
        sources += [c.source for c in self.never_features]
        dup = sorted({s for s in sources if sources.count(s) > 1})
        if dup:
            raise ValueError(f"each raw column may be used once: {dup}")
        accepted: dict[str, str] = {}
        for col in self.features:
            for alias in col.accepted_names:
                if accepted.setdefault(alias, col.name) != col.name:
                    raise ValueError(f"the name {alias!r} is accepted for both {accepted[alias]} and {col.name}")
        forbidden = {self.order.name, self.label.name, *(c.name for c in self.never_features)}
        numeric = {c.name: c for c in self.features if isinstance(c, NumericColumn)}
        categorical = {c.name for c in self.features if isinstance(c, CategoricalColumn)}
        for d in self.derived:
            try:
                expr = parse_expr(d.expr, numeric=set(numeric), forbidden=forbidden, categorical=categorical)
                expr.check_denominators({n: c.range for n, c in numeric.items()})
            except ValueError as e:
                raise ValueError(f"derived feature {d.name}: {e}") from None
        return self

    # --- what follows from the schema --------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        """The model input's columns, in order (the `readings` tensor)."""
        return [c.name for c in self.features]

    @property
    def numeric(self) -> list[NumericColumn]:
        return [c for c in self.features if isinstance(c, NumericColumn)]

    @property
    def categorical(self) -> list[CategoricalColumn]:
        return [c for c in self.features if isinstance(c, CategoricalColumn)]

    def column(self, name: str) -> NumericColumn | CategoricalColumn:
        for c in self.features:
            if c.name == name:
                return c
        raise KeyError(f"no feature named {name!r} in dataset {self.name}")

    @property
    def source_to_name(self) -> dict[str, str]:
        """Raw header -> name, for every column prep keeps."""
        cols: list[_Column | OrderColumn | LabelColumn | KeptColumn] = [self.order, self.label]
        cols += [*self.features, *self.never_features]
        return {c.source: c.name for c in cols}

    @property
    def kept_columns(self) -> list[str]:
        """The cleaned table's columns, in order: time order, features, label, never-features."""
        return [self.order.name, *self.feature_names, self.label.name, *(c.name for c in self.never_features)]

    def expressions(self) -> list[tuple[str, Expr]]:
        numeric = {c.name for c in self.numeric}
        return [(d.name, parse_expr(d.expr, numeric=numeric)) for d in self.derived]

    def engineered_names(self, *, derived: bool) -> list[str]:
        """The features the model itself sees: numeric, one-hot of each categorical level, derived."""
        names = [c.name for c in self.numeric]
        for c in self.categorical:
            names += [f"{c.name}_{i}" for i in range(len(c.levels))]
        return names + ([d.name for d in self.derived] if derived else [])

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """A cleaned table -> float32 [N, F] model input (categorical as level index). Unknown levels raise."""
        out = np.empty((len(df), len(self.features)), dtype=np.float32)
        for i, col in enumerate(self.features):
            if isinstance(col, CategoricalColumn):
                codes = df[col.name].astype(str).map({lv: float(j) for j, lv in enumerate(col.levels)})
                if codes.isna().any():
                    unknown = sorted(set(df[col.name].astype(str)) - set(col.levels))
                    raise ValueError(f"{col.name}: unknown level(s) {unknown[:5]}; expected one of {col.levels}")
                out[:, i] = codes.to_numpy(dtype=np.float32)
            else:
                out[:, i] = df[col.name].to_numpy(dtype=np.float32)
        return out

    def engineer(self, readings: np.ndarray, *, derived: bool) -> np.ndarray:
        """Reference feature engineering in numpy float32, the same arithmetic as the ONNX front graph."""
        x = readings.astype(np.float32, copy=False)
        index = {name: i for i, name in enumerate(self.feature_names)}
        parts = [x[:, [index[c.name] for c in self.numeric]]]
        for c in self.categorical:
            code = x[:, index[c.name] : index[c.name] + 1]
            parts += [(code == np.float32(j)).astype(np.float32) for j in range(len(c.levels))]
        if derived:
            cols = {c.name: x[:, index[c.name] : index[c.name] + 1] for c in self.numeric}
            parts += [e.evaluate(cols) for _, e in self.expressions()]
        return np.concatenate(parts, axis=1).astype(np.float32)
