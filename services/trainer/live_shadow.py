"""Live shadow summary: what the live shadow (deployment.shadow_version) answered beside the served model.

Inference writes the shadow's probability and label (at the threshold it would serve with) into each prediction
line as `shadow` (shared.schemas.ShadowScore). This reads them back: the newest `last` prediction records across
the instances' logs (services.trainer.shadow.recent_records: each log read backwards, a block at a time), keeps
those the shadow `version` scored, and reports agreement with the served labels, how far the probabilities are
apart, and, on the rows whose true outcome came back through POST /feedback, the disagreements by who was right
and each side's confusion counts and expected cost (services.trainer.shadow.compare_with_truth, decision.costs).
The true labels come from the feedback logs (`<feedback_log_dir>/<instance>.jsonl`, every instance's), read
backwards only as far as the window's first prediction time: a label arrives after its prediction, so nothing
older can belong to the window. A request labelled twice keeps its latest label. Malformed feedback lines are
skipped and counted.

Unlike `shadow vN` (the offline replay), nothing is scored again: the figures are what the shadow answered live,
on the same readings at the same moments, so they hold only for the traffic it saw. Callers: `python -m
services.trainer shadow vN --live`. Nothing is written.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Literal

import numpy as np
from pydantic import ValidationError

from services.trainer.decision import Costs
from services.trainer.shadow import (
    BLOCK,
    DEFAULT_LAST,
    Labelled,
    Window,
    _Strict,
    _window,
    compare_with_truth,
    recent_records,
)
from shared.config import Settings
from shared.errors import DataValidationError
from shared.paths import LOG_SUFFIX, Paths
from shared.schemas import FeedbackRecord, PredictionRecord


class LiveShadowReport(_Strict):
    status: Literal["ok", "no_shadow"]
    reason: str
    version: str
    window: Window  # the newest `last` prediction records, shadowed or not
    shadowed_rows: int  # rows of the window that `version` scored live
    other_shadows: dict[str, int]  # rows of the window another shadow version scored
    shadow_thresholds: list[float]  # the thresholds its logged labels used (one unless config changed)
    agreement: float | None = None  # share of the shadowed rows where both labels agree
    disagreements: int | None = None
    shadow_flags: int | None = None  # shadowed rows the shadow labels 1
    served_flags: int | None = None
    mean_abs_probability_difference: float | None = None
    feedback_lines_read: int = 0
    feedback_skipped_lines: int = 0
    labelled: Labelled | None = None  # `candidate` is the shadow


def _lines_backwards_until(path: os.PathLike, first_time: str) -> tuple[list[bytes], int]:
    """The complete lines of `path` from the end back to (at least) the first one whose time is before
    `first_time`, oldest first, and the bytes read. Lines are `"time":"..."`-last JSON (sorted keys)."""
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        buf = b""
        while pos > 0:
            step = min(BLOCK, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            first = buf.find(b"\n")  # what comes before it may be the end of an older line
            second = buf.find(b"\n", first + 1) if first >= 0 else -1
            if second >= 0 and _time_of(buf[first + 1 : second]) < first_time:
                break
    cut = buf.rfind(b"\n")
    lines = buf[: cut + 1].splitlines() if cut >= 0 else []
    if pos > 0:
        lines = lines[1:]  # the first piece may be the end of an older line
    return lines, len(buf)


def _time_of(line: bytes) -> str:
    i = line.rfind(b'"time":"')
    return line[i + 8 : i + 35].decode("ascii", "replace") if i >= 0 else ""


def labels_since(paths: Paths, first_time: str) -> tuple[dict[str, int], int, int]:
    """request_id -> label from every feedback log, of the lines at or after `first_time` (the latest label of a
    request wins); the lines read and the malformed ones skipped."""
    folder = paths.feedback_log_dir
    records: list[FeedbackRecord] = []
    read = skipped = 0
    for path in sorted(folder.glob(f"*{LOG_SUFFIX}")) if folder.is_dir() else []:
        lines, _ = _lines_backwards_until(path, first_time)
        read += len(lines)
        for line in lines:
            try:
                records.append(FeedbackRecord.model_validate_json(line))
            except ValidationError:
                skipped += 1
    records.sort(key=lambda r: r.time)
    return {r.request_id: r.label for r in records if r.time >= first_time}, read, skipped


def live_shadow(settings: Settings, version: str, *, last: int = DEFAULT_LAST) -> LiveShadowReport:
    """The live shadow `version`'s logged answers in the newest `last` records, against the served ones."""
    if last <= 0:
        raise DataValidationError(f"shadow window must hold at least one row, got --last {last}")
    paths = Paths.from_settings(settings)
    records, instances, skipped = recent_records(paths, last)
    window = _window(records, instances, skipped)
    mine: list[PredictionRecord] = [r for r in records if r.shadow is not None and r.shadow.model_version == version]
    others = Counter(r.shadow.model_version for r in records if r.shadow and r.shadow.model_version != version)
    empty = LiveShadowReport(
        status="no_shadow",
        reason=(
            f"no live shadow answers of {version} in the newest {window.rows} prediction records of "
            f"{paths.prediction_log_dir} (deployment.shadow_version names the live shadow)"
        ),
        version=version,
        window=window,
        shadowed_rows=len(mine),
        other_shadows=dict(sorted(others.items())),
        shadow_thresholds=sorted({r.shadow.threshold for r in mine if r.shadow is not None}),
    )
    if not mine:
        return empty
    shadow_p = np.array([r.shadow.probability for r in mine if r.shadow is not None], dtype=np.float64)
    shadow_y = np.array([r.shadow.label == 1 for r in mine if r.shadow is not None], dtype=bool)
    served_p = np.array([r.probability for r in mine], dtype=np.float64)
    served_y = np.array([r.label == 1 for r in mine], dtype=bool)
    differ = int((shadow_y != served_y).sum())
    by_id, read, bad = labels_since(paths, mine[0].time)
    source = f"{paths.feedback_log_dir} (POST /feedback labels, joined by request_id)"
    labelled = compare_with_truth(
        by_id,
        costs=Costs.from_config(settings.decision),
        source=source,
        ids=[r.request_id for r in mine],
        candidate=shadow_y,
        served=served_y,
    )
    return empty.model_copy(
        update={
            "status": "ok",
            "reason": (
                f"live shadow {version} agrees with the served labels on {len(mine) - differ} of {len(mine)} rows "
                f"it scored; {labelled.rows} of them labelled"
            ),
            "agreement": round(1.0 - differ / len(mine), 6),
            "disagreements": differ,
            "shadow_flags": int(shadow_y.sum()),
            "served_flags": int(served_y.sum()),
            "mean_abs_probability_difference": round(float(np.abs(shadow_p - served_p).mean()), 6),
            "feedback_lines_read": read,
            "feedback_skipped_lines": bad,
            "labelled": labelled,
        }
    )
