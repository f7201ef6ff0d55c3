"""What the gate takes from the shadow: the candidate's expected cost on the labelled logged traffic, against the
predictions production actually served there, and whether that vetoes a promotion.

The retrain job runs the shadow (services.trainer.shadow, through retrain.run_shadow) before the gate's decision is
final and hands its record here. `shadow_check` reduces it to a `ShadowCheck`: the figures the gate used (no
latency, so the same logs, labels and candidate give the same check run after run), a verdict and its reason.

- "not_enough": the shadow could not run, saw no traffic, or its labelled part holds no rows or fewer failures than
  `monitoring.gate.min_positives`: the bootstrap alone decides.
- "veto": enough labelled rows, and the candidate's expected cost per 1,000 readings there exceeds the served
  predictions' by more than `monitoring.gate.shadow_cost_margin`: the candidate is kept, whatever the bootstrap says.
- "pass": enough labelled rows, and the candidate is not worse there by more than the margin.
- "off": `monitoring.gate.shadow_veto` is false: figures recorded, the bootstrap alone decides.

The check is stored inside the gate decision (metadata.json `gate.shadow`), its reason in the decision's reason.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shared.sections import GateConfig

Verdict = Literal["veto", "pass", "not_enough", "off"]


class ShadowCheck(BaseModel):
    """The shadow figures the gate used (metadata.json `gate.shadow`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    verdict: Verdict
    reason: str
    status: str  # the shadow's: ok, no_traffic, error
    cost_margin: float  # monitoring.gate.shadow_cost_margin
    min_positives: int  # monitoring.gate.min_positives
    window_rows: int = 0  # logged rows replayed
    first_time: str | None = None
    last_time: str | None = None
    agreement: float | None = None  # with the served labels, over the whole window
    labelled_rows: int = 0
    labelled_positives: int = 0
    labelled_disagreements: int = 0
    candidate_cost: float | None = None  # expected cost per 1,000 on the labelled rows
    served_cost: float | None = None
    cost_difference: float | None = None  # candidate minus served: positive, the candidate costs more

    @property
    def vetoes(self) -> bool:
        return self.verdict == "veto"


def shadow_check(gate: GateConfig, shadow: dict[str, Any]) -> ShadowCheck:
    """The gate's reading of a shadow record (retrain.run_shadow's: a ShadowReport dump, or status error)."""
    base: dict[str, Any] = {
        "status": str(shadow.get("status")),
        "cost_margin": gate.shadow_cost_margin,
        "min_positives": gate.min_positives,
    }
    window = shadow.get("window") or {}
    labelled = shadow.get("labelled") or {}
    if window:
        base.update(
            window_rows=int(window.get("rows") or 0),
            first_time=window.get("first_time"),
            last_time=window.get("last_time"),
            agreement=shadow.get("agreement"),
        )
    rows, positives = int(labelled.get("rows") or 0), int(labelled.get("positives") or 0)
    if shadow.get("status") != "ok" or rows == 0 or positives < gate.min_positives:
        why = "" if shadow.get("status") == "ok" else f": {shadow.get('reason')}"
        reason = (
            f"not enough labelled rows ({rows} rows, {positives} failures; monitoring.gate.min_positives "
            f"{gate.min_positives}){why}: the bootstrap decides"
        )
        return ShadowCheck(
            verdict="not_enough", reason=reason, labelled_rows=rows, labelled_positives=positives, **base
        )
    cand = float(labelled["candidate"]["expected_cost_per_1000"])
    served = float(labelled["served"]["expected_cost_per_1000"])
    diff = cand - served
    worse = diff > gate.shadow_cost_margin + 1e-12  # "more than the margin", immune to float rounding
    figures = (
        f"candidate expected cost {cand:.2f} vs served {served:.2f} per 1,000 on {rows} labelled logged rows "
        f"({positives} failures, {int(labelled.get('disagreements') or 0)} disagreements): "
        + (f"worse by {diff:.2f}" if diff > 0 else f"better by {-diff:.2f}" if diff < 0 else "the same cost")
    )
    if not gate.shadow_veto:
        verdict: Verdict = "off"
        reason = f"{figures} (monitoring.gate.shadow_veto is false: not used)"
    elif worse:
        verdict = "veto"
        reason = f"{figures}, more than monitoring.gate.shadow_cost_margin {gate.shadow_cost_margin}: kept"
    else:
        verdict = "pass"
        reason = f"{figures}, within monitoring.gate.shadow_cost_margin {gate.shadow_cost_margin}"
    return ShadowCheck(
        verdict=verdict,
        reason=reason,
        labelled_rows=rows,
        labelled_positives=positives,
        labelled_disagreements=int(labelled.get("disagreements") or 0),
        candidate_cost=round(cand, 6),
        served_cost=round(served, 6),
        cost_difference=round(diff, 6),
        **base,
    )
