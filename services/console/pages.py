"""The console's pages over the serving side: overview, registry (with the side-by-side diff), deployments, jobs.

Each function takes what it shows (already read) and returns the page body as HTML; values are escaped in
services.console.html. Nothing here reads or writes anything.
"""

from __future__ import annotations

import json
from typing import Any

from services.console.html import action_form, esc, fmt, pretty_json, short, table


def _check_state(check: dict) -> str:
    """FIRED, ok, or why the check could not judge yet (too few labels): never "ok" for a check that did not run."""
    if check.get("fired"):
        return _status(False, "FIRED")
    status = check.get("status")
    if status and status not in ("ok", "fired"):
        return f'<span class="muted">{esc(str(status).replace("_", " "))}</span>'
    return _status(True, "ok")


def _status(ok: bool, text: str) -> str:
    return f'<span class="{"ok" if ok else "bad"}">{esc(text)}</span>'


def _gate_cell(gate: dict) -> str:
    if not gate:
        return '<span class="muted">no gate (trained by command)</span>'
    interval = gate.get("interval") or {}
    bounds = f" [{fmt(interval.get('low'))}, {fmt(interval.get('high'))}]" if interval else ""
    diff = (
        f" Δ{esc(gate.get('metric', ''))}={fmt(gate.get('difference'))}" if gate.get("difference") is not None else ""
    )
    return (
        f"<b>{esc(gate.get('decision', '?'))}</b>{diff}{bounds}<br><span class='muted'>{esc(gate.get('reason'))}</span>"
    )


def overview(
    *,
    pin: str,
    ready: tuple[bool, str],
    inference_url: str,
    instances: list[dict],
    latest: dict | None,
    depth: dict[str, int] | None,
    jobs: list[dict],
    redis_error: str | None,
) -> str:
    ok, ready_text = ready
    out = [
        '<div class="grid"><div class="card">',
        f"<b>Pinned version</b> (config.yaml deployment.model_version): <code id='pin'>{esc(pin)}</code><br>",
        f"<b>Inference</b> {esc(inference_url)}/ready: <span id='ready'>{_status(ok, ready_text)}</span>",
        "</div><div class='card'><b>Retrain queue</b><br>",
    ]
    if depth is None:
        out.append(_status(False, f"Redis unreachable: {redis_error}"))
    else:
        out.append(
            f"queued <b id='depth'>{depth['queued']}</b> · running {depth['processing']} · dead letters {depth['dead']}"
        )
    out.append("</div></div><h2>What every instance serves</h2>")
    out.append(
        table(
            ["instance", "serves", "since", "event", "onnx sha256", "data version"],
            [
                [
                    f"<code>{esc(r['instance_id'])}</code>",
                    f"<b>{esc(r['version'])}</b>",
                    esc(r["time"]),
                    esc(r["event"]),
                    short(r["onnx_sha256"]),
                    esc(r["data_version"]),
                ]
                for r in instances
            ],
        )
    )
    out.append("<h2>Last monitoring cycle</h2>")
    if latest is None:
        out.append('<p class="muted">no monitoring report yet</p>')
    else:
        out.append(
            f"<p>cycle {esc(latest.get('cycle'))} at {esc(latest.get('created_at'))}, serving "
            f"{esc(latest.get('serving_version'))}; fired: <b>{esc(', '.join(latest.get('fired') or []) or 'none')}"
            f"</b> · <a href='/reports/latest.html'>full report</a></p>"
        )
        rows = []
        for c in latest.get("checks") or []:
            skip = ("name", "kind", "version", "fired", "thresholds", "test")
            figures = {k: v for k, v in c.items() if k not in skip and v is not None and not isinstance(v, dict)}
            rows.append(
                [
                    esc(c.get("name")),
                    _check_state(c),
                    f"<code>{esc(json.dumps(figures, default=str))}</code>",
                ]
            )
        out.append(table(["check", "state", "figures"], rows))
    out.append("<h2>Last jobs</h2>")
    out.append(jobs_table(jobs[:10]))
    return "".join(out)


