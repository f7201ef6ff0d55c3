"""The retrain trigger: one message per condition, with its evidence.

A condition is the set of checks that fired on the serving model version (e.g. {"drift:<a numeric feature>",
"performance:f1"}). A message is sent when checks fire, unless the last trigger was for the same serving
version, less than `monitoring.cooldown_s` ago, and covered every check firing now (no new check).
So a persisting condition sends one message; after the cooldown, or once a new model version serves,
or when a new check fires, it sends again. Nothing read since the last message (an idle loop: the same window,
the same checks) never sends again, whatever the cooldown: the record keeps how many log lines the monitor had
read when it sent (`lines_read`), and the same evidence is not sent twice.

The last trigger (TriggerRecord) is kept both in Redis (RedisKeys.monitor_cooldown) and in the monitor's
state file. The message goes through shared.queue.RetrainQueue.push, the one producer path (it records the
job as "queued"), with the cooldown record in the same MULTI/EXEC transaction, so a crash cannot push a
message without its cooldown; losing either copy alone does not cause a second message.
"""

from __future__ import annotations

import hashlib
import json
import logging

import redis
from pydantic import ValidationError

from services.monitor.report_model import (
    Evidence,
    EvidenceWindow,
    MonitorReport,
    PerformanceCheckEntry,
    TriggerRecord,
    TriggerResult,
)
from shared.config import Settings
from shared.errors import explain
from shared.paths import RedisKeys
from shared.queue import RetrainQueue
from shared.schemas import RetrainMessage, parse_utc, utc_now

log = logging.getLogger(__name__)


def suppression(
    *,
    fired: list[str],
    serving_version: str | None,
    last: TriggerRecord | None,
    now: str,
    cooldown_s: float,
    lines_read: int | None = None,
) -> str | None:
    """Why no message should be sent now (None: send). Pure: the decision, testable on its own."""
    if not fired:
        return "no check fired"
    if not last:
        return None
    if last.serving_version != serving_version:
        return None
    age = (parse_utc(now) - parse_utc(last.time)).total_seconds()
    if lines_read is not None and last.lines_read == lines_read and not set(fired) - set(last.checks):
        return f"nothing read since message {last.message_id} ({age:.0f} s ago): the same window, the same checks"
    if age >= cooldown_s:
        return None
    new = sorted(set(fired) - set(last.checks))
    if new:
        return None
    return (
        f"same condition as message {last.message_id} sent {age:.0f} s ago for {serving_version} "
        f"(cooldown {cooldown_s:.0f} s)"
    )


def latest_trigger(*records: TriggerRecord | None) -> TriggerRecord | None:
    found = [r for r in records if r]
    return max(found, key=lambda r: parse_utc(r.time)) if found else None


def message_id(now: str, fired: list[str], serving_version: str | None) -> str:
    digest = hashlib.sha256(json.dumps([sorted(fired), serving_version]).encode()).hexdigest()[:8]
    stamp = now.replace("-", "").replace(":", "").replace(".", "")
    return f"monitor-{stamp}-{digest}"


def reason(report: MonitorReport) -> str:
    """One line naming what fired, with its figures: the retrain message's reason."""
    parts = []
    for c in report.checks:
        if not c.fired:
            continue
        if isinstance(c, PerformanceCheckEntry):
            parts.append(f"{c.metric} {_f3(c.production)} vs training {_f3(c.training)} (limit {_f3(c.limit)})")
        else:
            eff = c.effect_size
            size = f"PSI {_f3(eff['psi'])}" if "psi" in eff else f"Cramer's V {_f3(eff.get('cramers_v'))}"
            p = c.p_adjusted if c.p_adjusted is not None else c.p_value
            p_value = f"{p:.2e}" if p is not None else "-"
            parts.append(f"drift in {c.name.split(':', 1)[1]} ({size}, adjusted p {p_value})")
    return f"monitor: {report.serving_version}: " + "; ".join(parts)


