"""prep: raw CSV -> v1_raw -> v2_cleaned -> v3_split (train / production) -> v4_day2 sets, from config alone.

Everything about the data comes from the dataset section of config.yaml (shared.dataset.DatasetConfig): the
raw file and its sha256, the columns and their names, kinds, levels and ranges, the time order and the label.
- v1_raw: the raw file, byte for byte, once its sha256 and its header (every configured column) are checked;
- v2_cleaned: services.prep.clean (names, types, levels, label values, ranges, unique time order, sorted);
- v3_split: the first data.train_rows rows in time order to train on, the last data.production_rows as the
  later timeframe;
- v4_day2: that later timeframe as is, plus one set per seeded drift recipe (services.prep.recipes).
Each file is one manifest entry (shared.datastore); a crash leaves the entries written so far, and a second
run with the same raw file, code and config writes nothing new.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from services.prep.clean import check_source, clean, read_raw
from services.prep.recipes import apply_recipe
from shared.atomic import atomic_write_text
from shared.config import Settings
from shared.datastore import DataStore, check_raw
from shared.errors import DataValidationError
from shared.paths import Paths

log = logging.getLogger(__name__)
PRODUCER = "services.prep.pipeline"


def attribution_text(settings: Settings) -> str:
    """The note written beside the derived files: where the data comes from (dataset.attribution)."""
    ds = settings.dataset
    source = ds.attribution or f"the raw file {ds.raw_file} (sha256 {ds.raw_sha256})"
    return (
        f"{ds.name} (derived files)\n\nDerived from: {source}.\n"
        "The files here were produced by Clockwork's prep service; manifest.txt records how.\n"
    )


def run(settings: Settings) -> list:
    """Produce every prep file; unchanged inputs, code and config leave everything as it is."""
    paths = Paths.from_settings(settings)
    store = DataStore(paths=paths)
    data = settings.data
    dataset = settings.dataset
    v = data.versions
    entries = []

    raw_sha = check_raw(paths)
    log.info("raw file %s sha256 %s verified", paths.raw_file, raw_sha)

    # v1_raw: the raw file as ingested, schema-checked, byte for byte.
    step = store.begin(producer=PRODUCER, inputs=[paths.raw_file])
    raw_bytes = paths.raw_file.read_bytes()
    raw = read_raw(paths.raw_file, dataset)
    check_source(raw, dataset, where=paths.raw_file)
    v1_path = paths.data_version_dir(v.raw) / paths.raw_file.name
    entries.append(
        store.write_bytes(
            step,
            data_version=v.raw,
            path=v1_path,
            data=raw_bytes,
            rows=len(raw),
            params={"step": "ingest", "schema": [str(c) for c in raw.columns]},
        )
    )
    _attribution(paths.processed_dir, attribution_text(settings))

    # v2_cleaned
    step = store.begin(producer=PRODUCER, inputs=[v1_path])
    cleaned, clean_params = clean(read_raw(v1_path, dataset), dataset, where=v1_path)
    v2_path = paths.data_version_dir(v.cleaned) / "cleaned.csv"
    entries.append(
        store.write_table(
            step,
            data_version=v.cleaned,
            path=v2_path,
            df=cleaned,
            params={"step": "clean", **clean_params},
        )
    )

    # v3_split: chronological (the cleaned rows are sorted by the time order).
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
        "order": f"{dataset.order.name} ascending",
        "train_rows": data.train_rows,
        "production_rows": data.production_rows,
    }
    entries.append(
        store.write_table(
            step,
            data_version=v.split,
            path=paths.train_file(v.split),
            df=train,
            params={**split_params, "part": "train", "order_range": _span(train, dataset.order.name)},
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
                "order_range": _span(production, dataset.order.name),
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
        drifted = apply_recipe(production, recipe, seed=data.day2.seed, dataset=dataset)
        entries.append(
            store.write_table(
                step,
                data_version=v.day2,
                path=day2_dir / f"{recipe.name}.csv",
                df=drifted,
                params={
                    "step": "day2",
                    "seed": data.day2.seed,
                    "recipe": recipe.model_dump(mode="json", exclude_none=True),
                },
            )
        )
    _attribution(paths.production_dir, attribution_text(settings))
    return entries


def _span(df: pd.DataFrame, order: str) -> list:
    """The first and last time-order values of a part (JSON-native)."""
    first, last = df[order].iloc[0], df[order].iloc[-1]
    return [v.item() if hasattr(v, "item") else v for v in (first, last)]


def _attribution(folder: Path, text: str) -> None:
    target = folder / "ATTRIBUTION.md"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        atomic_write_text(target, text)
