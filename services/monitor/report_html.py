"""The HTML report, rendered from the typed report (services.monitor.report_model.MonitorReport).

Self-contained (plots embedded as PNG) so it opens from the volume in any browser: the checks and whether
they fired, performance per model version against training, drift per dataset feature (name, unit, test,
p-value, effect size and sample sizes), train vs production distributions, metrics over time. Pure: returns
the page's text.
"""

from __future__ import annotations

import html

import pandas as pd

from services.monitor.drift import DriftReport, NumericDrift
from services.monitor.estimate_html import estimate_section
from services.monitor.plots import distribution_plot, fmt, history_plot
from services.monitor.report_model import HistoryEntry, IngestSummary, MonitorReport, VersionPerformance

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right} th{background:#f3f3f3} td.l,th.l{text-align:left}
tr.fired td{background:#fde2e2} .ok{color:#2a7a2a} .bad{color:#b00020;font-weight:bold} img{max-width:100%}
code{background:#f6f6f6;padding:1px 4px}
"""
PNG = "data:image/png;base64,"


def e(x: object) -> str:
    return html.escape(str(x))


def render_html(
    report: MonitorReport,
    *,
    history: list[HistoryEntry],
    reference: pd.DataFrame | None,
    production: pd.DataFrame | None,
) -> str:
    trig = report.trigger
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Clockwork monitor {e(report.created_at)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Clockwork monitor report</h1><p>{e(report.created_at)} &middot; cycle {report.cycle} &middot; "
        f"serving <b>{e(report.serving_version)}</b> (pinned {e(report.pinned_version)})</p>",
    ]
    fired = report.fired
    status = (
        f"<span class='bad'>{len(fired)} check(s) fired: {e(', '.join(fired))}</span>"
        if fired
        else "<span class='ok'>no check fired</span>"
    )
    detail = (trig.message_id or trig.reason or "") if trig else ""
    parts.append(f"<p>{status}. Retrain trigger: <b>{e(trig.status if trig else None)}</b> {e(detail)}</p>")
    if report.ingest:
        parts += _ingest(report.ingest)
    parts += _performance(report.performance)
    parts += estimate_section(report.estimate)
    parts += _drift(report.drift)
    if reference is not None and production is not None and len(production) and report.drift.features:
        plot = distribution_plot(reference, production, report.drift)
        parts.append(f"<img alt='training vs production distributions' src='{PNG}{plot}'>")
    hist = history_plot(history, psi_threshold=report.settings.thresholds.psi)
    if hist:
        parts.append(f"<h2>Over time</h2><img alt='metrics over time' src='{PNG}{hist}'>")
    if trig and trig.status == "sent":
        parts.append(
            f"<h2>Retrain message</h2><p>id <code>{e(trig.message_id)}</code> on <code>{e(trig.queue)}</code>: "
            f"{e(trig.reason)}</p>"
        )
    json_file = report.paths.json_file if report.paths else None
    parts.append(f"<p><small>JSON: <code>{e(json_file)}</code></small></p></body></html>")
    return "\n".join(parts)


def _ingest(ingest: IngestSummary) -> list[str]:
    figures = ingest.model_dump(exclude={"malformed_lines"})
    parts = [
        "<h2>Data read this cycle</h2><table><tr>"
        + "".join(f"<th>{e(k)}</th>" for k in figures)
        + "</tr><tr>"
        + "".join(f"<td>{e(v)}</td>" for v in figures.values())
        + "</tr></table>"
    ]
    if ingest.malformed_lines:
        parts.append(
            "<p class='bad'>Malformed log lines skipped (left in place in their files):</p><ul>"
            + "".join(
                f"<li><code>{e(b.file)}:{b.line}</code> (byte {b.offset}): {e(b.reason)}</li>"
                for b in ingest.malformed_lines
            )
            + "</ul>"
        )
    return parts


def _performance(performance: dict[str, VersionPerformance]) -> list[str]:
    parts = [
        "<h2>Production performance (failure class) vs training</h2>",
        "<table><tr><th class='l'>version</th><th>window rows</th><th>first / last</th><th>coverage</th>"
        "<th>error rate</th><th>precision</th><th>recall</th><th>F1</th><th class='l'>checks</th></tr>",
    ]
    for v, perf in performance.items():
        prod, train, cov, win = perf.production, perf.training, perf.label_coverage, perf.window
        checks = "; ".join(f"{k}: {c.status}" for k, c in perf.checks.items())
        row_cls = " class='fired'" if any(c.fired for c in perf.checks.values()) else ""
        cells = "".join(
            f"<td>{fmt(getattr(prod, m))} <small>(train {fmt(getattr(train, m) if train else None)})</small></td>"
            for m in ("error_rate", "precision", "recall", "f1")
        )
        parts.append(
            f"<tr{row_cls}><td class='l'>{e(v)}</td><td>{win.rows}</td>"
            f"<td><small>{e(win.first_time)}<br>{e(win.last_time)}</small></td>"
            f"<td>{cov.labelled}/{cov.predictions} ({fmt(cov.coverage)})</td>{cells}"
            f"<td class='l'>{e(checks)}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _drift(drift: DriftReport) -> list[str]:
    ref = drift.reference
    window = drift.window
    parts = [
        f"<h2>Drift: production window vs training data of {e(ref.model_version if ref else None)}</h2>",
        f"<p>Reference <code>{e(ref.path if ref else None)}</code> ({e(ref.data_version if ref else None)}, "
        f"{drift.n_reference} rows); production window {drift.n_production} predictions "
        f"({e(window.first_time if window else None)} to {e(window.last_time if window else None)}); "
        f"status {e(drift.status)}.</p>",
    ]
    if drift.features:
        parts.append(
            "<table><tr><th class='l'>feature</th><th>test</th><th>statistic</th><th>p-value</th><th>effect size</th>"
            "<th>n train</th><th>n production</th><th>flagged</th></tr>"
        )
        for name, f in drift.features.items():
            eff = ", ".join(f"{k} {fmt(v)}" for k, v in f.effect_size.items())
            cls = " class='fired'" if f.flagged else ""
            unit = f" [{f.unit}]" if isinstance(f, NumericDrift) and f.unit else ""
            title = f" title='{e(f.description)}'" if f.description else ""
            parts.append(
                f"<tr{cls}><td class='l'{title}>{e(name)}{e(unit)}</td><td>{e(f.test)}</td><td>{fmt(f.statistic)}</td>"
                f"<td>{fmt(f.p_value)}</td><td>{e(eff)}</td><td>{f.n_reference}</td><td>{f.n_production}</td>"
                f"<td>{'yes' if f.flagged else 'no'}</td></tr>"
            )
        parts.append("</table>")
    return parts