def registry(rows: list[dict], *, pin: str, a: str | None, b: str | None) -> str:
    versions = [r["version"] for r in rows]
    opts_a = "".join(f"<option{' selected' if v == a else ''}>{esc(v)}</option>" for v in versions)
    opts_b = "".join(f"<option{' selected' if v == b else ''}>{esc(v)}</option>" for v in versions)
    out = [
        f"<form method='get' action='/registry/diff' class='card'>Compare <select name='a'>{opts_a}</select> with "
        f"<select name='b'>{opts_b}</select> <button type='submit'>diff</button></form>"
    ]
    body = []
    for r in reversed(rows):
        if "error" in r:
            body.append([f"<b>{esc(r['version'])}</b>", f"<span class='bad'>{esc(r['error'])}</span>"] + [""] * 7)
            continue
        m = r["metrics"]
        served = r["version"] == pin
        act = (
            "<span class='ok'>pinned</span>"
            if served
            else action_form("/actions/promote", "promote", {"version": r["version"]})
        )
        body.append(
            [
                f"<b>{esc(r['version'])}</b><br><span class='muted'>{esc(r['created_at'])}</span>",
                f"F1 {fmt(m.get('f1'))}<br>P {fmt(m.get('precision'))} · R {fmt(m.get('recall'))}",
                fmt((r["production_metrics"] or {}).get("f1")),
                f"{fmt(r['threshold'], 3)}<br><span class='muted'>{esc(r['policy'])}</span>",
                esc(r["data_version"]),
                esc(r["algorithm"]),
                esc(r["trigger"].get("kind")),
                _gate_cell(r["gate"]),
                act,
            ]
        )
    out.append(
        table(
            ["version", "validation", "prod F1", "threshold", "data version", "algorithm", "trigger", "gate", "action"],
            body,
        )
    )
    out.append(f"<p class='muted'>{len(rows)} version(s).</p>")
    return "".join(out)


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k in sorted(value):
            out.update(_flatten(value[k], f"{prefix}{k}."))
        return out
    text = json.dumps(value, default=str)
    return {prefix[:-1]: text if len(text) <= 160 else text[:157] + "..."}


def diff(a: str, md_a: dict, b: str, md_b: dict) -> str:
    fa, fb = _flatten(md_a), _flatten(md_b)
    keys = sorted(set(fa) | set(fb))
    differ = [k for k in keys if fa.get(k) != fb.get(k)]
    rows = [
        [f"<code>{esc(k)}</code>", f"<code>{esc(fa.get(k, '—'))}</code>", f"<code>{esc(fb.get(k, '—'))}</code>"]
        for k in keys
    ]
    cls = ["diff" if fa.get(k) != fb.get(k) else "" for k in keys]
    return f"<p>{len(differ)} of {len(keys)} fields differ (highlighted). <a href='/registry'>back</a></p>" + table(
        ["metadata field", a, b], rows, row_class=cls
    )


def rollback_form() -> str:
    return (
        "<div class='card'><b>Roll back</b>: pin the version that served before the current one "
        f"(from the deployment log) {action_form('/actions/rollback', 'roll back', {})}</div>"
    )


def deployments(rows: list[dict]) -> str:
    by_instance: dict[str, list[dict]] = {}
    for r in rows:
        by_instance.setdefault(r["instance_id"], []).append(r)
    out = [f"<p>{len(rows)} row(s) in the deployment log, {len(by_instance)} instance(s) or actor(s).</p>"]
    for instance, items in sorted(by_instance.items(), key=lambda kv: kv[1][-1]["time"], reverse=True):
        out.append(f"<h2>{esc(instance)}</h2>")
        out.append(
            table(
                ["time", "event", "version", "previous", "onnx sha256", "data version", "commit", "detail"],
                [
                    [
                        esc(r["time"]),
                        f"<b class='{'bad' if r['event'] in ('swap_failed', 'config_rejected') else ''}'>"
                        f"{esc(r['event'])}</b>",
                        esc(r["version"]),
                        esc(r["previous_version"]),
                        short(r["onnx_sha256"]),
                        esc(r["data_version"]),
                        short(r["git_commit"], 10),
                        esc(r["detail"]),
                    ]
                    for r in reversed(items)
                ],
            )
        )
    return "".join(out)


