"""One retrain job: message -> new data version with labelled production rows -> candidate -> gate ->
register (once per message id) -> promote when the gate says so and config allows.

    shared.labelled.load_labelled (the monitor's labelled rows)
    -> services.trainer.retrain_data: data version v<N>_retrain + the gate window (never trained on)
    -> services.trainer.train.train_candidate
    -> services.trainer.shadow: the candidate replayed on the newest logged predictions (metadata.json `shadow`;
       a shadow that cannot run is recorded with its reason and never fails the job)
    -> services.trainer.gate.decide (a GateDecision; the shadow's figures, services.trainer.shadow_veto, are part
       of it: metadata.json `gate.shadow`, and may keep a candidate the bootstrap would promote)
    -> `record` the decision in the job's hash (gate_decision, gate_onnx_sha256, gate_reason) BEFORE acting on it
    -> register_once (under the registry's lock) -> record the version -> shared.pin.set_pin when it says promote

`run_retrain` returns a `RetrainResult`; the worker writes `RetrainResult.job_fields()` into the job's Redis
hash. A crash before registration leaves at most a data version (the next attempt reuses it if the labelled
rows are unchanged, else writes another); after it, the message id in the model's trigger stops a second
registration. A crash between registration and the pin leaves the decision recorded: the retry (`resume`)
finds the version by message id and, when the recorded decision for that model (same onnx sha256) is promote,
completes the promotion; a pin already on the version means nothing to do, a pin moved elsewhere since the
decision (or auto_promote now false) is left alone and said so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

from services.trainer.candidate import Candidate
from services.trainer.gate import PROMOTE, GateDecision, decide
from services.trainer.retrain_data import build_retrain_version, split_labelled
from services.trainer.shadow import DEFAULT_LAST
from services.trainer.shadow import shadow as shadow_evaluation
from services.trainer.shadow_veto import shadow_check
from services.trainer.train import train_candidate
from shared.atomic import locked
from shared.config import Settings
from shared.datastore import DataStore
from shared.errors import ClockworkError
from shared.labelled import load_labelled
from shared.onnx_model import load_session
from shared.paths import Paths, check_data_version
from shared.pin import pinned_version, set_pin
from shared.registry import Registry
from shared.schemas import RetrainMessage

log = logging.getLogger(__name__)

# Writes fields into the job's record (the worker: its Redis hash). Raising stops the job before it acts.
Record = Callable[..., None]


def _no_record(**fields: Any) -> None:
    """Running outside a worker (tests, tools): nothing to record."""


class RetrainResult(BaseModel):
    """What one retrain job did: the model version it produced (or found), and whether it now serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    data_version: str
    created: bool  # False: an earlier attempt of the same message had registered `version`
    gate: GateDecision | None = None  # None when there was no labelled window, or the job had already run
    promoted: bool

    @property
    def gate_decision(self) -> str | None:
        return None if self.gate is None else self.gate.decision

    def job_fields(self) -> dict[str, str | int]:
        """The fields written into the job's Redis hash (flags as 0/1, no gate decision as '')."""
        return {
            "version": self.version,
            "data_version": self.data_version,
            "created": int(self.created),
            "gate_decision": self.gate_decision or "",
            "promoted": int(self.promoted),
        }


def message_trigger(message: RetrainMessage) -> dict[str, Any]:
    return {
        "kind": "message",
        "message_id": message.id,
        "reason": message.reason,
        "created_at": message.created_at,
        "evidence": message.evidence,
        "include_production": message.include_production,
        "data_version": message.data_version,
    }


def run_gate(
    settings: Settings,
    *,
    paths: Paths,
    registry: Registry,
    candidate: Candidate,
    window: pd.DataFrame,
    shadow: dict[str, Any] | None = None,
) -> GateDecision | None:
    """The gate's decision on the labelled window, with the shadow record's figures (run_shadow) when given."""
    if window.empty:
        log.info("no labelled rows: candidate registered without a gate decision")
        return None
    latest = registry.latest()
    hint = f"v{int(latest[1:]) + 1}" if latest else "v1"
    return decide(
        settings=settings,
        paths=paths,
        candidate_bytes=candidate.model_bytes,
        candidate_version_hint=hint,
        candidate_threshold=candidate.threshold,
        window=window,
        shadow=None if shadow is None else shadow_check(settings.monitoring.gate, shadow),
    )


def run_shadow(settings: Settings, *, paths: Paths, candidate: Candidate) -> dict[str, Any]:
    """The candidate on the newest logged predictions (services.trainer.shadow), as stored in metadata.json;
    when it cannot run, {"status": "error", "reason": ...}: the record says why, the job goes on."""
    threshold = settings.deployment.threshold
    threshold = candidate.threshold if threshold is None else float(threshold)
    try:
        model = load_session(candidate.model_bytes, name="candidate", features=settings.dataset.feature_names)
        report = shadow_evaluation(
            settings, paths=paths, model=model, version="candidate", threshold=threshold, last=DEFAULT_LAST
        )
    except (ClockworkError, OSError, ValueError) as e:
        log.warning("shadow evaluation of the candidate could not run: %s", e)
        return {"status": "error", "reason": f"shadow evaluation could not run: {e}"}
    log.info("shadow: %s", report.reason)
    return report.model_dump(mode="json")


