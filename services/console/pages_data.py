"""The console's pages over data and monitoring: the manifest as a lineage tree, metrics and drift over time.

Each function takes what it shows (already read) and returns the page body as HTML. Nothing here reads or
writes anything.
"""

from __future__ import annotations

from services.console.html import esc, fmt, line_chart, short, table
from shared.schemas import ManifestEntry


def data(
    entries: list[ManifestEntry],
    *,
    raw_rel: str,
    raw_sha256: str,
    models_by_file: dict[tuple[str, str], list[str]],
    problems: list[str],
) -> str:
    """A nested list from the raw file's hash to every file made from it, and the models trained on each."""
    children: dict[tuple[str, str], list[ManifestEntry]] = {}
    for e in entries:
        for i in e.inputs:
            children.setdefault((i.path, i.sha256), []).append(e)

    def node(path: str, sha: str, seen: frozenset[tuple[str, str]]) -> str:
        key = (path, sha)
        models = models_by_file.get(key, [])
        trained = " → models " + ", ".join(f"<a href='/registry'><b>{esc(v)}</b></a>" for v in models) if models else ""
        kids = children.get(key, [])
        inner = "".join(
            f"<li><b>{esc(e.data_version)}</b> <code>{esc(e.path)}</code> {short(e.sha256)} · {e.rows} rows · "
            f"{esc(e.producer)} · {esc(e.created_at)}{node_tail(e, seen | {key})}</li>"
            for e in kids
            if (e.path, e.sha256) not in seen
        )
        return trained + (f"<ul class='tree'>{inner}</ul>" if inner else "")

    def node_tail(e: ManifestEntry, seen: frozenset[tuple[str, str]]) -> str:
        return node(e.path, e.sha256, seen)

    problem_html = "".join(f"<div class='msg bad'>{esc(p)}</div>" for p in problems)
    versions = sorted({e.data_version for e in entries})
    return (
        f"{problem_html}<p>{len(entries)} manifest entries in {len(versions)} data version(s): "
        f"{esc(', '.join(versions))}.</p><div class='card'><ul class='tree' id='lineage-tree'><li>raw "
        f"<code>{esc(raw_rel)}</code> {short(raw_sha256, 64)}{node(raw_rel, raw_sha256, frozenset())}</li></ul></div>"
    )


def monitoring(reports: list[dict]) -> str:
    if not reports:
        return "<p class='muted'>No per-cycle monitoring reports yet.</p>"
    f1: dict[str, list[tuple[str, float | None]]] = {}
    err: dict[str, list[tuple[str, float | None]]] = {}
    drift: dict[str, list[tuple[str, float | None]]] = {}
    baseline: dict[str, float | None] = {}
    for r in reports:
        t = r.get("created_at", "")
        for version, perf in (r.get("performance") or {}).items():
            prod = perf.get("production") or {}
            f1.setdefault(version, []).append((t, prod.get("f1")))
            err.setdefault(version, []).append((t, prod.get("error_rate")))
            baseline[version] = (perf.get("training") or {}).get("f1")
        for name, feature in ((r.get("drift") or {}).get("features") or {}).items():
            effect = feature.get("effect_size") or {}
            value = effect.get("psi", effect.get("cramers_v"))
            drift.setdefault(name, []).append((t, value))
    charts = [
        line_chart("Production F1 per served version", f1),
        line_chart("Production error rate per served version", err),
    ]
    charts += [line_chart(f"Drift: {name} (PSI or Cramér's V)", {name: pts}) for name, pts in sorted(drift.items())]
    rows = [
        [
            esc(r.get("created_at")),
            esc(r.get("cycle")),
            esc(r.get("serving_version")),
            esc(", ".join(r.get("fired") or []) or "none"),
            esc((r.get("trigger") or {}).get("status")),
            f"<a href='/reports/{esc(r['_html'])}'>html</a> · <a href='/reports/{esc(r['_json'])}'>json</a>",
        ]
        for r in reversed(reports)
    ]
    base = " · ".join(f"{esc(v)} training F1 {fmt(b)}" for v, b in sorted(baseline.items()))
    return (
        f"<p>{len(reports)} cycle report(s), newest at {esc(reports[-1].get('created_at'))}. {base}</p>"
        f"<div class='grid'>{''.join(charts)}</div><h2>Cycles</h2>"
        + table(["time", "cycle", "serving", "fired", "trigger", "report"], rows)
    )
