"""Shadow evaluation: how a candidate would have behaved on the traffic production actually saw.

The newest `last` prediction records across the instances' prediction logs (`Paths.prediction_log_dir`: the
JSONL segments of each instance not yet compacted into Parquet, lines of shared.schemas.PredictionRecord) are
replayed offline through the candidate's ONNX file, at the threshold it would serve with (deployment.threshold when
config sets one, else the model's own, shared.registry.model_threshold). Each segment is read backwards from its end,
a block at a time, until it holds `last` complete lines: the cost follows the window, never the log's size. A torn
last line (no newline yet) and malformed lines are left out and counted.

The report (`ShadowReport`, JSON): agreement with the served labels (each side at its own threshold), the
disagreements on the labelled part (the monitor's labelled rows, shared.labelled.load_labelled, joined by
request_id) split by who was right, the expected cost of each side there (services.trainer.decision.Costs at
decision.cost_missed_failure / cost_false_alarm, per 1,000 readings), the candidate's latency (measured: per row
and per batch of deployment.max_batch_rows) and the window (rows, time range, served versions, instances).
Same logs, labels and model: the same report apart from `latency`. No logged traffic: status "no_traffic" with
the reason. Callers: `python -m services.trainer shadow vN` and the retrain job (metadata.json `shadow`).
Nothing is written here.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from services.trainer.decision import Costs
from shared.config import Settings
from shared.errors import DataValidationError
from shared.labelled import load_labelled
from shared.onnx_model import OnnxModel
from shared.paths import LOG_SUFFIX, Paths, instance_of
from shared.registry import Registry, model_threshold
from shared.schemas import PredictionRecord

log = logging.getLogger(__name__)

DEFAULT_LAST = 5000  # the window: the newest prediction records across all instances
BLOCK = 1 << 16  # bytes read per step backwards
LATENCY_ROWS = 2000  # rows timed one at a time (the newest of the window)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Window(_Strict):
    rows: int
    first_time: str | None
    last_time: str | None
    served_versions: dict[str, int]  # model_version -> rows it served in the window
    instances: list[str]  # the prediction logs the window came from
    skipped_lines: int  # malformed lines in the tails read (torn or not a PredictionRecord)


class SideCost(_Strict):
    tp: int
    fp: int
    fn: int
    tn: int
    expected_cost_per_1000: float


class Labelled(_Strict):
    rows: int
    positives: int
    source: str  # where the true labels came from
    disagreements: int
    # the disagreements by who was right (sums to `disagreements`)
    candidate_catches_failure: int  # candidate 1, served 0, truth 1
    candidate_false_alarm: int  # candidate 1, served 0, truth 0
    candidate_misses_failure: int  # candidate 0, served 1, truth 1
    candidate_avoids_false_alarm: int  # candidate 0, served 1, truth 0
    costs: Costs
    candidate: SideCost
    served: SideCost


class Latency(_Strict):
    rows_timed: int
    per_row_p50_us: float
    per_row_p99_us: float
    batch_rows: int
    batches_timed: int
    per_batch_p50_ms: float
    per_batch_p99_ms: float


class ShadowReport(_Strict):
    status: Literal["ok", "no_traffic"]
    reason: str
    version: str
    threshold: float | None
    window: Window
    agreement: float | None = None  # share of the window's rows where both sides give the same label
    disagreements: int | None = None
    candidate_flags: int | None = None  # rows the candidate labels 1
    served_flags: int | None = None
    labelled: Labelled | None = None
    latency: Latency | None = None


def tail_lines(path: Path, count: int) -> tuple[list[bytes], int]:
    """The last `count` complete lines of `path` (oldest first) and how many bytes were read; a final line without
    its newline (a write in progress) is not one of them. Reads backwards a block at a time."""
    if count <= 0:
        return [], 0
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos, newlines = end, 0
        blocks: list[bytes] = []
        while pos > 0 and newlines <= count:  # count + 1 newlines: the oldest wanted line is whole
            step = min(BLOCK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            blocks.append(block)
            newlines += block.count(b"\n")
    buf = b"".join(reversed(blocks))
    cut = buf.rfind(b"\n")
    if cut < 0:
        return [], len(buf)
    lines = buf[: cut + 1].splitlines()
    if pos > 0:
        lines = lines[1:]  # the first piece may be the end of an older line
    return lines[-count:], len(buf)


def recent_records(paths: Paths, last: int) -> tuple[list[PredictionRecord], list[str], int]:
    """The newest `last` prediction records across every instance's log (oldest first, ties by request id),
    the instances they came from, and the malformed lines skipped."""
    folder = paths.prediction_log_dir
    files = sorted(folder.glob(f"*{LOG_SUFFIX}")) if folder.is_dir() else []
    per_file: list[list[tuple[str, str, PredictionRecord]]] = []
    instances: list[str] = []
    skipped = 0
    for path in files:
        lines, _ = tail_lines(path, last)
        records = []
        for line in lines:
            try:
                r = PredictionRecord.model_validate_json(line)
            except ValidationError:
                skipped += 1
                continue
            records.append((r.time, r.request_id, r))
        if records and instance_of(path) not in instances:
            instances.append(instance_of(path))
        if records:
            per_file.append(sorted(records, key=lambda x: (x[0], x[1])))
    merged = list(heapq.merge(*per_file, key=lambda x: (x[0], x[1])))
    return [r for _, _, r in merged[-last:]], instances, skipped


def _percentile_us(ns: list[int], q: float) -> float:
    return round(float(np.percentile(np.asarray(ns, dtype=np.float64), q)) / 1000.0, 2)


def measure_latency(model: OnnxModel, readings: np.ndarray, *, batch_rows: int) -> Latency:
    """Time the model on the newest LATENCY_ROWS rows one at a time, and on the window in batches of `batch_rows`."""
    single = readings[-LATENCY_ROWS:]
    model.predict_proba(single[:1])  # warm up
    rows: list[int] = []
    for i in range(len(single)):
        t = time.perf_counter_ns()
        model.predict_proba(single[i : i + 1])
        rows.append(time.perf_counter_ns() - t)
    batches: list[int] = []
    for start in range(0, len(readings), batch_rows):
        t = time.perf_counter_ns()
        model.predict_proba(readings[start : start + batch_rows])
        batches.append(time.perf_counter_ns() - t)
    return Latency(
        rows_timed=len(rows),
        per_row_p50_us=_percentile_us(rows, 50),
        per_row_p99_us=_percentile_us(rows, 99),
        batch_rows=batch_rows,
        batches_timed=len(batches),
        per_batch_p50_ms=round(_percentile_us(batches, 50) / 1000.0, 3),
        per_batch_p99_ms=round(_percentile_us(batches, 99) / 1000.0, 3),
    )


def _side(y: np.ndarray, pred: np.ndarray, costs: Costs) -> SideCost:
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    return SideCost(
        tp=tp, fp=fp, fn=fn, tn=len(y) - tp - fp - fn, expected_cost_per_1000=costs.per_1000(fn=fn, fp=fp, rows=len(y))
    )


def compare_labelled(
    settings: Settings, *, paths: Paths, ids: list[str], candidate: np.ndarray, served: np.ndarray
) -> Labelled:
    """Both sides' decisions (bool arrays over `ids`) against the true labels the monitor joined."""
    truth = load_labelled(paths)
    label = settings.dataset.label.name
    by_id = dict(zip(truth["request_id"], truth[label].astype(int), strict=True))
    source = f"{paths.labelled_file.name} (the monitor's labelled rows, joined by request_id)"
    return compare_with_truth(
        by_id, costs=Costs.from_config(settings.decision), source=source, ids=ids, candidate=candidate, served=served
    )


