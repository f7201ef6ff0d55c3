"""Reports on the volume: one JSON and one HTML file per cycle, plus latest.json / latest.html.

The HTML page is self-contained (plots embedded as PNG) so it opens from the volume in any browser:
the checks and whether they fired, performance per model version against training, drift per feature
with test, p-value, effect size and sample sizes, train vs production histograms, metrics over time.
Plots use matplotlib's object API (no pyplot, no global state, no display needed).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from shared.atomic import atomic_write_text
from shared.features import NUMERIC_FEATURES, TYPE_CODES
from shared.paths import Paths

LATEST_JSON = "latest.json"
LATEST_HTML = "latest.html"


def report_stem(created_at: str) -> str:
    """2026-01-02T03:04:05.123456Z -> report-20260102T030405123456Z (sorts by time)."""
    return "report-" + created_at.replace("-", "").replace(":", "").replace(".", "")


def report_paths(paths: Paths, created_at: str) -> tuple[Path, Path]:
    stem = report_stem(created_at)
    return paths.reports_dir / f"{stem}.json", paths.reports_dir / f"{stem}.html"


def write_json(paths: Paths, report: dict, path: Path) -> None:
    text = json.dumps(report, indent=2, sort_keys=False, allow_nan=False, default=str)
    atomic_write_text(path, text + "\n")
    atomic_write_text(paths.reports_dir / LATEST_JSON, text + "\n")


def write_latest_json(paths: Paths, report: dict) -> None:
    text = json.dumps(report, indent=2, sort_keys=False, allow_nan=False, default=str)
    atomic_write_text(paths.reports_dir / LATEST_JSON, text + "\n")


def write_html(
    paths: Paths,
    report: dict,
    path: Path,
    *,
    history: list[dict],
    reference: pd.DataFrame | None,
    production: pd.DataFrame | None,
) -> None:
    page = render_html(report, history=history, reference=reference, production=production)
    atomic_write_text(path, page)
    atomic_write_text(paths.reports_dir / LATEST_HTML, page)


def prune(paths: Paths, *, keep: int) -> list[Path]:
    """Delete the oldest per-cycle reports beyond the newest `keep` (latest.* always stays)."""
    removed = []
    for suffix in (".json", ".html"):
        cycle_files = sorted(paths.reports_dir.glob(f"report-*{suffix}"))
        for old in cycle_files[: max(0, len(cycle_files) - keep)]:
            old.unlink(missing_ok=True)
            removed.append(old)
    return removed


# --- plots -----------------------------------------------------------------------------------
def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def distribution_plot(reference: pd.DataFrame, production: pd.DataFrame, drift: dict) -> str:
    features = drift.get("features", {})
    fig = Figure(figsize=(15, 8), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    for ax, col in zip(axes, NUMERIC_FEATURES, strict=False):
        ref = reference[col].to_numpy(dtype=float)
        prod = production[col].to_numpy(dtype=float)
        lo, hi = float(min(ref.min(), prod.min())), float(max(ref.max(), prod.max()))
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
        ax.hist(
            ref,
            bins=bins,
            density=True,
            histtype="stepfilled",
            alpha=0.5,
            label=f"training (n={len(ref)})",
            color="tab:blue",
        )
        ax.hist(
            prod,
            bins=bins,
            density=True,
            histtype="stepfilled",
            alpha=0.5,
            label=f"production (n={len(prod)})",
            color="tab:orange",
        )
        f = features.get(col, {})
        psi = (f.get("effect_size") or {}).get("psi")
        mark = "DRIFT " if f.get("flagged") else ""
        ax.set_title(
            f"{mark}{col}\nPSI {_fmt(psi)}, KS p {_fmt(f.get('p_value'))}",
            color="red" if f.get("flagged") else "black",
            fontsize=10,
        )
        ax.legend(fontsize=8)
    ax = axes[len(NUMERIC_FEATURES)]
    cats = list(TYPE_CODES)
    x = np.arange(len(cats))
    ref_share = [float((reference["type"] == c).mean()) for c in cats]
    prod_share = [float((production["type"] == c).mean()) if len(production) else 0.0 for c in cats]
    ax.bar(x - 0.2, ref_share, 0.4, label="training", color="tab:blue", alpha=0.7)
    ax.bar(x + 0.2, prod_share, 0.4, label="production", color="tab:orange", alpha=0.7)
    ax.set_xticks(x, cats)
    t = features.get("type", {})
    ax.set_title(
        f"{'DRIFT ' if t.get('flagged') else ''}type (share)\nchi2 p {_fmt(t.get('p_value'))}",
        color="red" if t.get("flagged") else "black",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    return _png(fig)


def history_plot(history: list[dict], *, psi_threshold: float | None = None) -> str | None:
    if not history:
        return None
    times = pd.to_datetime([h["time"] for h in history])
    fig = Figure(figsize=(15, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    versions = sorted(
        {v for h in history for v in h.get("versions", {})}, key=lambda v: int(v[1:]) if v[1:].isdigit() else 0
    )
    for v in versions:
        for metric, style in (("f1", "-"), ("error_rate", ":")):
            ys = [(h.get("versions", {}).get(v) or {}).get(metric) for h in history]
            ys = [np.nan if y is None else y for y in ys]
            if not all(np.isnan(ys)):
                (line,) = ax1.plot(times, ys, style, marker=".", label=f"{v} {metric}")
                trained = [(h.get("versions", {}).get(v) or {}).get(f"training_{metric}") for h in history]
                trained = [t for t in trained if t is not None]
                if trained:
                    ax1.axhline(
                        trained[-1],
                        color=line.get_color(),
                        linestyle="--",
                        linewidth=0.8,
                        label=f"{v} training {metric}",
                    )
    ax1.set_title("production metrics per model version (window)")
    ax1.set_ylim(-0.02, 1.02)
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=8)
    for col in ["type"] + NUMERIC_FEATURES:
        key = "cramers_v" if col == "type" else "psi"
        ys = [((h.get("drift") or {}).get(col) or {}).get(key) for h in history]
        ys = [np.nan if y is None else y for y in ys]
        if not all(np.isnan(ys)):
            ax2.plot(times, ys, marker=".", label=f"{col} ({'V' if col == 'type' else 'PSI'})")
    if psi_threshold is not None:
        ax2.axhline(psi_threshold, color="red", linestyle="--", linewidth=0.8, label=f"PSI threshold {psi_threshold}")
    ax2.set_yscale("symlog", linthresh=0.1)
    ax2.set_ylim(bottom=0)  # effect sizes are never negative
    ax2.set_title("drift effect size over time")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8)
    # A short history (one cycle, a few minutes) would otherwise get an axis spanning years.
    pad = max((times.max() - times.min()) * 0.05, pd.Timedelta(minutes=5))
    for ax in (ax1, ax2):
        ax.set_xlim(times.min() - pad, times.max() + pad)
        ax.tick_params(axis="x", labelrotation=30)
    return _png(fig)


# --- page ------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right} th{background:#f3f3f3} td.l,th.l{text-align:left}
tr.fired td{background:#fde2e2} .ok{color:#2a7a2a} .bad{color:#b00020;font-weight:bold} img{max-width:100%}
code{background:#f6f6f6;padding:1px 4px}
"""


