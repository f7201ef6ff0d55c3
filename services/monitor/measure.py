"""Measure a cycle: per model version, production metrics on its window of labelled rows against the training
metrics in its metadata.json; drift of the recent inputs against the serving version's training data; the
checks, flat, with what fired. Reads the registry and the data store, writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from services.monitor.drift import DriftReport, ReferenceInfo, drift_report
from services.monitor.performance import Metrics, VersionPerformance, training_metrics, version_performance
from services.monitor.report_model import (
    CheckEntry,
    DriftCheckEntry,
    MonitorReport,
    PerformanceCheckEntry,
    ReportSettings,
)
from services.monitor.rows import InputRow, Window, input_columns
from services.monitor.store import Snapshot, VersionCounts
from shared.config import Settings
from shared.dataset import DatasetConfig
from shared.datastore import DataStore
from shared.errors import ClockworkError
from shared.paths import Paths, version_number
from shared.registry import Registry
from shared.schemas import utc_now

log = logging.getLogger(__name__)


class Measurer:
    """Builds a cycle's report (without ingest, paths and trigger) from the store's snapshot; caches training
    tables."""

    def __init__(self, *, settings: Settings, paths: Paths, drift_window: int) -> None:
        self.settings = settings
        self.paths = paths
        self.drift_window = drift_window
        self.registry = Registry(paths=paths)
        self.store = DataStore(paths=paths)
        self._references: dict[tuple[str, str], pd.DataFrame] = {}

    def measure(
        self, state: Snapshot, *, cycle: int, pinned: str | None
    ) -> tuple[MonitorReport, pd.DataFrame | None, pd.DataFrame]:
        """(report, the reference table or None, the production inputs frame)."""
        now = utc_now()
        mon = self.settings.monitoring
        serving = serving_version(state) or pinned
        performance: dict[str, VersionPerformance] = {}
        for version in sorted(set(state.windows) | set(state.counts), key=_version_key):
            performance[version] = version_performance(
                version=version,
                rows=state.windows.get(version, []),
                counts=state.counts.get(version, VersionCounts()),
                pending=state.pending_by_version.get(version, 0),
                training=self.training_metrics(version),
                settings=self.settings,
            )
        dataset = self.settings.dataset
        production = inputs_frame(state.recent_inputs, dataset)
        reference, ref_info = self.reference(serving)
        if reference is None:
            drift = DriftReport(
                status="no_reference", reason=ref_info.error, n_reference=0, n_production=len(production)
            )
        else:
            drift = drift_report(
                reference,
                production,
                dataset=dataset,
                thresholds=mon.thresholds,
                tests=mon.drift,
                min_samples=mon.drift_min_samples,
            )
        drift.reference = ref_info
        drift.window = Window(
            rows=len(production),
            size=self.drift_window,
            first_time=production["time"].min() if len(production) else None,
            last_time=production["time"].max() if len(production) else None,
        )
        checks = report_checks(performance.get(serving) if serving else None, drift, serving)
        report = MonitorReport(
            created_at=now,
            cycle=cycle,
            serving_version=serving,
            pinned_version=pinned,
            performance=performance,
            drift=drift,
            checks=checks,
            fired=[c.name for c in checks if c.fired],
            settings=ReportSettings(
                window_size=mon.window_size,
                min_labelled=mon.min_labelled,
                drift_min_samples=mon.drift_min_samples,
                thresholds=mon.thresholds,
                drift=mon.drift,
                cooldown_s=mon.cooldown_s,
            ),
        )
        return report, reference, production

    def training_metrics(self, version: str) -> Metrics | None:
        try:
            return training_metrics(self.registry.metadata(version)["metrics"])
        except ClockworkError as e:
            log.warning("no training metrics for %s: %s", version, e)
            return None

    def reference(self, version: str | None) -> tuple[pd.DataFrame | None, ReferenceInfo]:
        """The serving version's training table (checked against the manifest), cached by sha256."""
        info = ReferenceInfo(model_version=version)
        if version is None:
            info.error = "no model version is serving or pinned"
            return None, info
        try:
            md = self.registry.metadata(version)
        except ClockworkError as e:
            info.error = str(e)
            return None, info
        files = [f for f in md.get("data_files", []) if f["path"].endswith("/train.csv")]
        rel = files[0]["path"] if files else self.store.rel(self.paths.train_file(md["data_version"]))
        sha = files[0]["sha256"] if files else None
        info.data_version, info.path, info.sha256 = md["data_version"], rel, sha
        key = (rel, sha or "")
        if key not in self._references:
            try:
                df = self.store.read_table(self.paths.volume / rel)
            except ClockworkError as e:
                info.error = str(e)
                return None, info
            self._references[key] = df
        df = self._references[key]
        info.rows = len(df)
        return df, info


def report_checks(perf: VersionPerformance | None, drift: DriftReport, serving: str | None) -> list[CheckEntry]:
    """The serving version's performance checks, then one drift check per feature."""
    checks: list[CheckEntry] = []
    if perf:
        for name, c in perf.checks.items():
            checks.append(PerformanceCheckEntry(name=f"performance:{name}", version=serving, **c.model_dump()))
    for name, f in drift.features.items():
        checks.append(
            DriftCheckEntry(
                name=f"drift:{name}",
                version=serving,
                fired=f.flagged,
                test=f.test,
                statistic=f.statistic,
                p_value=f.p_value,
                p_adjusted=f.p_adjusted,
                effect_size=f.effect_size,
                n_reference=f.n_reference,
                n_production=f.n_production,
                thresholds=f.thresholds,
            )
        )
    return checks


def serving_version(state: Snapshot) -> str | None:
    """The version that served the most recent prediction read: what production actually runs."""
    if not state.recent_inputs:
        return None
    return max(state.recent_inputs, key=lambda r: r.time).model_version


def inputs_frame(rows: Sequence[InputRow], dataset: DatasetConfig) -> pd.DataFrame:
    """The drift window as a table: time, model_version and one column per feature (numeric ones as float)."""
    df = pd.DataFrame([(r.time, r.model_version, *r.values) for r in rows], columns=input_columns(dataset))
    for c in dataset.numeric:
        df[c.name] = df[c.name].astype(float)
    return df.sort_values("time", kind="stable").reset_index(drop=True)


def _version_key(v: str) -> int:
    try:
        return version_number(v)
    except (ValueError, IndexError):
        return -1