def compare_with_truth(
    by_id: dict[str, int], *, costs: Costs, source: str, ids: list[str], candidate: np.ndarray, served: np.ndarray
) -> Labelled:
    """Both sides' decisions (bool arrays over `ids`) against the true labels `by_id` (request_id -> 0/1)."""
    index = np.array([i for i, rid in enumerate(ids) if rid in by_id], dtype=np.int64)
    y = np.array([by_id[ids[i]] for i in index], dtype=np.int64)
    c, s = candidate[index], served[index]
    differ = c != s
    return Labelled(
        rows=len(index),
        positives=int(y.sum()),
        source=source,
        disagreements=int(differ.sum()),
        candidate_catches_failure=int((differ & c & (y == 1)).sum()),
        candidate_false_alarm=int((differ & c & (y == 0)).sum()),
        candidate_misses_failure=int((differ & s & (y == 1)).sum()),
        candidate_avoids_false_alarm=int((differ & s & (y == 0)).sum()),
        costs=costs,
        candidate=_side(y, c, costs),
        served=_side(y, s, costs),
    )


def _window(records: list[PredictionRecord], instances: list[str], skipped: int) -> Window:
    return Window(
        rows=len(records),
        first_time=records[0].time if records else None,
        last_time=records[-1].time if records else None,
        served_versions=dict(sorted(Counter(r.model_version for r in records).items())),
        instances=instances,
        skipped_lines=skipped,
    )


