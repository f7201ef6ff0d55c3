"""HTML building for the console: the page frame, tables, forms and an inline SVG line chart.

Every value goes through `esc` (html.escape) before it reaches a page; nothing here reads or writes anything.
No script or style is fetched from elsewhere: the style is inline and the one script (copy-free) is too.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from shared.schemas import utc_now

NAV = (
    ("/", "Overview"),
    ("/registry", "Registry"),
    ("/deployments", "Deployments"),
    ("/data", "Data"),
    ("/monitoring", "Monitoring"),
    ("/jobs", "Jobs"),
    ("/lineage", "Lineage"),
)

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d2330;background:#f6f7f9;font-size:14px}
header{background:#1d2330;color:#fff;padding:8px 24px;display:flex;gap:18px;align-items:center}
header a{color:#cfd6e4;text-decoration:none}header a.on{color:#fff;font-weight:600;border-bottom:2px solid #6cf}
header b{margin-right:16px}main{max-width:1240px;margin:0 auto;padding:16px 24px}
h1{font-size:20px;margin:8px 0 12px}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:12px}
th,td{border:1px solid #dde1e8;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#eef1f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.ok{color:#107a3a;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#6b7280}
.card{background:#fff;border:1px solid #dde1e8;padding:10px 14px;margin-bottom:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}
tr.diff td{background:#fff6d6}form.inline{display:inline}
input[type=text],input[type=password]{padding:3px 6px}button{padding:3px 10px;cursor:pointer}
ul.tree{list-style:none;padding-left:18px;border-left:1px dashed #b8c0cc}ul.tree li{margin:4px 0}
.msg{padding:8px 12px;border:1px solid;margin-bottom:12px}.msg.ok{background:#e8f6ee}.msg.bad{background:#fdecea}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A number to `digits` decimals, '-' for None; anything else as text (escaped)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return esc(value)


def short(sha: Any, n: int = 12) -> str:
    text = "" if sha is None else str(sha)
    return f'<code title="{esc(text)}">{esc(text[:n])}</code>' if text else "-"


def page(title: str, body: str, *, active: str, message: str = "", ok: bool = True) -> str:
    nav = "".join(f'<a href="{href}"{" class=on" if href == active else ""}>{esc(name)}</a>' for href, name in NAV)
    note = f'<div class="msg {"ok" if ok else "bad"}" id="message">{esc(message)}</div>' if message else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · Clockwork console</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style></head>'
        f"<body><header><b>Clockwork console</b>{nav}</header><main><h1>{esc(title)}</h1>{note}{body}"
        f'<p class="muted">Rendered {esc(utc_now())} (all times UTC)</p></main></body></html>'
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, row_class: Sequence[str] | None = None) -> str:
    """Rows of already-escaped cell HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}" class="muted">(none)</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_field() -> str:
    return '<input type="password" name="api_key" placeholder="API key" autocomplete="off" required>'


def action_form(action: str, label: str, fields: dict[str, str], *, extra: str = "") -> str:
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items())
    return (
        f'<form class="inline" method="post" action="{esc(action)}">{hidden}{extra}{key_field()} '
        f'<button type="submit">{esc(label)}</button></form>'
    )


def pretty_json(value: Any) -> str:
    return f'<pre class="mono card">{esc(json.dumps(value, indent=2, default=str, sort_keys=True))}</pre>'


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def line_chart(
    title: str, series: dict[str, list[tuple[str, float | None]]], *, width: int = 560, height: int = 200
) -> str:
    """An inline SVG chart: one line per series of (time, value) points in time order (None: a gap)."""
    times = sorted({t for pts in series.values() for t, v in pts if v is not None})
    values = [v for pts in series.values() for _, v in pts if v is not None and math.isfinite(v)]
    if not times or not values:
        return f'<div class="card"><b>{esc(title)}</b><p class="muted">no data yet</p></div>'
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    left, right, top, bottom = 48, 10, 10, 28
    w, h = width - left - right, height - top - bottom
    index = {t: i for i, t in enumerate(times)}

    def x(t: str) -> float:
        return left + (w * index[t] / max(1, len(times) - 1))

    def y(v: float) -> float:
        return top + h * (1 - (v - lo) / (hi - lo))

    parts = [
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10">{hi:.3g}</text>',
        f'<text x="{left - 4}" y="{top + h}" text-anchor="end" font-size="10">{lo:.3g}</text>',
        f'<text x="{left}" y="{height - 6}" font-size="10">{esc(times[0][:19])}</text>',
        f'<text x="{left + w}" y="{height - 6}" text-anchor="end" font-size="10">{esc(times[-1][:19])}</text>',
    ]
    legend = []
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        segs: list[list[str]] = []
        cur: list[str] = []
        for t, v in pts:
            if v is None or not math.isfinite(v):
                if cur:
                    segs.append(cur)
                cur = []
                continue
            cur.append(f"{x(t):.1f},{y(v):.1f}")
        if cur:
            segs.append(cur)
        for seg in segs:
            if len(seg) == 1:
                cx, cy = seg[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
            else:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(seg)}"/>')
        legend.append(f'<span style="color:{color}">&#9632; {esc(name)}</span>')
    svg = (
        f'<svg role="img" aria-label="{esc(title)}" width="100%" style="max-width:{width}px" '
        f'viewBox="0 0 {width} {height}">{"".join(parts)}</svg>'
    )
    return f'<div class="card"><b>{esc(title)}</b><br>{svg}<div>{" ".join(legend)}</div></div>'
