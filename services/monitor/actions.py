"""What was done about what the monitor saw: one chain per retrain message, assembled from files (and Redis).

    retrain message (id, time, the checks that fired, the report that saw them)
    -> job (Redis job hash: status, worker, start and end; absent when Redis is not reachable)
    -> candidate (the registry version whose metadata.json `trigger.message_id` is the message's id)
    -> shadow figures (metadata.json `shadow`) and the gate's decision (metadata.json `gate`, with its interval)
    -> pin change (deployment_log.csv promote / rollback rows naming the candidate)
    -> swaps (deployment_log.csv start / swap / swap_failed rows of the candidate, one per inference instance)

The messages are those the registry's versions name (whoever sent them) and those the monitor knows it sent
(`SentMessage`: its last trigger and the history's), newest first, at most `MAX_CHAINS`. Files alone suffice:
the Redis job hash only adds the job's own status. A source that cannot be read (a damaged deployment log,
an unreadable metadata.json, Redis down) is named in `ActionsReport.problems` and the chains are built
without it. Reads only; the typed result is the report's `actions` (services.monitor.report_model).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field

from shared.deploylog import read_rows
from shared.errors import ClockworkError
from shared.paths import Paths, RedisKeys
from shared.registry import Registry
from shared.schemas import parse_utc

log = logging.getLogger(__name__)

MAX_CHAINS = 10  # the newest chains a report shows

Outcome = Literal[
    "sent",  # no job or model known yet (files only: Redis not asked or not reachable)
    "queued",
    "running",
    "failed",
    "registered",  # a candidate without a gate decision (no labelled window)
    "kept",  # the gate kept the serving model
    "promote pending",  # the gate said promote, the pin did not move (auto_promote false, or not yet)
    "promoted",  # the pin names the candidate, no instance swapped to it yet
    "serving",  # an instance swapped to (or started on) the candidate
    "rolled back",  # the pin went back from the candidate
    "replaced",  # the pin moved on from the candidate to a newer version
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SentMessage(_Model):
    """A retrain message the monitor sent (its state's last trigger, a history point)."""

    message_id: str
    time: str | None = None
    checks: list[str] = Field(default_factory=list)
    serving_version: str | None = None


class MessageStep(_Model):
    message_id: str
    time: str | None
    reason: str | None = None
    checks: list[str] = Field(default_factory=list)
    serving_version: str | None = None
    report: str | None = None  # the monitor's JSON report that fired, relative to the volume


class JobStep(_Model):
    """The job's Redis hash (shared.queue), the fields a reader needs."""

    status: str | None = None
    attempts: int | None = None
    worker: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    reason: str | None = None


class CandidateStep(_Model):
    version: str
    created_at: str | None
    data_version: str | None
    onnx_sha256: str | None


class ShadowStep(_Model):
    status: str | None
    reason: str | None
    rows: int | None = None
    agreement: float | None = None
    disagreements: int | None = None


class GateStep(_Model):
    decision: str
    reason: str | None
    metric: str | None
    margin: float | None
    difference: float | None
    interval_low: float | None
    interval_high: float | None
    confidence: float | None
    window_rows: int | None
    window_positives: int | None
    serving_version: str | None
    decided_at: str | None
    auto_promote: bool | None
    shadow_verdict: str | None = None  # the shadow's part in the decision (gate.shadow): veto, pass, not_enough, off
    shadow_reason: str | None = None


class DeployStep(_Model):
    """One deployment-log row about the candidate."""

    time: str
    event: str
    version: str
    previous_version: str | None
    instance_id: str | None
    detail: str | None


class ActionChain(_Model):
    message_id: str
    outcome: Outcome
    message: MessageStep
    job: JobStep | None = None
    candidate: CandidateStep | None = None
    shadow: ShadowStep | None = None
    gate: GateStep | None = None
    pin: list[DeployStep] = Field(default_factory=list)  # promote / rollback rows
    swaps: list[DeployStep] = Field(default_factory=list)  # start / swap / swap_failed rows


class ActionsReport(_Model):
    chains: list[ActionChain] = Field(default_factory=list)  # newest first
    problems: list[str] = Field(default_factory=list)  # sources that could not be read


def _int(x: Any) -> int | None:
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def _float(x: Any) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _sort_key(time: str | None) -> float:
    try:
        return parse_utc(time).timestamp() if time else 0.0
    except ValueError:
        return 0.0


def message_step(trigger: dict[str, Any]) -> MessageStep:
    evidence = trigger.get("evidence") or {}
    checks = [str(c["name"]) for c in evidence.get("checks") or [] if isinstance(c, dict) and c.get("name")]
    return MessageStep(
        message_id=str(trigger["message_id"]),
        time=trigger.get("created_at") or evidence.get("created_at"),
        reason=trigger.get("reason"),
        checks=checks,
        serving_version=evidence.get("serving_version"),
        report=evidence.get("report"),
    )


def gate_step(gate: dict[str, Any]) -> GateStep:
    interval = gate.get("interval") or {}
    window = gate.get("window") or {}
    return GateStep(
        decision=str(gate.get("decision")),
        reason=gate.get("reason"),
        metric=gate.get("metric"),
        margin=_float(gate.get("margin")),
        difference=_float(gate.get("difference")),
        interval_low=_float(interval.get("low")),
        interval_high=_float(interval.get("high")),
        confidence=_float(interval.get("confidence")),
        window_rows=_int(window.get("rows")),
        window_positives=_int(window.get("positives")),
        serving_version=(gate.get("serving") or {}).get("version"),
        decided_at=gate.get("decided_at"),
        auto_promote=gate.get("auto_promote"),
        shadow_verdict=(gate.get("shadow") or {}).get("verdict"),
        shadow_reason=(gate.get("shadow") or {}).get("reason"),
    )


def shadow_step(shadow: dict[str, Any]) -> ShadowStep:
    return ShadowStep(
        status=shadow.get("status"),
        reason=shadow.get("reason"),
        rows=_int((shadow.get("window") or {}).get("rows")),
        agreement=_float(shadow.get("agreement")),
        disagreements=_int(shadow.get("disagreements")),
    )


def job_step(fields: dict[str, str]) -> JobStep:
    return JobStep(
        status=fields.get("status") or None,
        attempts=_int(fields.get("attempts")),
        worker=fields.get("worker") or None,
        started_at=fields.get("started_at") or None,
        finished_at=fields.get("finished_at") or None,
        reason=fields.get("reason") or None,
    )


def deploy_step(row: dict[str, str]) -> DeployStep:
    return DeployStep(
        time=row["time"],
        event=row["event"],
        version=row["version"],
        previous_version=row.get("previous_version") or None,
        instance_id=row.get("instance_id") or None,
        detail=row.get("detail") or None,
    )


def outcome(chain: ActionChain) -> Outcome:
    if chain.candidate is None:
        status = chain.job.status if chain.job else None
        if status in ("queued", "running", "failed"):
            return status  # type: ignore[return-value]
        return "sent"
    last_pin = chain.pin[-1] if chain.pin else None
    if last_pin and last_pin.previous_version == chain.candidate.version != last_pin.version:
        return "rolled back" if last_pin.event == "rollback" else "replaced"
    if any(s.event in ("start", "swap") for s in chain.swaps):
        return "serving"
    if any(p.event == "promote" and p.version == chain.candidate.version for p in chain.pin):
        return "promoted"
    if chain.gate is None:
        return "registered"
    return "promote pending" if chain.gate.decision == "promote" else "kept"


class ActionsReader:
    """Assembles the chains; `redis_client` None (or unreachable): from files alone."""

    def __init__(self, *, paths: Paths, redis_client: redis.Redis | None = None) -> None:
        self.paths = paths
        self.registry = Registry(paths=paths)
        self.redis = redis_client
        self.keys = RedisKeys.from_settings(paths.settings)

    def read(self, sent: list[SentMessage]) -> ActionsReport:
        problems: list[str] = []
        chains: dict[str, ActionChain] = {}
        for version in self.registry.versions():
            try:
                md = self.registry.metadata(version)
            except ClockworkError as e:
                problems.append(f"registry {version}: {e}")
                continue
            trigger = md.get("trigger") or {}
            if trigger.get("kind") != "message" or not trigger.get("message_id"):
                continue
            chain = ActionChain(
                message_id=str(trigger["message_id"]),
                outcome="registered",
                message=message_step(trigger),
                candidate=CandidateStep(
                    version=version,
                    created_at=md.get("created_at"),
                    data_version=md.get("data_version"),
                    onnx_sha256=md.get("onnx_sha256"),
                ),
                gate=gate_step(md["gate"]) if md.get("gate") else None,
                shadow=shadow_step(md["shadow"]) if md.get("shadow") else None,
            )
            chains.setdefault(chain.message_id, chain)
        for s in sent:
            if s.message_id in chains:
                known = chains[s.message_id].message
                known.checks = known.checks or list(s.checks)
                known.time = known.time or s.time
                continue
            chains[s.message_id] = ActionChain(
                message_id=s.message_id,
                outcome="sent",
                message=MessageStep(
                    message_id=s.message_id, time=s.time, checks=list(s.checks), serving_version=s.serving_version
                ),
            )
        newest = sorted(chains.values(), key=lambda c: _sort_key(c.message.time), reverse=True)[:MAX_CHAINS]
        rows = self._deploy_rows(problems)
        jobs = self._jobs([c.message_id for c in newest], problems)
        for chain in newest:
            chain.job = jobs.get(chain.message_id)
            if chain.candidate is not None:
                version = chain.candidate.version
                since = _sort_key(chain.candidate.created_at)
                mine = [r for r in rows if _sort_key(r["time"]) >= since]
                chain.pin = [
                    deploy_step(r)
                    for r in mine
                    if r["event"] in ("promote", "rollback") and version in (r["version"], r.get("previous_version"))
                ]
                chain.swaps = [
                    deploy_step(r)
                    for r in mine
                    if r["event"] in ("start", "swap", "swap_failed") and r["version"] == version
                ]
            chain.outcome = outcome(chain)
        return ActionsReport(chains=newest, problems=problems)

    def _deploy_rows(self, problems: list[str]) -> list[dict[str, str]]:
        try:
            return read_rows(self.paths)
        except (ClockworkError, OSError) as e:
            problems.append(f"deployment log: {e}")
            return []

    def _jobs(self, ids: list[str], problems: list[str]) -> dict[str, JobStep]:
        if self.redis is None or not ids:
            return {}
        try:
            pipe = self.redis.pipeline(transaction=False)
            for message_id in ids:
                pipe.hgetall(self.keys.job(message_id))
            found = pipe.execute()
        except redis.RedisError as e:
            problems.append(f"Redis job hashes not read ({e}): job status from files only")
            return {}
        out = {}
        for message_id, fields in zip(ids, found, strict=True):
            if fields:
                out[message_id] = job_step({_text(k): _text(v) for k, v in fields.items()})
        return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