def shadow(
    settings: Settings,
    *,
    paths: Paths,
    model: OnnxModel,
    version: str,
    threshold: float,
    last: int = DEFAULT_LAST,
    latency: bool = True,
) -> ShadowReport:
    """Replay the newest `last` logged predictions through `model` at `threshold`; the comparison."""
    if last <= 0:
        raise DataValidationError(f"shadow window must hold at least one row, got --last {last}")
    records, instances, skipped = recent_records(paths, last)
    window = _window(records, instances, skipped)
    if not records:
        reason = f"no logged traffic: no prediction records in {paths.prediction_log_dir}"
        return ShadowReport(status="no_traffic", reason=reason, version=version, threshold=threshold, window=window)
    ds = settings.dataset
    frame = pd.DataFrame.from_records([r.inputs for r in records])
    missing = [c for c in ds.feature_names if c not in frame.columns]
    if missing:
        raise DataValidationError(f"{paths.prediction_log_dir}: logged inputs lack features {missing}")
    try:
        readings = ds.encode(frame)
    except ValueError as e:
        raise DataValidationError(f"{paths.prediction_log_dir}: logged inputs: {e}") from e
    proba = np.asarray(model.predict_proba(readings), dtype=np.float64)
    candidate = proba >= threshold
    served = np.array([r.label == 1 for r in records], dtype=bool)
    differ = int((candidate != served).sum())
    labelled = compare_labelled(
        settings, paths=paths, ids=[r.request_id for r in records], candidate=candidate, served=served
    )
    timing = measure_latency(model, readings, batch_rows=settings.deployment.max_batch_rows) if latency else None
    return ShadowReport(
        status="ok",
        reason=(
            f"{version} at threshold {threshold} agrees with the served labels on {len(records) - differ} of "
            f"{len(records)} logged rows; {labelled.rows} of them labelled"
        ),
        version=version,
        threshold=threshold,
        window=window,
        agreement=round(1.0 - differ / len(records), 6),
        disagreements=differ,
        candidate_flags=int(candidate.sum()),
        served_flags=int(served.sum()),
        labelled=labelled,
        latency=timing,
    )


def serving_threshold(settings: Settings, metadata: dict[str, Any]) -> float:
    """The threshold a model serves with: deployment.threshold when set, else the model's own."""
    fixed = settings.deployment.threshold
    return float(fixed) if fixed is not None else model_threshold(metadata)


def shadow_version(settings: Settings, version: str, *, last: int = DEFAULT_LAST) -> ShadowReport:
    """Shadow evaluation of registered `version` (NotFoundError if there is none, ModelLoadError if damaged)."""
    paths = Paths.from_settings(settings)
    model, md = Registry(paths=paths).load_model(version)
    return shadow(
        settings, paths=paths, model=model, version=version, threshold=serving_threshold(settings, md), last=last
    )