def jobs_table(jobs: list[dict]) -> str:
    return table(
        ["job", "status", "queued", "finished", "version", "reason / note", "attempts", "lease"],
        [
            [
                f"<code>{esc(j.get('message_id'))}</code>",
                f"<b>{esc(j.get('status'))}</b>",
                esc(j.get("queued_at")),
                esc(j.get("finished_at") or j.get("failed_at")),
                esc(j.get("version")),
                esc(j.get("reason") or j.get("requested_reason"))
                + (f"<br><i>{esc(j['note'])}</i>" if j.get("note") else ""),
                esc(j.get("attempts")),
                esc(j.get("lease")),
            ]
            for j in jobs
        ],
    )


def jobs(*, depth: dict[str, int], items: list[dict], dead: list[dict]) -> str:
    by_status: dict[str, int] = {}
    for j in items:
        by_status[j.get("status", "?")] = by_status.get(j.get("status", "?"), 0) + 1
    counts = " · ".join(f"{esc(k)} {v}" for k, v in sorted(by_status.items())) or "no jobs"
    push = (
        "<form method='post' action='/actions/retrain' class='card'><b>Push a retrain message</b> "
        "<input type='text' name='reason' value='manual retrain from the console' size='40' required> "
        "<input type='text' name='message_id' placeholder='id (optional)' size='20'> "
        "<input type='password' name='api_key' placeholder='API key' autocomplete='off' required> "
        "<button type='submit'>push</button></form>"
    )
    dead_rows = [
        [
            esc(d.get("time")),
            esc(d.get("reason")),
            esc(d.get("worker")),
            f"<code>{esc(str(d.get('raw'))[:200])}</code>",
            action_form("/actions/requeue", "requeue", {"record": d["_record"]}),
        ]
        for d in dead
    ]
    return (
        f"<p>In Redis: queued {depth['queued']} · processing {depth['processing']} · dead letters {depth['dead']}. "
        f"Jobs by status: {counts}.</p>{push}<h2>Jobs</h2>{jobs_table(items)}"
        f"<h2>Dead letters</h2>{table(['time', 'reason', 'worker', 'raw message', 'action'], dead_rows)}"
    )


def _serving(row: dict | None) -> str:
    if not row:
        return "<span class='muted'>no start/swap row before the prediction</span>"
    return f"<b>{esc(row['version'])}</b> since {esc(row['time'])} ({esc(row['event'])} by {esc(row['instance_id'])})"


def lineage(request_id: str, chain: dict | None, error: str | None) -> str:
    form = (
        "<form method='get' action='/lineage' class='card'>request_id "
        f"<input type='text' name='request_id' value='{esc(request_id)}' size='48'> "
        "<button type='submit'>trace</button></form>"
    )
    if error:
        return form + f"<div class='msg bad'>{esc(error)}</div>"
    if chain is None:
        return form
    pred, model, data, raw = chain["prediction"], chain["model"], chain["data"], chain["raw"]
    steps = [
        (
            "prediction",
            f"{esc(pred.get('time'))} probability {fmt(pred.get('probability'))} "
            f"predicted {esc(pred.get('predicted'))} in <code>{esc(pred.get('log'))}</code>",
        ),
        ("feedback", esc(json.dumps(chain.get("feedback"), default=str)[:300])),
        (
            "model",
            f"<b>{esc(model['version'])}</b> onnx {short(model['onnx_sha256'])} "
            f"F1 {fmt((model.get('metrics') or {}).get('f1'))}",
        ),
        ("serving", _serving(chain.get("deployment"))),
        ("data version", esc(data["version"])),
        (
            "raw file(s)",
            "<br>".join(
                f"<code>{esc(f.get('path'))}</code> {short(f.get('sha256'), 64)}" for f in raw.get("files", [])
            ),
        ),
        ("code", short((chain["code"].get("model_git") or {}).get("commit"), 40)),
    ]
    return form + table(["link", "what"], [[esc(k), v] for k, v in steps]) + "<h2>Full record</h2>" + pretty_json(chain)
