"""The report's "What was done" section: one table per retrain chain (services.monitor.actions.ActionChain).

Each row is a step with its id and its time: the message (id, the checks that fired, the report that saw them),
the job (its Redis hash, when it was readable), the candidate version, its shadow figures, the gate's decision
with its interval, the pin change and the swaps of each inference instance. A step that has not happened shows
what is known instead ("not registered yet", "pin not moved"). Pure: returns HTML.
"""

from __future__ import annotations

from services.monitor.actions import ActionChain, ActionsReport, DeployStep, GateStep
from services.monitor.htmlfmt import e, when
from services.monitor.plots import fmt

OUTCOME_CLASS = {"failed": "bad", "serving": "ok", "promoted": "ok"}


def actions_section(actions: ActionsReport | None) -> str:
    if actions is None:
        return ""
    parts = ["<h2>What was done</h2>"]
    if not actions.chains:
        parts.append("<p>No retrain message sent or recorded yet.</p>")
    parts += [chain_table(c) for c in actions.chains]
    if actions.problems:
        parts.append(
            "<p class='bad'>Not read:</p><ul>" + "".join(f"<li>{e(p)}</li>" for p in actions.problems) + "</ul>"
        )
    return "".join(parts)


def chain_table(chain: ActionChain) -> str:
    cls = OUTCOME_CLASS.get(chain.outcome, "")
    version = chain.candidate.version if chain.candidate else None
    caption = f"<code>{e(chain.message_id)}</code>" + (f" &rarr; <b>{e(version)}</b>" if version else "")
    if chain.gate:
        caption += f" &middot; gate: {e(chain.gate.decision)}"
    rows = [_row("retrain message", chain.message_id, chain.message.time, _message(chain))]
    job = chain.job
    if job:
        span = f"{e(when(job.started_at))}<br>to {e(when(job.finished_at))}" if job.started_at else None
        what = f"<b>{e(job.status)}</b>"
        what += f", attempt {job.attempts}" if job.attempts else ""
        what += f", worker <code>{e(job.worker)}</code>" if job.worker else ""
        rows.append(_row("job", chain.message_id, None, what + (f": {e(job.reason)}" if job.reason else ""), span))
    else:
        rows.append(_row("job", chain.message_id, None, "<span class='muted'>Redis job hash not read</span>"))
    cand = chain.candidate
    if cand is None:
        rows.append(_row("candidate", None, None, "<span class='muted'>not registered yet</span>"))
    else:
        sha = (cand.onnx_sha256 or "")[:12]
        rows.append(
            _row("candidate", cand.version, cand.created_at, f"data {e(cand.data_version)}, onnx sha256 {e(sha)}")
        )
        rows.append(_row("shadow", cand.version, None, _shadow(chain)))
        rows.append(_row("gate", cand.version, chain.gate.decided_at if chain.gate else None, _gate(chain.gate)))
        pin = chain.pin or []
        rows += [_row("pin", p.version, p.time, _deploy(p)) for p in pin] or [
            _row("pin", None, None, "<span class='muted'>not moved to this version</span>")
        ]
        rows += [_row("swap", s.instance_id, s.time, _deploy(s)) for s in chain.swaps] or [
            _row("swap", None, None, "<span class='muted'>no instance serves it</span>")
        ]
    return (
        f"<h3>{caption} &middot; now: <span class='{cls}'>{e(chain.outcome)}</span></h3>"
        "<table class='chain'><tr><th class='l'>step</th><th class='l'>id</th><th class='l'>time</th>"
        "<th class='l'>what</th></tr>" + "".join(rows) + "</table>"
    )


def _row(step: str, ident: str | None, time: str | None, what: str, span: str | None = None) -> str:
    """One step; `what` and `span` (a time range, instead of `time`) are HTML already."""
    ident_html = f"<code>{e(ident)}</code>" if ident else "-"
    return (
        f"<tr><td class='l'>{e(step)}</td><td class='l'>{ident_html}</td>"
        f"<td class='l'>{span or e(when(time))}</td><td class='l'>{what}</td></tr>"
    )


def _message(chain: ActionChain) -> str:
    m = chain.message
    parts = []
    if m.checks:
        parts.append("fired " + ", ".join(f"<code>{e(c)}</code>" for c in m.checks))
    if m.serving_version:
        parts.append(f"serving {e(m.serving_version)}")
    if m.report:
        parts.append(f"report <code>{e(m.report)}</code>")
    if m.reason and not m.checks:
        parts.append(e(m.reason))
    return "; ".join(parts) or "-"


def _shadow(chain: ActionChain) -> str:
    s = chain.shadow
    if s is None:
        return "<span class='muted'>no shadow record</span>"
    if s.agreement is None:
        return f"{e(s.status)}: {e(s.reason)}"
    return f"agrees with the served labels on {s.agreement:.1%} of {e(s.rows)} logged rows"


def _gate(g: GateStep | None) -> str:
    if g is None:
        return "<span class='muted'>no gate decision (no labelled window)</span>"
    cls = "ok" if g.decision == "promote" else ""
    interval = (
        f" [{fmt(g.interval_low)}, {fmt(g.interval_high)}] ({g.confidence or 0:.0%} interval)"
        if g.interval_low is not None
        else ""
    )
    shadow = f"; shadow <b>{e(g.shadow_verdict)}</b>: {e(g.shadow_reason)}" if g.shadow_verdict else ""
    return (
        f"<b class='{cls}'>{e(g.decision)}</b> over {e(g.serving_version)}: {e(g.metric)} improvement "
        f"{fmt(g.difference)}{interval}, margin {fmt(g.margin)}; {e(g.window_rows)} labelled rows "
        f"({e(g.window_positives)} failures){shadow}"
    )


def _deploy(d: DeployStep) -> str:
    move = f"{e(d.previous_version)} &rarr; {e(d.version)}" if d.previous_version else e(d.version)
    who = f" by <code>{e(d.instance_id)}</code>" if d.instance_id and d.event in ("promote", "rollback") else ""
    detail = f" <small class='muted'>{e(d.detail)}</small>" if d.detail else ""
    return f"<b>{e(d.event)}</b> {move}{who}{detail}"
