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

import ast
import math
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


# --- derived-feature expressions ---------------------------------------------------------------
_BINOPS = {ast.Add: "Add", ast.Sub: "Sub", ast.Mult: "Mul", ast.Div: "Div"}
_CONSTANTS = {"pi": math.pi}


@dataclass(frozen=True)
class Expr:
    """A parsed expression: op is "col", "const", "neg" or an ONNX binary op (Add, Sub, Mul, Div)."""

    op: str
    name: str = ""
    value: float = 0.0
    args: tuple[Expr, ...] = ()

    @property
    def columns(self) -> set[str]:
        if self.op == "col":
            return {self.name}
        return set().union(*(a.columns for a in self.args)) if self.args else set()

    def evaluate(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """float32 arithmetic, one operation at a time, exactly as the ONNX nodes do it."""
        if self.op == "col":
            return cols[self.name].astype(np.float32, copy=False)
        if self.op == "const":
            return np.float32(self.value)  # type: ignore[return-value]
        if self.op == "neg":
            return np.negative(self.args[0].evaluate(cols))
        a, b = (x.evaluate(cols) for x in self.args)
        fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[self.op]
        return fn(a, b, dtype=np.float32)

    def interval(self, ranges: dict[str, tuple[float, float]]) -> tuple[float, float]:
        """The values this expression can take when every column stays in its declared range."""
        if self.op == "col":
            return ranges[self.name]
        if self.op == "const":
            return (self.value, self.value)
        if self.op == "neg":
            lo, hi = self.args[0].interval(ranges)
            return (-hi, -lo)
        (a, b), (c, d) = (x.interval(ranges) for x in self.args)
        if self.op == "Add":
            return (a + c, b + d)
        if self.op == "Sub":
            return (a - d, b - c)
        if self.op == "Div":
            c, d = 1 / d, 1 / c  # the denominator's interval excludes 0 (checked first)
        products = (a * c, a * d, b * c, b * d)
        return (min(products), max(products))

    def check_denominators(self, ranges: dict[str, tuple[float, float]]) -> None:
        """ValueError when a division's denominator can be 0 within the declared ranges."""
        for arg in self.args:
            arg.check_denominators(ranges)
        if self.op == "Div":
            lo, hi = self.args[1].interval(ranges)
            if lo <= 0 <= hi:
                raise ValueError(
                    f"divides by {self.args[1].text()}, which can be 0 within the declared ranges "
                    f"(it spans [{lo:g}, {hi:g}])"
                )

    def text(self) -> str:
        if self.op == "col":
            return self.name
        if self.op == "const":
            return f"{self.value:g}"
        if self.op == "neg":
            return f"-({self.args[0].text()})"
        sym = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/"}[self.op]
        return f"({self.args[0].text()} {sym} {self.args[1].text()})"


def parse_expr(
    text: str,
    *,
    numeric: AbstractSet[str],
    forbidden: AbstractSet[str] = frozenset(),
    categorical: AbstractSet[str] = frozenset(),
) -> Expr:
    """Parse `text` (+ - * / over numeric feature names, numbers, pi, parentheses); ValueError says what is wrong."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ValueError(f"expression {text!r} is not valid: {e.msg}") from None

    def build(node: ast.AST) -> Expr:
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _fold(Expr(_BINOPS[type(node.op)], args=(build(node.left), build(node.right))))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return _fold(Expr("neg", args=(build(node.operand),)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return build(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return Expr("const", value=float(node.value))
        if isinstance(node, ast.Name):
            if node.id in _CONSTANTS:
                return Expr("const", value=_CONSTANTS[node.id])
            if node.id in forbidden:
                raise ValueError(f"uses {node.id}, which is never a feature (time order, label or never_features)")
            if node.id in categorical:
                raise ValueError(f"uses {node.id}, a categorical feature (expressions take numeric features)")
            if node.id not in numeric:
                raise ValueError(f"names an unknown column {node.id!r} (numeric features: {sorted(numeric)})")
            return Expr("col", name=node.id)
        raise ValueError(f"unsupported syntax {ast.unparse(node)!r} (use + - * / over columns, numbers and pi)")

    expr = build(tree.body)
    if not expr.columns:
        raise ValueError(f"expression {text!r} uses no column")
    return expr


def _fold(e: Expr) -> Expr:
    """A node whose arguments are all constants becomes one constant (float64 arithmetic, as Python does)."""
    if not all(a.op == "const" for a in e.args):
        return e
    vals = [a.value for a in e.args]
    if e.op == "neg":
        return Expr("const", value=-vals[0])
    if e.op == "Div" and vals[1] == 0:
        raise ValueError("divides by the constant 0")
    ops = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b, "Div": lambda a, b: a / b}
    return Expr("const", value=ops[e.op](*vals))


def sanitize(name: str) -> str:
    """An ONNX-safe fragment of a column name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)
