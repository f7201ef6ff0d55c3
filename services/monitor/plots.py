"""The report's plots: training vs production distributions and metrics over time, as base64 PNG.

Drawn from the typed drift report and the history: one panel per dataset feature, whatever the dataset.

matplotlib's object API only (no pyplot, no global state, no display needed), so the monitor can draw
in any thread of a headless container.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from services.monitor.drift import CategoricalDrift, DriftReport
from services.monitor.report_model import HistoryEntry


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def distribution_plot(reference: pd.DataFrame, production: pd.DataFrame, drift: DriftReport) -> str:
    """One panel per feature of the drift report: histograms of a numeric one (title with its unit, PSI and KS
    p-value), level shares of a categorical one (chi-square p-value); a drifted feature's title in red."""
    features = drift.features
    n = max(len(features), 1)
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(5 * ncols, 4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax in axes[len(features) :]:
        ax.set_visible(False)
    for ax, (col, f) in zip(axes, features.items(), strict=False):
        flag = "DRIFT " if f.flagged else ""
        color = "red" if f.flagged else "black"
        if isinstance(f, CategoricalDrift):
            _level_bars(ax, reference[col].astype(str), production[col].astype(str), f.categories)
            ax.set_title(
                f"{flag}{col} (share)\nV {fmt(f.effect_size.get('cramers_v'))}, {_p(drift, f.p_adjusted)}",
                color=color,
                fontsize=10,
            )
        else:
            _histograms(ax, reference[col].to_numpy(dtype=float), production[col].to_numpy(dtype=float))
            unit = f" [{f.unit}]" if f.unit else ""
            ax.set_title(
                f"{flag}{col}{unit}\nPSI {fmt(f.effect_size.get('psi'))}, {_p(drift, f.p_adjusted)}",
                color=color,
                fontsize=10,
            )
        ax.legend(fontsize=8)
    return _png(fig)


def _histograms(ax: Axes, ref: np.ndarray, prod: np.ndarray) -> None:
    lo, hi = float(min(ref.min(), prod.min())), float(max(ref.max(), prod.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 40).tolist()
    for values, label, color in ((ref, "training", "tab:blue"), (prod, "production", "tab:orange")):
        ax.hist(
            values,
            bins=bins,
            density=True,
            histtype="stepfilled",
            alpha=0.5,
            label=f"{label} (n={len(values)})",
            color=color,
        )


def _level_bars(ax: Axes, reference: pd.Series, production: pd.Series, levels: list[str]) -> None:
    x = np.arange(len(levels))
    ref_share = [float((reference == c).mean()) for c in levels]
    prod_share = [float((production == c).mean()) if len(production) else 0.0 for c in levels]
    ax.bar(x - 0.2, ref_share, 0.4, label="training", color="tab:blue", alpha=0.7)
    ax.bar(x + 0.2, prod_share, 0.4, label="production", color="tab:orange", alpha=0.7)
    ax.set_xticks(x, levels)


def history_plot(history: list[HistoryEntry], *, psi_threshold: float | None = None) -> str | None:
    """Metrics per version and drift effect sizes over time, as a PNG (None: no history yet)."""
    fig = history_figure(history, psi_threshold=psi_threshold)
    return _png(fig) if fig else None


def history_figure(history: list[HistoryEntry], *, psi_threshold: float | None = None) -> Figure | None:
    if not history:
        return None
    times = pd.to_datetime([h.time for h in history])
    fig = Figure(figsize=(15, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    versions = sorted({v for h in history for v in h.versions}, key=lambda v: int(v[1:]) if v[1:].isdigit() else 0)
    for v in versions:
        points = [h.versions.get(v) for h in history]
        for metric, style in (("f1", "-"), ("error_rate", ":")):
            ys = _series([getattr(p, metric) if p else None for p in points])
            if not all(np.isnan(ys)):
                (line,) = ax1.plot(times, ys, style, marker=".", label=f"{v} {metric}")
                trained = [getattr(p, f"training_{metric}") for p in points if p]
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
    for col in dict.fromkeys(name for h in history for name in h.drift):  # every feature, first seen first
        drift_points = [h.drift.get(col) for h in history]
        categorical = any(p is not None and p.cramers_v is not None for p in drift_points)
        key = "cramers_v" if categorical else "psi"
        ys = _series([getattr(p, key) if p else None for p in drift_points])
        if not all(np.isnan(ys)):
            ax2.plot(times, ys, marker=".", label=f"{col} ({'V' if categorical else 'PSI'})")
    if psi_threshold is not None:
        ax2.axhline(psi_threshold, color="red", linestyle="--", linewidth=0.8, label=f"PSI threshold {psi_threshold}")
    # symlog: linear near 0 (where the thresholds are), logarithmic above 1 so that PSI 6 and more stays on the
    # page; the top always leaves room above the largest value, the ticks are plain numbers.
    ax2.set_yscale("symlog", linthresh=0.1)
    ax2.set_ylim(0, _effect_top(history))
    ticks = [t for t in EFFECT_TICKS if t <= _effect_top(history)]
    ax2.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax2.set_title("drift effect size over time")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8)
    # A short history (one cycle, a few minutes) would otherwise get an axis spanning years.
    pad = max((times.max() - times.min()) * 0.05, pd.Timedelta(minutes=5))
    for ax in (ax1, ax2):
        ax.set_xlim(times.min() - pad, times.max() + pad)
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # 20:31 ... with the day once, at the end
    return fig


EFFECT_TICKS = (0, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def _effect_top(history: list[HistoryEntry]) -> float:
    """The effect-size axis' top: at least 10 (a PSI of 6 is common when a sensor drifts), else 1.5 x the
    largest value drawn."""
    values = [
        v for h in history for p in h.drift.values() for v in (p.psi, p.cramers_v) if v is not None and np.isfinite(v)
    ]
    return max(10.0, 1.5 * max(values, default=0.0))


def _p(drift: DriftReport, p: float | None) -> str:
    adjusted = drift.correction not in (None, "none")
    return f"{drift.correction} p {fmt(p)}" if adjusted else f"p {fmt(p)}"


def _series(values: list[float | None]) -> list[float]:
    return [np.nan if y is None else y for y in values]


def fmt(x: object) -> str:
    """A figure for a page: 3 decimals, scientific when tiny or huge, "-" for none."""
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.2e}"
        return f"{x:.3f}"
    return str(x)
