"""The HTML report, rendered from the typed report (services.monitor.report_model.MonitorReport).

Self-contained (plots embedded as PNG) so it opens from the volume in any browser: the headline (what fired,
how many features drifted, what the trigger did), the data read, performance per model version against
training, drift per dataset feature (sample sizes, raw and adjusted p-value, effect size, verdict), train vs
production distributions, metrics over time, and what was done about earlier messages (services.monitor.
report_actions: message -> job -> candidate -> shadow and gate -> pin -> swap, with their ids and times).

The page is a list of sections, each a function of the report returning its HTML (`SECTIONS`); a section with
nothing to say returns "". It fits a 1280 px window: long values wrap inside their cells, plots scale to the
page width, times read as `2026-01-02 03:04:05 UTC`. Pure: returns the page's text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from services.monitor.drift import DriftReport, NumericDrift
from services.monitor.estimate_html import estimate_section
from services.monitor.htmlfmt import e, when
from services.monitor.plots import distribution_plot, fmt, history_plot
from services.monitor.report_actions import actions_section
from services.monitor.report_model import HistoryEntry, IngestSummary, MonitorReport, VersionPerformance

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1216px}
table{border-collapse:collapse;margin:1em 0;max-width:100%}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top;white-space:nowrap}
th{background:#f3f3f3;white-space:normal} td.l,th.l{text-align:left;white-space:normal;overflow-wrap:break-word}
tr.fired td{background:#fde2e2} .ok{color:#2a7a2a} .bad{color:#b00020;font-weight:bold} .muted{color:#666}
img{max-width:100%;height:auto;display:block} code{background:#f6f6f6;padding:1px 4px;overflow-wrap:anywhere}
p,li{overflow-wrap:break-word} h3{margin-bottom:0}
table.chain{width:100%} table.chain td:nth-child(2){width:20em} table.chain td:nth-child(3){white-space:nowrap}
"""
PNG = "data:image/png;base64,"


@dataclass(frozen=True)
class Page:
    """What a section may draw from: the report and what the cycle measured it on."""

    report: MonitorReport
    history: list[HistoryEntry]
    reference: pd.DataFrame | None
    production: pd.DataFrame | None


def render_html(
    report: MonitorReport,
    *,
    history: list[HistoryEntry],
    reference: pd.DataFrame | None,
    production: pd.DataFrame | None,
) -> str:
    page = Page(report=report, history=history, reference=reference, production=production)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Clockwork monitor {e(when(report.created_at))}"
        f"</title><meta name='viewport' content='width=device-width'><style>{CSS}</style></head><body>",
        *(section(page) for section in SECTIONS),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


# --- sections, in page order ------------------------------------------------------------------------
def headline(page: Page) -> str:
    report, trig = page.report, page.report.trigger
    fired = report.fired
    status = (
        f"<span class='bad'>{len(fired)} check(s) fired: {e(', '.join(fired))}</span>"
        if fired
        else "<span class='ok'>no check fired</span>"
    )
    detail = ""
    if trig and trig.message_id:
        detail = f"<code>{e(trig.message_id)}</code>"
    elif trig and trig.reason:
        detail = e(trig.reason)
    return (
        f"<h1>Clockwork monitor report</h1><p>{e(when(report.created_at))} &middot; cycle {report.cycle} &middot; "
        f"serving <b>{e(report.serving_version)}</b> (pinned {e(report.pinned_version)})</p>"
        f"<p>{status}.<br>{drift_headline(report.drift)}<br>"
        f"Retrain trigger: <b>{e(trig.status if trig else None)}</b> {detail}</p>"
    )


def drift_headline(drift: DriftReport) -> str:
    """How many features drifted, in words; never "ok" when one is flagged."""
    if drift.status == "insufficient_data":
        return f"Drift not measured: {drift.n_production} production rows, fewer than the {drift.min_samples} it needs."
    if drift.status == "no_reference":
        return f"Drift not measured: no training data to compare with ({e(drift.reason)})."
    n, rule = len(drift.features), _rule(drift)
    if drift.flagged:
        return (
            f"<span class='bad'>Drift: {len(drift.flagged)} of {n} features flagged</span> "
            f"({e(', '.join(drift.flagged))}; {e(rule)})."
        )
    return f"<span class='ok'>Drift: none of {n} features flagged</span> ({e(rule)})."


def ingest_section(page: Page) -> str:
    ingest: IngestSummary | None = page.report.ingest
    if ingest is None:
        return ""
    figures = ingest.model_dump(exclude={"malformed_lines"})
    out = (
        "<h2>Data read this cycle</h2><table><tr>"
        + "".join(f"<th>{e(k.replace('_', ' '))}</th>" for k in figures)
        + "</tr><tr>"
        + "".join(f"<td>{e(v)}</td>" for v in figures.values())
        + "</tr></table>"
    )
    if ingest.malformed_lines:
        out += (
            "<p class='bad'>Malformed log lines skipped (left in place in their files):</p><ul>"
            + "".join(
                f"<li><code>{e(b.file)}:{b.line}</code> (byte {b.offset}): {e(b.reason)}</li>"
                for b in ingest.malformed_lines
            )
            + "</ul>"
        )
    return out


