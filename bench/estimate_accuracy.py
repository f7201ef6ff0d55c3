"""How far the monitor's label-free estimate is from the realized figures on the day-2 sets, per calibration.

For each `decision.calibration` asked for, the trainer's candidate is trained in memory from config.yaml (nothing is
registered); its ONNX file scores each day-2 set (data.versions.day2: natural.csv and one file per recipe of
data.day2.recipes) and serves its decisions at the model's threshold; each set is cut into consecutive windows of
`monitoring.estimate.window` rows (the most recent window last), and per window services.monitor.estimate gives
the estimated F1 (from the probabilities alone) beside the realized F1 (from the labels). Prints one markdown table
row per (calibration, set): windows, failures, realized and estimated F1 per window, the largest |error| and how
many windows are within `--tolerance`; and the same for precision, recall and cost per 1,000 on the whole set.

    python -m bench.estimate_accuracy --config config.yaml --calibration none sigmoid isotonic

Needs a prepped volume (python -m services.prep). Not a timing benchmark: the figures do not depend on the machine.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import yaml

from services.monitor.estimate import compare
from services.trainer.dataset import labels, readings
from services.trainer.train import train_candidate
from shared.config import Settings, load_settings
from shared.datastore import DataStore
from shared.onnx_model import load_session
from shared.paths import Paths


def settings_with(config: Path, calibration: str) -> Settings:
    """config.yaml with decision.calibration replaced (a temporary file beside it: same volume root)."""
    cfg = yaml.safe_load(config.read_text())
    cfg["decision"]["calibration"] = calibration
    path = config.with_name(f".estimate-accuracy-{calibration}.yaml")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    try:
        return load_settings(path, env={})
    finally:
        path.unlink()


def day2_sets(settings: Settings) -> list[str]:
    return ["natural", *(r.name for r in settings.data.day2.recipes)]


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def measure(settings: Settings, *, tolerance: float) -> list[str]:
    cand = train_candidate(settings, data_version=settings.data.version)
    ds = settings.dataset
    model = load_session(cand.model_bytes, name="candidate", features=ds.feature_names)
    paths = Paths.from_settings(settings)
    store = DataStore(paths=paths)
    size = settings.monitoring.estimate.window
    lines = []
    for name in day2_sets(settings):
        path = paths.production_version_dir(settings.data.versions.day2) / f"{name}.csv"
        df = store.read_table(path)
        y = labels(df, ds, where=path)
        p = np.asarray(model.predict_proba(readings(df, ds, where=path)), dtype=np.float64).reshape(-1)
        flagged = (p >= cand.threshold).astype(int)
        windows = [slice(i, i + size) for i in range(0, len(y) - size + 1, size)]
        per = [compare(y[w], p[w], flagged[w], settings=settings) for w in windows]
        errors = [c.abs_error["f1"] for c in per]
        known = [err for err in errors if err is not None]
        whole = compare(y, p, flagged, settings=settings)
        lines.append(
            f"| {settings.decision.calibration} | {name} | {cand.threshold:.2f} | {len(per)} x {size} | "
            f"{' '.join(str(int(y[w].sum())) for w in windows)} | "
            f"{' '.join(fmt(c.realized.f1) for c in per)} | {' '.join(fmt(c.estimated.f1) for c in per)} | "
            f"{fmt(max(known) if known else None)} | {sum(err <= tolerance for err in known)}/{len(per)} | "
            f"{fmt(whole.realized.f1)} / {fmt(whole.estimated.f1)} | "
            f"{fmt(whole.realized.precision)} / {fmt(whole.estimated.precision)} | "
            f"{fmt(whole.realized.recall)} / {fmt(whole.estimated.recall)} | "
            f"{whole.realized.expected_cost_per_1000:.0f} / {whole.estimated.expected_cost_per_1000:.0f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("--calibration", nargs="+", default=None, help="none | sigmoid | isotonic (default: config's)")
    parser.add_argument("--tolerance", type=float, default=0.1, help="|estimated F1 - realized F1| counted as within")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = args.config.resolve()
    methods = args.calibration or [load_settings(config, env={}).decision.calibration]
    rows = [
        "| calibration | day-2 set | threshold | windows | failures per window | realized F1 per window | "
        "estimated F1 per window | max abs F1 error | windows within tolerance | whole set F1 real / est | "
        "precision real / est | recall real / est | cost per 1,000 real / est |",
        "|" + "---|" * 13,
    ]
    for method in methods:
        rows += measure(settings_with(config, method), tolerance=args.tolerance)
    print("\n".join(rows))  # noqa: T201 (the table is the answer, on stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
