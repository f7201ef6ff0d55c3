"""Is the pump_fleet data learnable from one reading? A check of the example, not part of the services.

`learnability(settings)` reads the raw CSV named by the config's dataset section, splits it chronologically
(the first train_rows / the last production_rows by the order column), trains the configured random forest on
the raw features alone and with the derived features (DatasetConfig.engineer: the float32 arithmetic the ONNX
graph uses), and returns the failure-class F1 of each on the production rows, with the failure rates.
It writes nothing. CLI: `python -m examples.pump_fleet.check [--config examples/pump_fleet/config.yaml]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from shared.config import Settings, load_settings

HERE = Path(__file__).resolve().parent


def chronological(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, production): the raw file renamed to the dataset's names and cut by the order column."""
    ds = settings.dataset
    raw = pd.read_csv(settings.volume / ds.raw_file, keep_default_na=False)
    df = raw.rename(columns=ds.source_to_name).sort_values(ds.order.name, kind="stable")
    train_rows, production_rows = settings.data.train_rows, settings.data.production_rows
    if train_rows + production_rows > len(df):
        raise ValueError(f"train_rows + production_rows = {train_rows + production_rows} > {len(df)} rows")
    return df.iloc[:train_rows], df.iloc[len(df) - production_rows :]


def learnability(settings: Settings) -> dict[str, float]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score

    ds, mp = settings.dataset, settings.model_params
    train, production = chronological(settings)
    y_train, y_prod = ds.label.encode(train[ds.label.name]), ds.label.encode(production[ds.label.name])
    out = {"failure_rate_train": float(y_train.mean()), "failure_rate_production": float(y_prod.mean())}
    for derived in (False, True):
        forest = RandomForestClassifier(
            n_estimators=mp.n_estimators,
            max_depth=mp.max_depth,
            class_weight=None if mp.class_weight == "none" else mp.class_weight,
            random_state=mp.random_state,
            n_jobs=-1,
        )
        forest.fit(ds.engineer(ds.encode(train), derived=derived), y_train)
        proba = forest.predict_proba(ds.engineer(ds.encode(production), derived=derived))[:, 1]
        predicted = (proba >= settings.training.threshold).astype(int)
        out["f1_derived" if derived else "f1_raw"] = float(f1_score(y_prod, predicted))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.pump_fleet.check", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(HERE / "config.yaml"))
    args = parser.parse_args(argv)
    result = learnability(load_settings(args.config))
    sys.stdout.write(json.dumps({k: round(v, 4) for k, v in result.items()}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