def evidence(report: MonitorReport) -> Evidence:
    """What the message carries: the fired checks with their figures, the report's paths, the windows."""
    perf = report.performance.get(report.serving_version) if report.serving_version else None
    reference = report.drift.reference.model_copy(update={"error": None}) if report.drift.reference else None
    return Evidence(
        serving_version=report.serving_version,
        checks=[c for c in report.checks if c.fired],
        report=report.paths.json_file if report.paths else None,
        report_html=report.paths.html_file if report.paths else None,
        window=EvidenceWindow(labelled=perf.window if perf else None, drift=report.drift.window, reference=reference),
        created_at=report.created_at,
    )


def _f3(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


class Trigger:
    def __init__(self, *, settings: Settings, redis_client: redis.Redis | None) -> None:
        self.settings = settings
        self.redis = redis_client
        self.keys = RedisKeys.from_settings(settings)
        self.queue = None if redis_client is None else RetrainQueue.from_settings(settings, redis=redis_client)

    def last_in_redis(self) -> TriggerRecord | None:
        if self.redis is None:
            return None
        raw = self.redis.get(self.keys.monitor_cooldown)
        if raw is None:
            return None
        try:
            return TriggerRecord.model_validate_json(raw)
        except ValidationError as e:
            log.warning(
                "ignoring unreadable cooldown record at %s (%s): %r", self.keys.monitor_cooldown, explain(e), raw[:200]
            )
            return None

    def consider(
        self,
        report: MonitorReport,
        *,
        state_last: TriggerRecord | None,
        now: str | None = None,
        lines_read: int | None = None,
    ) -> tuple[TriggerResult, TriggerRecord | None]:
        """Send or suppress for what fired in `report`. Returns what happened and, when a message was sent,
        its record (the caller stores it in the state file). `lines_read`: the log lines the monitor has read
        in all (None: unknown, the cooldown alone decides)."""
        now = now or utc_now()
        fired, serving_version = report.fired, report.serving_version
        if not fired:
            return TriggerResult(status="none", reason="no check fired"), None
        try:
            last = latest_trigger(self.last_in_redis(), state_last)
        except redis.RedisError as e:
            log.error("retrain trigger: Redis unavailable (%s); will try again next cycle", e)
            return TriggerResult(status="error", reason=f"redis unavailable: {e}"), None
        why_not = suppression(
            fired=fired,
            serving_version=serving_version,
            last=last,
            now=now,
            cooldown_s=self.settings.monitoring.cooldown_s,
            lines_read=lines_read,
        )
        if why_not:
            idle = lines_read is not None and last is not None and last.lines_read == lines_read
            log.log(logging.DEBUG if idle else logging.INFO, "retrain trigger suppressed: %s", why_not)
            return TriggerResult(
                status="suppressed", reason=why_not, last_message_id=last.message_id if last else None
            ), None
        if self.queue is None:
            return TriggerResult(status="error", reason="no Redis client"), None
        msg = RetrainMessage(
            id=message_id(now, fired, serving_version),
            reason=reason(report)[:500],
            created_at=now,
            evidence=evidence(report).model_dump(mode="json"),
            include_production=True,
        )
        record = TriggerRecord(
            message_id=msg.id,
            time=now,
            checks=sorted(fired),
            serving_version=serving_version,
            queue=self.keys.retrain_queue,
            lines_read=lines_read,
        )
        try:
            self.queue.push(msg, also_set={self.keys.monitor_cooldown: record.model_dump_json()})
        except redis.RedisError as e:
            log.error("retrain trigger: could not push message %s (%s); will try again next cycle", msg.id, e)
            return TriggerResult(status="error", reason=f"redis unavailable: {e}"), None
        result = TriggerResult(status="sent", message_id=msg.id, queue=self.keys.retrain_queue, reason=msg.reason)
        return result, record
