"""Helpers for trainer tests: config edits on a prepped project, labelled rows as the monitor writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from shared.config import Settings, load_settings
from shared.paths import Paths
from tests.ai4i import LABEL, RAW_COLUMNS

ROOT = Path(__file__).resolve().parents[2]


def with_config(settings: Settings, **overrides) -> Settings:
    """Rewrite the project's config.yaml with dotted-key overrides and load it again."""
    path = settings.config_path
    cfg = yaml.safe_load(path.read_text())
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_settings(path, env={})


def write_labelled(settings: Settings, rows: pd.DataFrame) -> None:
    """Labelled production rows in the monitor's format (labelled.jsonl + committed length in its state)."""
    paths = Paths.from_settings(settings)
    lines = []
    for i, r in enumerate(rows.itertuples(index=False)):
        rec = {c: getattr(r, c) for c in RAW_COLUMNS}
        rec = {k: (v if k == "type" else float(v)) for k, v in rec.items()}
        t = f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d}Z"
        rec.update(
            time=t,
            request_id=f"req-{i}",
            model_version="v1",
            machine_failure=int(getattr(r, LABEL)),
            probability=0.0,
            predicted=0,
            feedback_time=t,
        )
        lines.append(json.dumps(rec, sort_keys=True))
    data = ("\n".join(lines) + "\n").encode()
    paths.labelled_dir.mkdir(parents=True, exist_ok=True)
    (paths.labelled_dir / "labelled.jsonl").write_bytes(data)
    paths.monitor_state.parent.mkdir(parents=True, exist_ok=True)
    paths.monitor_state.write_text(json.dumps({"labelled": {"bytes": len(data), "rows": len(lines)}}))
