"""The monitor: one cycle reads the new log records, measures, reports and, if needed, asks for a retrain.

A cycle (under an exclusive lock: one monitor per volume):
1. load the state file, open the store (services.monitor.store; created, from a format 1/2 state file if there
   is one, on the first cycle), cut the labelled file back to the store's committed length (an interrupted
   cycle);
2. ingest the prediction and feedback lines logged before the cycle began, in bounded, committed steps
   (services.monitor.ingest): the cycle ends whatever the traffic, later lines wait for the next one; then (with
   logs.compact_each_cycle) compact the closed log segments into Parquet (services.monitor.compact);
3. per model version, production metrics on its window of labelled rows against the training metrics
   in its metadata.json; drift of the recent inputs against the serving version's training data
   (services.monitor.measure);
4. write the JSON report (a services.monitor.report_model.MonitorReport), consider the retrain trigger,
   read what was done about earlier messages (services.monitor.actions: message -> job -> candidate -> gate ->
   pin -> swap), write the final JSON and the HTML report;
5. save the state file (history, last trigger).
`run_loop` repeats cycles every `monitoring.interval_s` until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

from services.monitor import report as report_mod
from services.monitor.actions import ActionsReader, SentMessage
from services.monitor.compact import Compactor, CompactSummary
from services.monitor.estimate import version_estimates
from services.monitor.ingest import Ingestor, StepCounts
from services.monitor.measure import Measurer, serving_version
from services.monitor.report_model import IngestSummary, MonitorReport, ReportPaths, TriggerResult
from services.monitor.state import (
    MonitorState,
    check_features,
    load_state,
    recover_labelled,
    save_state,
    seed_store,
)
from services.monitor.store import MonitorStore, Snapshot
from services.monitor.trigger import Trigger
from shared.atomic import lock_path_of, locked
from shared.config import Settings
from shared.errors import ClockworkError, MonitorBusyError
from shared.paths import Paths
from shared.pin import pinned_version

log = logging.getLogger(__name__)

HISTORY_LEN = 500


@contextmanager
def monitor_lock(paths: Paths) -> Iterator[None]:
    """Exclusive, non-blocking: a second monitor on the same volume stops with a clear error."""
    with ExitStack() as held:
        try:
            held.enter_context(locked(paths.monitor_state, blocking=False))
        except BlockingIOError:
            lock = lock_path_of(paths.monitor_state)
            raise MonitorBusyError(
                f"another monitor is running on {paths.monitor_state} (lock {lock} is held)"
            ) from None
        yield


class Monitor:
    def __init__(self, *, settings: Settings, redis_client: redis.Redis | None, paths: Paths | None = None) -> None:
        self.settings = settings
        self.paths = paths or Paths.from_settings(settings)
        mon = settings.monitoring
        self.drift_window = max(mon.window_size, mon.drift_min_samples)
        self.ingestor = Ingestor(
            paths=self.paths,
            dataset=settings.dataset,
            window_size=mon.window_size,
            drift_window=self.drift_window,
            max_pending=mon.max_pending,
            max_orphans=mon.max_orphans,
        )
        self.trigger = Trigger(settings=settings, redis_client=redis_client)
        self.measurer = Measurer(settings=settings, paths=self.paths, drift_window=self.drift_window)
        self.actions = ActionsReader(paths=self.paths, redis_client=redis_client)

    # --- one cycle ---------------------------------------------------------------------------
    def cycle(self, *, quiet_reports: bool = False) -> MonitorReport:
        """One cycle; returns the report. With `quiet_reports` (the loop), a cycle that read nothing new and
        sent nothing only refreshes latest.json (and latest.html when what was done moved on): no per-cycle files,
        no history point."""
        with monitor_lock(self.paths), ExitStack() as stack:
            features = self.settings.dataset.feature_names
            state = load_state(self.paths.monitor_state)
            check_features(self.paths.monitor_state, state, features)
            store = stack.enter_context(
                MonitorStore.open(self.paths.monitor_store, features=features, seed=seed_store(state))
            )
            recover_labelled(self.paths, store.labelled_length()[0])
            t0 = time.perf_counter()
            counts = self.ingestor.run(store)
            read_s = time.perf_counter() - t0
            if self.settings.logs.compact_each_cycle:
                self.compact_logs(store)
            snapshot = store.snapshot()
            report, reference, production = self.measurer.measure(
                snapshot, cycle=state.cycles + 1, pinned=self.pinned_version()
            )
            report.ingest = self.ingest_summary(snapshot, counts, read_s, self.ingestor.backlog_bytes(store))
            drift_fired = [name for name in report.fired if name.startswith("drift:")]
            report.estimate = version_estimates(
                store.conn, snapshot.windows, settings=self.settings, drift_fired=drift_fired
            )
            quiet = quiet_reports and counts.lines == 0
            json_path, html_path = report_mod.report_paths(self.paths, report.created_at)
            report.paths = ReportPaths(json=self._rel(json_path), html=self._rel(html_path))
            if not quiet:
                report.trigger = TriggerResult(status="pending")
                report_mod.write_json(self.paths, report, json_path)
            totals = store.totals()
            lines_read = totals.get("predictions_read", 0) + totals.get("feedback_read", 0)
            result, record = self.trigger.consider(report, state_last=state.last_trigger, lines_read=lines_read)
            if record:
                state.last_trigger = record
            report.trigger = result
            report.actions = self.actions.read(sent_messages(state))
            if quiet and not record:
                # Nothing new read: only latest.json, and latest.html when what was done moved on (a job finished,
                # a swap), so the page does not show a stale chain; no per-cycle files, no history point.
                moved_on = report_mod.latest_actions(self.paths) != report.actions
                latest_html = self.paths.reports_dir / report_mod.LATEST_HTML
                report.paths = ReportPaths(
                    json=self._rel(self.paths.reports_dir / report_mod.LATEST_JSON),
                    html=self._rel(latest_html) if moved_on else None,
                )
                report_mod.write_latest_json(self.paths, report)
                if moved_on:
                    report_mod.write_latest_html(
                        self.paths, report, history=state.history, reference=reference, production=production
                    )
            else:
                report_mod.write_json(self.paths, report, json_path)
                state.history.append(report.history_entry())
                del state.history[:-HISTORY_LEN]
                report_mod.write_html(
                    self.paths, report, html_path, history=state.history, reference=reference, production=production
                )
                report_mod.prune(self.paths, keep=self.settings.monitoring.keep_reports)
            state.cycles += 1
            state.updated_at = report.created_at
            save_state(self.paths.monitor_state, state)
            # An idle cycle that changes nothing (the loop) says so at debug level only: no repeated fired checks.
            level = logging.DEBUG if quiet and not record and result.status in ("none", "suppressed") else logging.INFO
            log.log(
                level,
                "cycle %d: %d prediction(s), %d label(s), %d joined; serving %s; fired %s; trigger %s; report %s",
                state.cycles,
                counts.predictions,
                counts.feedback,
                counts.labelled,
                report.serving_version,
                report.fired or "nothing",
                result.status,
                report.paths.html_file or report.paths.json_file,
            )
            return report

    def compact(self) -> CompactSummary:
        """Compact the closed log segments now (`python -m services.monitor compact`), under the monitor's lock."""
        with monitor_lock(self.paths), ExitStack() as stack:
            features = self.settings.dataset.feature_names
            state = load_state(self.paths.monitor_state)
            store = stack.enter_context(
                MonitorStore.open(self.paths.monitor_store, features=features, seed=seed_store(state))
            )
            return Compactor(settings=self.settings, paths=self.paths).run(store)

    def compact_logs(self, store: MonitorStore) -> None:
        """A cycle's compaction step: a failure is logged and the cycle goes on (the segments wait for the next)."""
        from pyarrow.lib import ArrowException

        try:
            Compactor(settings=self.settings, paths=self.paths).run(store)
        except (ClockworkError, OSError, ArrowException) as e:
            log.error("compaction failed (the segments stay as they are until the next cycle): %s", e)

    @staticmethod
    def ingest_summary(state: Snapshot, counts: StepCounts, read_s: float, unread_bytes: int) -> IngestSummary:
        return IngestSummary(
            new_predictions=counts.predictions,
            new_feedback=counts.feedback,
            new_labelled=counts.labelled,
            malformed=counts.malformed,
            malformed_lines=counts.malformed_lines,
            pending_predictions=state.pending,
            orphan_labels=state.orphans,
            labelled_total=state.labelled_rows,
            read_seconds=round(read_s, 3),
            unread_bytes=unread_bytes,
        )

    # --- inputs to a cycle ---------------------------------------------------------------------
    def pinned_version(self) -> str | None:
        try:
            return pinned_version(self.settings)
        except ClockworkError as e:
            log.warning("cannot read the pinned model version: %s", e)
            return None

    @staticmethod
    def serving_version(state: Snapshot) -> str | None:
        """The version that served the most recent prediction read: what production actually runs."""
        return serving_version(state)

    def _rel(self, path: Path) -> str:
        return self.measurer.store.rel(path)


def sent_messages(state: MonitorState) -> list[SentMessage]:
    """The retrain messages this monitor sent: the history's and the last trigger (which outlives the history)."""
    sent = [
        SentMessage(message_id=h.message_id, time=h.time, checks=h.fired, serving_version=h.serving_version)
        for h in state.history
        if h.message_id
    ]
    last = state.last_trigger
    if last and all(s.message_id != last.message_id for s in sent):
        sent.append(
            SentMessage(
                message_id=last.message_id, time=last.time, checks=last.checks, serving_version=last.serving_version
            )
        )
    return sent


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
