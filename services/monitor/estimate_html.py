"""The HTML report's label-free estimate section (services.monitor.estimate): per model version the estimate on
predictions still waiting for their label, and on labelled rows the estimate beside the realized figures with
its absolute error. Pure: returns the section's text."""

from __future__ import annotations

import html

from services.monitor.estimate import FIGURES, Figures, VersionEstimate
from services.monitor.plots import fmt

NAMES = {"precision": "precision", "recall": "recall", "f1": "F1", "expected_cost_per_1000": "cost / 1,000"}


def _cells(f: Figures | None) -> str:
    if f is None:
        return "".join("<td>-</td>" for _ in FIGURES)
    return "".join(f"<td>{fmt(getattr(f, m))}</td>" for m in FIGURES)


def estimate_section(estimates: dict[str, VersionEstimate]) -> list[str]:
    if not estimates:
        return []
    head = "".join(f"<th>{NAMES[m]}</th>" for m in FIGURES)
    parts = [
        "<h2>Label-free estimate (from calibrated probabilities)</h2>",
        "<p>Expected confusion matrix of the served decisions: a flagged reading counts p as a true alarm and 1 - p "
        "as a false one, an unflagged reading p as a missed failure. On labelled rows the same estimate, made "
        "without their labels, stands beside the realized figures.</p>",
        f"<table><tr><th class='l'>version</th><th class='l'>rows</th><th>n</th>{head}</tr>",
    ]
    for v, est in estimates.items():
        lab = est.labelled
        if est.caveat:
            parts.insert(2, f"<p class='bad'>{html.escape(v)}: {html.escape(est.caveat)}</p>")
        rows = [("waiting for labels: estimate", est.unlabelled)]
        if lab is not None:
            rows += [("labelled: estimate", lab.estimated), ("labelled: realized", lab.realized)]
        for what, f in rows:
            parts.append(
                f"<tr><td class='l'>{html.escape(v)}</td><td class='l'>{what}</td><td>{f.rows if f else 0}</td>"
                f"{_cells(f)}</tr>"
            )
        if lab is not None:
            err = "".join(f"<td>{fmt(lab.abs_error[m])}</td>" for m in FIGURES)
            parts.append(
                f"<tr><td class='l'>{html.escape(v)}</td><td class='l'>|estimate - realized|</td><td></td>{err}</tr>"
            )
    parts.append("</table>")
    return parts