def register_once(
    registry: Registry,
    *,
    candidate: Candidate,
    trigger: dict[str, Any],
    gate: GateDecision | None,
    shadow: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Register unless this message id already produced a model (checked under the registry's lock)."""
    with locked(registry.dir / ".message-registration"):
        existing = registry.find_by_trigger(trigger["message_id"])
        if existing:
            return registry.metadata(existing), False
        metadata = candidate.metadata(trigger=trigger, gate=gate)
        if shadow is not None:
            metadata["shadow"] = shadow
        return registry.register(model_bytes=candidate.model_bytes, metadata=metadata), True


def promote(settings: Settings, *, paths: Paths, version: str, gate: GateDecision | None) -> bool:
    if gate is None or not gate.promote:
        return False
    if not gate.auto_promote:
        log.info("gate says promote %s, but monitoring.gate.auto_promote is false: left for a person", version)
        return False
    set_pin(settings.config_path, version, paths=paths)
    log.info("promoted %s: deployment.model_version in %s", version, settings.config_path)
    return True


def complete_promotion(settings: Settings, *, paths: Paths, version: str, gate: GateDecision) -> bool:
    """Finish a promotion an earlier attempt decided and recorded but did not write (idempotent)."""
    pin = pinned_version(settings)
    if pin == version:
        log.info("%s is already pinned: the recorded promotion was complete", version)
        return True
    if pin != gate.serving.version:
        log.warning(
            "the gate promoted %s over %s, but the pin has since moved to %s: left as it is",
            version,
            gate.serving.version,
            pin,
        )
        return False
    if not settings.monitoring.gate.auto_promote:
        log.info("recorded promotion of %s not completed: monitoring.gate.auto_promote is now false", version)
        return False
    return promote(settings, paths=paths, version=version, gate=gate)


def resume(
    settings: Settings,
    *,
    paths: Paths,
    registry: Registry,
    message: RetrainMessage,
    version: str,
    recorded: Mapping[str, str],
) -> RetrainResult:
    """A repeat of a job that already registered `version`: complete the promotion its recorded decision asks."""
    md = registry.metadata(version)
    gate = None
    promoted = False
    if (
        recorded.get("gate_decision") == PROMOTE
        and recorded.get("gate_onnx_sha256") == md["onnx_sha256"]
        and md.get("gate") is not None
    ):
        gate = GateDecision.model_validate(md["gate"])
        log.info("job %s produced %s and its gate decided promote: completing the promotion", message.id, version)
        promoted = complete_promotion(settings, paths=paths, version=version, gate=gate)
    else:
        log.info("job %s already produced %s: nothing to do", message.id, version)
    return RetrainResult(version=version, data_version=md["data_version"], created=False, gate=gate, promoted=promoted)


def run_retrain(
    settings: Settings,
    message: RetrainMessage,
    *,
    registry: Registry | None = None,
    recorded: Mapping[str, str] | None = None,
    record: Record | None = None,
) -> RetrainResult:
    """Carry out one retrain message.

    `recorded` is the job's record as an earlier attempt left it ({} if none); `record(**fields)` writes to it.
    """
    paths = Paths.from_settings(settings)
    registry = registry or Registry(paths=paths)
    record = record or _no_record
    store = DataStore(paths=paths)
    existing = registry.find_by_trigger(message.id)
    if existing:
        return resume(
            settings, paths=paths, registry=registry, message=message, version=existing, recorded=recorded or {}
        )
    window = pd.DataFrame()
    if message.data_version:
        data_version = check_data_version(message.data_version)
    else:
        data_version = settings.data.version
        if message.include_production:
            labelled = load_labelled(paths)
            train_rows, window = split_labelled(labelled, window_size=settings.monitoring.gate.window_size)
            if not train_rows.empty:
                data_version = build_retrain_version(
                    settings, store=store, message=message, train_rows=train_rows, window=window
                )
            else:
                log.info(
                    "job %s: %d labelled rows, all held back for the gate; training on %s",
                    message.id,
                    len(labelled),
                    data_version,
                )
    candidate = train_candidate(settings, data_version=data_version)
    shadow_record = run_shadow(settings, paths=paths, candidate=candidate)
    gate = run_gate(
        settings, paths=paths, registry=registry, candidate=candidate, window=window, shadow=shadow_record
    )
    if gate is not None:
        record(gate_decision=gate.decision, gate_onnx_sha256=gate.candidate.onnx_sha256, gate_reason=gate.reason)
    md, created = register_once(
        registry, candidate=candidate, trigger=message_trigger(message), gate=gate, shadow=shadow_record
    )
    record(version=md["version"])
    promoted = promote(settings, paths=paths, version=md["version"], gate=gate) if created else False
    return RetrainResult(
        version=md["version"], data_version=md["data_version"], created=created, gate=gate, promoted=promoted
    )
