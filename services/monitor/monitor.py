"""The monitor: one cycle reads the new log records, measures, reports and, if needed, asks for a retrain.

A cycle (under an exclusive lock: one monitor per volume):
1. cut the labelled file back to the committed length (an interrupted cycle), load the state;
2. ingest the new prediction and feedback lines in bounded, committed steps (services.monitor.ingest);
3. per model version, production metrics on its window of labelled rows against the training metrics
   in its metadata.json; drift of the recent inputs against the serving version's training data;
4. write the JSON report, consider the retrain trigger, write the final JSON and the HTML report;
5. save the state (history, last trigger).
`run_loop` repeats cycles every `monitoring.interval_s` until SIGTERM/SIGINT.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import redis

from services.monitor import report as report_mod
from services.monitor.drift import drift_report
from services.monitor.ingest import Ingestor, recover_labelled
from services.monitor.performance import version_performance
from services.monitor.state import MonitorState, load_state, save_state
from services.monitor.trigger import Trigger
from shared.config import Settings
from shared.datastore import DataStore
from shared.errors import ClockworkError, MonitorBusyError
from shared.features import NUMERIC_FEATURES, RAW_COLUMNS
from shared.paths import Paths, version_number
from shared.pin import pinned_version
from shared.registry import Registry
from shared.schemas import utc_now

log = logging.getLogger(__name__)

HISTORY_LEN = 500
INPUT_COLUMNS = ["time", "model_version"] + RAW_COLUMNS


@contextmanager
def monitor_lock(paths: Paths) -> Iterator[None]:
    """Exclusive, non-blocking: a second monitor on the same volume stops with a clear error."""
    lock_path = Path(f"{paths.monitor_state}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MonitorBusyError(
                f"another monitor is running on {paths.monitor_state} (lock {lock_path} is held)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class Monitor:
    def __init__(self, *, settings: Settings, redis_client: redis.Redis | None, paths: Paths | None = None) -> None:
        self.settings = settings
        self.paths = paths or Paths.from_settings(settings)
        mon = settings.monitoring
        self.drift_window = max(mon.window_size, mon.drift_min_samples)
        self.ingestor = Ingestor(
            paths=self.paths,
            window_size=mon.window_size,
            drift_window=self.drift_window,
            max_pending=mon.max_pending,
            max_orphans=mon.max_orphans,
        )
        self.trigger = Trigger(settings=settings, redis_client=redis_client)
        self.registry = Registry(paths=self.paths)
        self.store = DataStore(paths=self.paths)
        self._references: dict[tuple[str, str], pd.DataFrame] = {}

    # --- one cycle ---------------------------------------------------------------------------
    def cycle(self, *, quiet_reports: bool = False) -> dict:
        """One cycle; returns the report. With `quiet_reports` (the loop), a cycle that read nothing new and
        sent nothing only refreshes latest.json: no per-cycle files, no history point, no HTML."""
        with monitor_lock(self.paths):
            state = load_state(self.paths.monitor_state)
            recover_labelled(self.paths, state)
            t0 = time.perf_counter()
            counts = self.ingestor.run(state)
            read_s = time.perf_counter() - t0
            report, reference, production = self.measure(state)
            report["ingest"] = {
                "new_predictions": counts.predictions,
                "new_feedback": counts.feedback,
                "new_labelled": counts.labelled,
                "malformed": counts.malformed,
                "malformed_lines": counts.malformed_lines,
                "pending_predictions": len(state.pending),
                "orphan_labels": len(state.orphans),
                "labelled_total": state.labelled["rows"],
                "read_seconds": round(read_s, 3),
                "unread_bytes": self.ingestor.backlog_bytes(state),
            }
            quiet = quiet_reports and counts.lines == 0
            json_path, html_path = report_mod.report_paths(self.paths, report["created_at"])
            report["paths"] = {"json": self._rel(json_path), "html": self._rel(html_path)}
            if not quiet:
                report["trigger"] = {"status": "pending"}
                report_mod.write_json(self.paths, report, json_path)
            result = self.trigger.consider(
                fired=report["fired"],
                evidence=self.evidence(report),
                reason=self.reason(report),
                serving_version=report["serving_version"],
                state_last=state.last_trigger,
            )
            record = result.pop("record", None)
            if record:
                state.last_trigger = record
            report["trigger"] = result
            if quiet and not record:
                report["paths"] = {"json": self._rel(self.paths.reports_dir / report_mod.LATEST_JSON), "html": None}
                report_mod.write_latest_json(self.paths, report)
            else:
                report_mod.write_json(self.paths, report, json_path)
                state.history.append(history_entry(report))
                del state.history[:-HISTORY_LEN]
                report_mod.write_html(
                    self.paths, report, html_path, history=state.history, reference=reference, production=production
                )
                report_mod.prune(self.paths, keep=self.settings.monitoring.keep_reports)
            state.cycles += 1
            state.updated_at = report["created_at"]
            save_state(self.paths.monitor_state, state)
            log.info(
                "cycle %d: %d prediction(s), %d label(s), %d joined; serving %s; fired %s; trigger %s; report %s",
                state.cycles,
                counts.predictions,
                counts.feedback,
                counts.labelled,
                report["serving_version"],
                report["fired"] or "nothing",
                result["status"],
                report["paths"]["html"] or report["paths"]["json"],
            )
            return report

    def measure(self, state: MonitorState) -> tuple[dict, pd.DataFrame | None, pd.DataFrame | None]:
        now = utc_now()
        pinned = self.pinned_version()
        serving = self.serving_version(state) or pinned
        performance = {}
        for version in sorted(set(state.windows) | set(state.counts), key=_version_key):
            pending = sum(1 for row in state.pending.values() if row[1] == version)
            performance[version] = version_performance(
                version=version,
                rows=state.windows.get(version, []),
                counts=state.counts.get(version, {}),
                pending=pending,
                training=self.training_metrics(version),
                settings=self.settings,
            )
        production = inputs_frame(state.recent_inputs)
        reference, ref_info = self.reference(serving)
        if reference is None:
            drift = {
                "status": "no_reference",
                "reason": ref_info.get("error"),
                "features": {},
                "flagged": [],
                "n_reference": 0,
                "n_production": len(production),
            }
        else:
            drift = drift_report(
                reference,
                production,
                thresholds=self.settings.monitoring.thresholds,
                min_samples=self.settings.monitoring.drift_min_samples,
            )
        drift["reference"] = ref_info
        drift["window"] = {
            "rows": len(production),
            "size": self.drift_window,
            "first_time": production["time"].min() if len(production) else None,
            "last_time": production["time"].max() if len(production) else None,
        }
        checks = []
        serving_perf = performance.get(serving)
        if serving_perf:
            for name, c in serving_perf["checks"].items():
                checks.append({"name": f"performance:{name}", "version": serving, **c})
        for name, f in drift["features"].items():
            eff = f["effect_size"]
            checks.append(
                {
                    "name": f"drift:{name}",
                    "version": serving,
                    "fired": f["flagged"],
                    "test": f["test"],
                    "statistic": f["statistic"],
                    "p_value": f["p_value"],
                    "effect_size": eff,
                    "n_reference": f["n_reference"],
                    "n_production": f["n_production"],
                    "thresholds": f["thresholds"],
                }
            )
        report = {
            "report_format": 1,
            "created_at": now,
            "cycle": state.cycles + 1,
            "serving_version": serving,
            "pinned_version": pinned,
            "performance": performance,
            "drift": drift,
            "checks": checks,
            "fired": [c["name"] for c in checks if c["fired"]],
            "settings": {
                "window_size": self.settings.monitoring.window_size,
                "min_labelled": self.settings.monitoring.min_labelled,
                "drift_min_samples": self.settings.monitoring.drift_min_samples,
                "thresholds": self.settings.monitoring.thresholds.model_dump(),
                "cooldown_s": self.settings.monitoring.cooldown_s,
            },
        }
        return report, reference, production

    # --- inputs to a cycle ---------------------------------------------------------------------
    def pinned_version(self) -> str | None:
        try:
            return pinned_version(self.settings)
        except ClockworkError as e:
            log.warning("cannot read the pinned model version: %s", e)
            return None

    @staticmethod
    def serving_version(state: MonitorState) -> str | None:
        """The version that served the most recent prediction read: what production actually runs."""
        if not state.recent_inputs:
            return None
        return max(state.recent_inputs, key=lambda r: r[0])[1]

    def training_metrics(self, version: str) -> dict | None:
        try:
            return self.registry.metadata(version)["metrics"]
        except ClockworkError as e:
            log.warning("no training metrics for %s: %s", version, e)
            return None

    def reference(self, version: str | None) -> tuple[pd.DataFrame | None, dict]:
        """The serving version's training table (checked against the manifest), cached by sha256."""
        info: dict = {"model_version": version}
        if version is None:
            return None, info | {"error": "no model version is serving or pinned"}
        try:
            md = self.registry.metadata(version)
        except ClockworkError as e:
            return None, info | {"error": str(e)}
        files = [f for f in md.get("data_files", []) if f["path"].endswith("/train.csv")]
        rel = files[0]["path"] if files else self.store.rel(self.paths.train_file(md["data_version"]))
        sha = files[0]["sha256"] if files else None
        info |= {"data_version": md["data_version"], "path": rel, "sha256": sha}
        key = (rel, sha or "")
        if key not in self._references:
            try:
                df = self.store.read_table(self.paths.volume / rel)
            except ClockworkError as e:
                return None, info | {"error": str(e)}
            self._references[key] = df
        df = self._references[key]
        info["rows"] = len(df)
        return df, info

    # --- trigger ---------------------------------------------------------------------------
    @staticmethod
    def reason(report: dict) -> str:
        parts = []
        for c in report["checks"]:
            if not c["fired"]:
                continue
            if c["name"].startswith("performance:"):
                parts.append(
                    f"{c['metric']} {c['production']:.3f} vs training {c['training']:.3f} (limit {c['limit']:.3f})"
                )
            else:
                eff = c["effect_size"]
                size = f"PSI {eff['psi']:.3f}" if "psi" in eff else f"Cramer's V {eff['cramers_v']:.3f}"
                parts.append(f"drift in {c['name'].split(':', 1)[1]} ({size}, p {c['p_value']:.2e})")
        return f"monitor: {report['serving_version']}: " + "; ".join(parts)

    @staticmethod
    def evidence(report: dict) -> dict:
        perf = (report["performance"] or {}).get(report["serving_version"]) or {}
        return {
            "source": "services.monitor",
            "serving_version": report["serving_version"],
            "checks": [c for c in report["checks"] if c["fired"]],
            "report": report["paths"]["json"],
            "report_html": report["paths"]["html"],
            "window": {
                "labelled": perf.get("window"),
                "drift": report["drift"].get("window"),
                "reference": {k: v for k, v in report["drift"]["reference"].items() if k != "error"},
            },
            "created_at": report["created_at"],
        }

    def _rel(self, path: Path) -> str:
        return self.store.rel(path)


