"""Reports on the volume: one JSON and one HTML file per cycle, plus latest.json / latest.html.

The JSON file is `MonitorReport.model_dump(mode="json")` (services.monitor.report_model: the schema);
`read_report` loads one back. The HTML page (services.monitor.report_html, plots in
services.monitor.plots) is rendered from the same typed report. Every file is written atomically; a
crash leaves the previous latest.* in place.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from services.monitor.actions import ActionsReport
from services.monitor.report_html import render_html
from services.monitor.report_model import HistoryEntry, MonitorReport
from shared.atomic import atomic_write_text
from shared.paths import Paths

LATEST_JSON = "latest.json"
LATEST_HTML = "latest.html"


def report_stem(created_at: str) -> str:
    """2026-01-02T03:04:05.123456Z -> report-20260102T030405123456Z (sorts by time)."""
    return "report-" + created_at.replace("-", "").replace(":", "").replace(".", "")


def report_paths(paths: Paths, created_at: str) -> tuple[Path, Path]:
    stem = report_stem(created_at)
    return paths.reports_dir / f"{stem}.json", paths.reports_dir / f"{stem}.html"


def report_text(report: MonitorReport) -> str:
    """The JSON file's text: `report.model_dump(mode="json")`, indented; NaN or infinity is refused."""
    return json.dumps(report.model_dump(mode="json"), indent=2, allow_nan=False) + "\n"


def read_report(path: Path) -> MonitorReport:
    """A report written by `write_json`, validated against the model."""
    return MonitorReport.model_validate_json(path.read_bytes())


def write_json(paths: Paths, report: MonitorReport, path: Path) -> None:
    text = report_text(report)
    atomic_write_text(path, text)
    atomic_write_text(paths.reports_dir / LATEST_JSON, text)


def write_latest_json(paths: Paths, report: MonitorReport) -> None:
    atomic_write_text(paths.reports_dir / LATEST_JSON, report_text(report))


def latest_actions(paths: Paths) -> ActionsReport | None:
    """What was done, as latest.json last said (None: no file, or one this version cannot read)."""
    try:
        raw = json.loads((paths.reports_dir / LATEST_JSON).read_bytes()).get("actions")
        return None if raw is None else ActionsReport.model_validate(raw)
    except (OSError, ValueError, AttributeError, ValidationError):
        return None


def write_latest_html(
    paths: Paths,
    report: MonitorReport,
    *,
    history: list[HistoryEntry],
    reference: pd.DataFrame | None,
    production: pd.DataFrame | None,
) -> None:
    page = render_html(report, history=history, reference=reference, production=production)
    atomic_write_text(paths.reports_dir / LATEST_HTML, page)


def write_html(
    paths: Paths,
    report: MonitorReport,
    path: Path,
    *,
    history: list[HistoryEntry],
    reference: pd.DataFrame | None,
    production: pd.DataFrame | None,
) -> None:
    page = render_html(report, history=history, reference=reference, production=production)
    atomic_write_text(path, page)
    atomic_write_text(paths.reports_dir / LATEST_HTML, page)


def prune(paths: Paths, *, keep: int) -> list[Path]:
    """Delete the oldest per-cycle reports beyond the newest `keep` (latest.* always stays)."""
    removed = []
    for suffix in (".json", ".html"):
        cycle_files = sorted(paths.reports_dir.glob(f"report-*{suffix}"))
        for old in cycle_files[: max(0, len(cycle_files) - keep)]:
            old.unlink(missing_ok=True)
            removed.append(old)
    return removed
