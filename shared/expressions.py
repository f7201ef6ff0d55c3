"""Derived-feature expressions: small arithmetic over numeric features, parsed once, evaluated identically twice.

An expression is `+ - * /` over numeric feature names, numbers, `pi` and parentheses (Python syntax, parsed with
`ast`, nothing evaluated). `Expr.evaluate` computes it in numpy float32 one operation at a time; the trainer
compiles the same tree into ONNX nodes (services/trainer/export.py), so serving never computes a derived feature
differently from training. A sub-expression without columns (e.g. `(2 * pi / 60)`) is folded into one constant.
`check_denominators` refuses a division by anything that can be 0 within the declared ranges.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np

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