def inputs_frame(rows: list[list]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=INPUT_COLUMNS)
    for col in NUMERIC_FEATURES:
        df[col] = df[col].astype(float)
    return df.sort_values("time", kind="stable").reset_index(drop=True)


def history_entry(report: dict) -> dict:
    """One line of metrics over time: per version F1 / error rate, per feature drift effect size."""
    drift = {}
    for name, f in (report.get("drift") or {}).get("features", {}).items():
        drift[name] = {k: f["effect_size"].get(k) for k in ("psi", "cramers_v") if k in f["effect_size"]} | {
            "flagged": f["flagged"]
        }
    return {
        "time": report["created_at"],
        "serving_version": report["serving_version"],
        "versions": {
            v: {
                "f1": p["production"]["f1"],
                "error_rate": p["production"]["error_rate"],
                "rows": p["window"]["rows"],
                "training_f1": (p["training"] or {}).get("f1"),
                "training_error_rate": (p["training"] or {}).get("error_rate"),
            }
            for v, p in (report.get("performance") or {}).items()
        },
        "drift": drift,
        "fired": report["fired"],
        "trigger": (report.get("trigger") or {}).get("status"),
    }


def _version_key(v: str) -> int:
    try:
        return version_number(v)
    except (ValueError, IndexError):
        return -1


def run_loop(
    monitor: Monitor, *, interval_s: float, stop: threading.Event | None = None, max_cycles: int | None = None
) -> int:
    """Cycles every `interval_s` until `stop` is set (main() sets it on SIGTERM/SIGINT; the current cycle
    finishes) or `max_cycles` cycles ran. Returns the number of cycles."""
    stop = stop or threading.Event()
    cycles = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            monitor.cycle(quiet_reports=True)
        except MonitorBusyError:
            raise
        except ClockworkError as e:
            log.error("monitor cycle failed: %s", e)
        cycles += 1
        if max_cycles is not None and cycles >= max_cycles:
            break
        stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
    log.info("monitor stopped after %d cycle(s) (pid %d)", cycles, os.getpid())
    return cycles