def render_html(
    report: dict, *, history: list[dict], reference: pd.DataFrame | None, production: pd.DataFrame | None
) -> str:
    e = html.escape
    drift = report.get("drift") or {}
    trig = report.get("trigger") or {}
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Clockwork monitor {e(report['created_at'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Clockwork monitor report</h1><p>{e(report['created_at'])} &middot; cycle {report.get('cycle')} &middot; "
        f"serving <b>{e(str(report.get('serving_version')))}</b> (pinned {e(str(report.get('pinned_version')))})</p>",
    ]
    fired = report.get("fired", [])
    status = (
        f"<span class='bad'>{len(fired)} check(s) fired: {e(', '.join(fired))}</span>"
        if fired
        else "<span class='ok'>no check fired</span>"
    )
    parts.append(
        f"<p>{status}. Retrain trigger: <b>{e(str(trig.get('status')))}</b> {e(str(trig.get('message_id') or trig.get('reason') or ''))}</p>"
    )

    ing = {k: v for k, v in report.get("ingest", {}).items() if k != "malformed_lines"}
    parts.append(
        "<h2>Data read this cycle</h2><table><tr>"
        + "".join(f"<th>{e(k)}</th>" for k in ing)
        + "</tr><tr>"
        + "".join(f"<td>{e(str(v))}</td>" for v in ing.values())
        + "</tr></table>"
    )
    bad_lines = report.get("ingest", {}).get("malformed_lines") or []
    if bad_lines:
        parts.append(
            "<p class='bad'>Malformed log lines skipped (left in place in their files):</p><ul>"
            + "".join(
                f"<li><code>{e(b['file'])}:{b['line']}</code> (byte {b['offset']}): {e(b['reason'])}</li>"
                for b in bad_lines
            )
            + "</ul>"
        )

    parts.append("<h2>Production performance (failure class) vs training</h2>")
    parts.append(
        "<table><tr><th class='l'>version</th><th>window rows</th><th>first / last</th><th>coverage</th>"
        "<th>error rate</th><th>precision</th><th>recall</th><th>F1</th><th class='l'>checks</th></tr>"
    )
    for v, perf in (report.get("performance") or {}).items():
        prod, train = perf["production"], perf.get("training") or {}
        cov = perf["label_coverage"]
        checks = "; ".join(f"{k}: {c['status']}" for k, c in perf["checks"].items())
        row_cls = " class='fired'" if any(c["fired"] for c in perf["checks"].values()) else ""
        cells = "".join(
            f"<td>{_fmt(prod.get(m))} <small>(train {_fmt(train.get(m))})</small></td>"
            for m in ("error_rate", "precision", "recall", "f1")
        )
        parts.append(
            f"<tr{row_cls}><td class='l'>{e(v)}</td><td>{perf['window']['rows']}</td>"
            f"<td><small>{e(str(perf['window']['first_time']))}<br>{e(str(perf['window']['last_time']))}</small></td>"
            f"<td>{cov['labelled']}/{cov['predictions']} ({_fmt(cov['coverage'])})</td>{cells}<td class='l'>{e(checks)}</td></tr>"
        )
    parts.append("</table>")

    ref_info = drift.get("reference") or {}
    parts.append(f"<h2>Drift: production window vs training data of {e(str(ref_info.get('model_version')))}</h2>")
    parts.append(
        f"<p>Reference <code>{e(str(ref_info.get('path')))}</code> ({e(str(ref_info.get('data_version')))}, "
        f"{drift.get('n_reference')} rows); production window {drift.get('n_production')} predictions "
        f"({e(str((drift.get('window') or {}).get('first_time')))} to {e(str((drift.get('window') or {}).get('last_time')))}); "
        f"status {e(str(drift.get('status')))}.</p>"
    )
    if drift.get("features"):
        parts.append(
            "<table><tr><th class='l'>feature</th><th>test</th><th>statistic</th><th>p-value</th><th>effect size</th>"
            "<th>n train</th><th>n production</th><th>flagged</th></tr>"
        )
        for name, f in drift["features"].items():
            eff = ", ".join(f"{k} {_fmt(v)}" for k, v in f["effect_size"].items())
            cls = " class='fired'" if f["flagged"] else ""
            parts.append(
                f"<tr{cls}><td class='l'>{e(name)}</td><td>{e(f['test'])}</td><td>{_fmt(f['statistic'])}</td>"
                f"<td>{_fmt(f['p_value'])}</td><td>{e(eff)}</td><td>{f['n_reference']}</td><td>{f['n_production']}</td>"
                f"<td>{'yes' if f['flagged'] else 'no'}</td></tr>"
            )
        parts.append("</table>")
    if reference is not None and production is not None and len(production) and drift.get("features"):
        parts.append(
            f"<img alt='training vs production distributions' src='data:image/png;base64,{distribution_plot(reference, production, drift)}'>"
        )
    hist = history_plot(history, psi_threshold=((report.get("settings") or {}).get("thresholds") or {}).get("psi"))
    if hist:
        parts.append(f"<h2>Over time</h2><img alt='metrics over time' src='data:image/png;base64,{hist}'>")
    if trig.get("status") == "sent":
        parts.append(
            f"<h2>Retrain message</h2><p>id <code>{e(trig['message_id'])}</code> on <code>{e(trig['queue'])}</code>: {e(trig['reason'])}</p>"
        )
    parts.append(
        f"<p><small>JSON: <code>{e(str(report.get('paths', {}).get('json')))}</code></small></p></body></html>"
    )
    return "\n".join(parts)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.2e}"
        return f"{x:.3f}"
    return str(x)
