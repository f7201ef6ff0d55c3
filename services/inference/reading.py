"""The request model of one reading and its encoding, built once per app from the `dataset:` section.

`ReadingSchema.build(dataset)` makes, at app creation:
- `model`: the pydantic model `Reading`, one field per feature named by its `name`, accepting every accepted
  name (the name, the raw header `source`, the aliases: AliasChoices). A numeric feature is a strict, finite
  float inside the declared range (the unit and range are in its description); a categorical feature is an
  enum of its levels. Unknown fields are refused. /docs and /openapi.json show exactly these columns.
- `encode(values)`: a validated reading (the model's `__dict__`, keyed by feature name) -> the model's input row
  in feature order, a categorical as the index of its level (shared.dataset: `readings` float32 [N, F]). The
  getter and the level -> index maps are made here once; a request does one C-level item fetch and one dict
  lookup per categorical feature.
- `example`: the reading the docs show, the holder probes each model with and the benchmark sends: the middle of
  each numeric range, the first level of each categorical feature (the schema has no other source of values).
- `accepted`: feature name -> every name a client may use for it (for "also accepted as" in refusals).

Nothing here touches the volume; a dataset section that loaded (shared.dataset checked it) always builds.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model

from shared.dataset import CategoricalColumn, DatasetConfig, NumericColumn

Row = list[Any]  # float per feature (a categorical already its level's index)


def _also(names: list[str]) -> str:
    others = names[1:]
    return f" (also accepted as {', '.join(repr(n) for n in others)})" if others else ""


def _numeric_field(col: NumericColumn) -> tuple[Any, Any]:
    low, high = col.range
    unit = f"{col.unit}, " if col.unit else ""
    what = f"; {col.description}" if col.description else ""
    return (
        float,
        Field(
            strict=True,
            ge=low,
            le=high,
            validation_alias=AliasChoices(*col.accepted_names),
            description=f"{unit}between {low:g} and {high:g}{what}{_also(col.accepted_names)}.",
        ),
    )


def _categorical_field(col: CategoricalColumn) -> tuple[Any, Any]:
    what = f"{col.description[:1].upper()}{col.description[1:]}, one of " if col.description else "One of "
    return (
        Literal[tuple(col.levels)],  # an enum of the levels in the document
        Field(
            validation_alias=AliasChoices(*col.accepted_names),
            description=f"{what}{', '.join(col.levels)}{_also(col.accepted_names)}.",
        ),
    )


def example_reading(dataset: DatasetConfig) -> dict[str, Any]:
    """A valid reading from the schema alone: mid-range numbers, the first level of each categorical."""
    out: dict[str, Any] = {}
    for col in dataset.features:
        if isinstance(col, CategoricalColumn):
            out[col.name] = col.levels[0]
        else:
            out[col.name] = round((col.range[0] + col.range[1]) / 2, 6)
    return out


def make_encoder(dataset: DatasetConfig) -> Callable[[dict[str, Any]], Row]:
    """values (keyed by feature name) -> the input row in feature order, categoricals as level indices."""
    names = dataset.feature_names
    codes = [
        (i, {level: float(j) for j, level in enumerate(col.levels)})
        for i, col in enumerate(dataset.features)
        if isinstance(col, CategoricalColumn)
    ]
    get: Callable[[dict[str, Any]], Any]
    if len(names) == 1:  # itemgetter of one key returns the value itself, not a tuple
        (name,) = names

        def get(values: dict[str, Any]) -> tuple:
            return (values[name],)

    else:
        get = operator.itemgetter(*names)  # one C call for the whole row
    if not codes:
        return lambda values: list(get(values))
    if len(codes) == 1:
        ((at, levels),) = codes

        def encode_one(values: dict[str, Any]) -> Row:
            row = list(get(values))
            row[at] = levels[row[at]]
            return row

        return encode_one

    def encode(values: dict[str, Any]) -> Row:
        row = list(get(values))
        for i, levels in codes:
            row[i] = levels[row[i]]
        return row

    return encode


@dataclass(frozen=True)
class ReadingSchema:
    """What the API knows of a reading, all derived from one dataset section (see the module docstring)."""

    dataset: DatasetConfig
    model: type[BaseModel]
    encode: Callable[[dict[str, Any]], Row]
    example: dict[str, Any]
    accepted: dict[str, list[str]]

    @classmethod
    def build(cls, dataset: DatasetConfig) -> ReadingSchema:
        fields: dict[str, Any] = {}
        for col in dataset.features:
            fields[col.name] = _categorical_field(col) if isinstance(col, CategoricalColumn) else _numeric_field(col)
        example = example_reading(dataset)
        model = create_model(
            "Reading",
            __config__=ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [example]}),
            __doc__=f"One reading of the {dataset.name} data set: every feature, by its name, raw header or alias.",
            **fields,
        )
        return cls(
            dataset=dataset,
            model=model,
            encode=make_encoder(dataset),
            example=example,
            accepted={c.name: c.accepted_names for c in dataset.features},
        )

    @property
    def names(self) -> list[str]:
        return self.dataset.feature_names

    def probe(self, rows: int = 2) -> np.ndarray:
        """The example reading as the model's input, `rows` times (float32 [rows, F])."""
        return np.array([self.encode(self.example)] * rows, dtype=np.float32)

    def by_source(self, values: dict[str, Any]) -> dict[str, Any]:
        """A reading keyed by feature name -> the same keyed by the raw headers (the data set's own names)."""
        return {self.dataset.column(name).source: value for name, value in values.items()}