def performance_section(page: Page) -> str:
    performance: dict[str, VersionPerformance] = page.report.performance
    parts = [
        "<h2>Production performance (failure class) vs training</h2>",
        "<table><tr><th class='l'>version</th><th>window rows</th><th>first / last prediction</th><th>coverage</th>"
        "<th>error rate</th><th>precision</th><th>recall</th><th>F1</th><th class='l'>checks</th></tr>",
    ]
    for v, perf in performance.items():
        prod, train, cov, win = perf.production, perf.training, perf.label_coverage, perf.window
        checks = "; ".join(f"{k}: {c.status}" for k, c in perf.checks.items())
        row_cls = " class='fired'" if any(c.fired for c in perf.checks.values()) else ""
        cells = "".join(
            f"<td>{fmt(getattr(prod, m))}<br><small>train {fmt(getattr(train, m) if train else None)}</small></td>"
            for m in ("error_rate", "precision", "recall", "f1")
        )
        parts.append(
            f"<tr{row_cls}><td class='l'>{e(v)}</td><td>{win.rows}</td>"
            f"<td><small>{e(when(win.first_time))}<br>{e(when(win.last_time))}</small></td>"
            f"<td>{cov.labelled}/{cov.predictions} ({fmt(cov.coverage)})</td>{cells}"
            f"<td class='l'>{e(checks)}</td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)


def estimate_block(page: Page) -> str:
    """The label-free estimate beside the realized figures (services/monitor/estimate_html.py)."""
    return "\n".join(estimate_section(page.report.estimate))


def drift_section(page: Page) -> str:
    drift = page.report.drift
    ref, window = drift.reference, drift.window
    parts = [
        f"<h2>Drift: production window vs training data of {e(ref.model_version if ref else None)}</h2>",
        f"<p>{drift_headline(drift)} Reference <code>{e(ref.path if ref else None)}</code> "
        f"({e(ref.data_version if ref else None)}, {drift.n_reference} rows); production window "
        f"{drift.n_production} predictions ({e(when(window.first_time if window else None))} to "
        f"{e(when(window.last_time if window else None))}).</p>",
    ]
    if drift.features:
        adjusted = f"p ({e(drift.correction)})" if drift.correction and drift.correction != "none" else "p used"
        parts.append(
            "<table><tr><th class='l'>feature</th><th>test</th><th>n reference</th><th>n window</th>"
            f"<th>statistic</th><th>p raw</th><th>{adjusted}</th><th class='l'>effect size</th>"
            "<th class='l'>verdict</th></tr>"
        )
        for name, f in drift.features.items():
            main = "psi" if isinstance(f, NumericDrift) else "cramers_v"
            rest = ", ".join(f"{k} {fmt(v)}" for k, v in f.effect_size.items() if k != main)
            limit = f.thresholds.get(main)
            eff = f"<b>{e(main)} {fmt(f.effect_size.get(main))}</b> <small>(&gt; {fmt(limit)})</small>"
            eff += f"<br><small class='muted'>{e(rest)}</small>" if rest else ""
            cls = " class='fired'" if f.flagged else ""
            unit = f" [{f.unit}]" if isinstance(f, NumericDrift) and f.unit else ""
            title = f" title='{e(f.description)}'" if f.description else ""
            verdict = f.verdict or ("drift" if f.flagged else "no drift")
            verdict_html = f"<span class='bad'>{e(verdict)}</span>" if f.flagged else e(verdict)
            parts.append(
                f"<tr{cls}><td class='l'{title}>{e(name)}{e(unit)}</td><td>{e(f.test)}</td>"
                f"<td>{f.n_reference}</td><td>{f.n_production}</td><td>{fmt(f.statistic)}</td>"
                f"<td>{fmt(f.p_value)}</td><td>{fmt(f.p_adjusted)}</td><td class='l'>{eff}</td>"
                f"<td class='l'>{verdict_html}</td></tr>"
            )
        parts.append("</table>")
    return "".join(parts)


def distributions_section(page: Page) -> str:
    reference, production, drift = page.reference, page.production, page.report.drift
    if reference is None or production is None or not len(production) or not drift.features:
        return ""
    plot = distribution_plot(reference, production, drift)
    return f"<img alt='training vs production distributions' src='{PNG}{plot}'>"


def history_section(page: Page) -> str:
    hist = history_plot(page.history, psi_threshold=page.report.settings.thresholds.psi)
    return f"<h2>Over time</h2><img alt='metrics over time' src='{PNG}{hist}'>" if hist else ""


def trigger_section(page: Page) -> str:
    trig = page.report.trigger
    if not (trig and trig.status == "sent"):
        return ""
    return (
        f"<h2>Retrain message sent this cycle</h2><p>id <code>{e(trig.message_id)}</code> on "
        f"<code>{e(trig.queue)}</code>: {e(trig.reason)}</p>"
    )


def what_was_done(page: Page) -> str:
    return actions_section(page.report.actions)


def footer(page: Page) -> str:
    json_file = page.report.paths.json_file if page.report.paths else None
    return f"<p><small>JSON: <code>{e(json_file)}</code></small></p>"


SECTIONS: list[Callable[[Page], str]] = [
    headline,
    ingest_section,
    performance_section,
    estimate_block,
    drift_section,
    distributions_section,
    history_section,
    trigger_section,
    what_was_done,
    footer,
]


def _rule(drift: DriftReport) -> str:
    alpha = f"{drift.alpha:g}" if drift.alpha is not None else "-"
    adjusted = "p" if drift.correction in (None, "none") else f"{drift.correction}-adjusted p"
    return f"flagged: {adjusted} < {alpha} and effect size above its threshold"
