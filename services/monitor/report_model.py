"""The monitor's report, typed: what one cycle read, measured, decided and wrote.

`MonitorReport` is the schema of the JSON reports on the volume (reports/report-*.json and latest.json):
each is `MonitorReport.model_dump(mode="json")`, and `MonitorReport.model_validate_json` reads one back
unchanged. `schema_version` 2 is the first typed one (version 1 reports carried `report_format: 1` and are
not read back). The state file's metrics over time (`HistoryEntry`) and last retrain message
(`TriggerRecord`) are typed here too; the parts a cycle measures are typed where they are measured
(services.monitor.performance.VersionPerformance, services.monitor.drift.DriftReport), what was done about it
where it is read (services.monitor.actions.ActionsReport). Models only:
nothing here touches the volume or Redis.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.monitor.actions import ActionsReport
from services.monitor.drift import DriftReport, ReferenceInfo
from services.monitor.estimate import VersionEstimate
from services.monitor.performance import PerformanceCheck, VersionPerformance
from services.monitor.rows import Window
from shared.config import DriftTestConfig, Thresholds

SCHEMA_VERSION: Literal[2] = 2
MONITOR_SOURCE = "services.monitor"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- checks (the report's flat list; the retrain message's evidence) ----------------------------
class PerformanceCheckEntry(PerformanceCheck):
    kind: Literal["performance"] = "performance"
    name: str  # performance:<metric>
    version: str | None


class DriftCheckEntry(_Model):
    kind: Literal["drift"] = "drift"
    name: str  # drift:<feature>
    version: str | None
    fired: bool
    test: str
    statistic: float | None
    p_value: float | None
    p_adjusted: float | None = None  # after the correction across features (monitoring.drift)
    effect_size: dict[str, float | None]
    n_reference: int
    n_production: int
    thresholds: dict[str, float]


CheckEntry = Annotated[PerformanceCheckEntry | DriftCheckEntry, Field(discriminator="kind")]


# --- ingest, paths, trigger ------------------------------------------------------------------------
class MalformedLine(_Model):
    file: str  # relative to the volume
    line: int
    offset: int  # byte offset of the line's start
    reason: str


class IngestSummary(_Model):
    new_predictions: int
    new_feedback: int
    new_labelled: int
    malformed: int
    malformed_lines: list[MalformedLine]
    pending_predictions: int
    orphan_labels: int
    labelled_total: int
    read_seconds: float
    unread_bytes: int


class ReportPaths(_Model):
    """Where this report was written, relative to the volume (html None: only latest.json was refreshed)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    json_file: str = Field(alias="json")
    html_file: str | None = Field(alias="html")


class TriggerRecord(_Model):
    """The last retrain message sent (state file and Redis cooldown key): what the cooldown compares with."""

    message_id: str
    time: str
    checks: list[str]
    serving_version: str | None
    queue: str | None = None
    lines_read: int | None = None  # prediction + feedback lines the monitor had read when it sent


class TriggerResult(_Model):
    """What the retrain trigger did this cycle (pending: the report is written before it decides)."""

    status: Literal["pending", "none", "suppressed", "sent", "error"]
    reason: str | None = None
    message_id: str | None = None
    queue: str | None = None
    last_message_id: str | None = None


class EvidenceWindow(_Model):
    labelled: Window | None
    drift: Window | None
    reference: ReferenceInfo | None


class Evidence(_Model):
    """The evidence a retrain message carries (RetrainMessage.evidence is its JSON)."""

    source: str = MONITOR_SOURCE
    serving_version: str | None
    checks: list[CheckEntry]
    report: str | None
    report_html: str | None
    window: EvidenceWindow
    created_at: str


# --- the report ----------------------------------------------------------------------------------
class ReportSettings(_Model):
    window_size: int
    min_labelled: int
    drift_min_samples: int
    thresholds: Thresholds
    drift: DriftTestConfig | None = None
    cooldown_s: float


class VersionPoint(_Model):
    f1: float | None
    error_rate: float | None
    rows: int
    training_f1: float | None
    training_error_rate: float | None


class DriftPoint(_Model):
    psi: float | None = None
    cramers_v: float | None = None
    flagged: bool


class HistoryEntry(_Model):
    """One point of metrics over time (the state file keeps the last ones; the HTML plots them)."""

    time: str
    serving_version: str | None
    versions: dict[str, VersionPoint]
    drift: dict[str, DriftPoint]
    fired: list[str]
    trigger: str | None
    message_id: str | None = None  # the retrain message sent this cycle


class MonitorReport(_Model):
    schema_version: Literal[2] = SCHEMA_VERSION
    created_at: str
    cycle: int
    serving_version: str | None
    pinned_version: str | None
    performance: dict[str, VersionPerformance]
    drift: DriftReport
    checks: list[CheckEntry]
    fired: list[str]
    settings: ReportSettings
    ingest: IngestSummary | None = None
    paths: ReportPaths | None = None
    trigger: TriggerResult | None = None
    actions: ActionsReport | None = None  # what was done: message -> job -> candidate -> gate -> pin -> swap
    # per model version: label-free estimate on waiting predictions, and on labelled rows beside the realized figures
    estimate: dict[str, VersionEstimate] = Field(default_factory=dict)

    def history_entry(self) -> HistoryEntry:
        """Per version F1 / error rate, per feature drift effect size, what fired and what the trigger did."""
        return HistoryEntry(
            time=self.created_at,
            serving_version=self.serving_version,
            versions={
                v: VersionPoint(
                    f1=p.production.f1,
                    error_rate=p.production.error_rate,
                    rows=p.window.rows,
                    training_f1=p.training.f1 if p.training else None,
                    training_error_rate=p.training.error_rate if p.training else None,
                )
                for v, p in self.performance.items()
            },
            drift={
                name: DriftPoint(
                    psi=f.effect_size.get("psi"), cramers_v=f.effect_size.get("cramers_v"), flagged=f.flagged
                )
                for name, f in self.drift.features.items()
            },
            fired=list(self.fired),
            trigger=self.trigger.status if self.trigger else None,
            message_id=self.trigger.message_id if self.trigger and self.trigger.status == "sent" else None,
        )
