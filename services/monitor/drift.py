"""Per-feature drift of production inputs against a model's training data.

The features are the dataset's (config.yaml `dataset:`), in order. A numeric feature: the two-sample
Kolmogorov-Smirnov test (scipy.stats.ks_2samp) and the population stability index over 10 quantile bins of
the training data (symmetric KL divergence of the binned shares, scipy.special.rel_entr). A categorical
feature: the chi-square test of the 2 x k contingency table of its levels (scipy.stats.chi2_contingency)
with Cramer's V as effect size.

The features' tests form one family (`monitoring.drift`): their p-values are adjusted together (`holm`: Holm's
step-down, family-wise error rate; `bh`: Benjamini-Hochberg, false discovery rate; `none`), and a feature is
flagged when its adjusted p-value < `alpha` AND its effect size passes its threshold (PSI > thresholds.psi,
Cramer's V > thresholds.cramers_v): the effect must be large enough to matter and the sample large enough to be
sure of it, however many features are tested. Each feature's `verdict` says which of the two held. Nothing is
flagged below `min_samples` production rows. The result is a typed `DriftReport` (part of the monitor's report),
each feature with its unit, description, sample sizes, raw and adjusted p-value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import special, stats

from services.monitor.rows import Window
from shared.config import DriftTestConfig, Thresholds
from shared.dataset import CategoricalColumn, DatasetConfig

PSI_BINS = 10  # default; the monitor uses monitoring.thresholds.psi_bins
# Share given to an empty bin so that PSI stays finite (the usual convention).
PSI_EPS = 1e-4

Correction = Literal["holm", "bh", "none"]
# drift: significant and large; small effect: significant, effect below its threshold; not significant: effect
# above its threshold, adjusted p-value not below alpha; no drift: neither.
Verdict = Literal["drift", "small effect", "not significant", "no drift"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NumericSummary(_Model):
    mean: float | None
    std: float | None


class Bins(_Model):
    edges: list[float | None]
    reference_share: list[float | None]
    production_share: list[float | None]


class CategoryCounts(_Model):
    counts: list[int]
    share: list[float | None]


class NumericDrift(_Model):
    kind: Literal["numeric"] = "numeric"
    test: Literal["ks_2samp"] = "ks_2samp"
    unit: str = ""
    description: str = ""
    statistic: float | None
    p_value: float | None
    effect_size: dict[str, float | None]  # psi, ks_d, mean_shift, mean_shift_in_sd
    p_adjusted: float | None = None  # after the family's correction (drift_report)
    verdict: Verdict | None = None
    n_reference: int
    n_production: int
    reference: NumericSummary
    production: NumericSummary
    bins: Bins
    thresholds: dict[str, float]
    flagged: bool


class CategoricalDrift(_Model):
    kind: Literal["categorical"] = "categorical"
    test: Literal["chi2_contingency"] = "chi2_contingency"
    description: str = ""
    statistic: float | None
    p_value: float | None
    p_adjusted: float | None = None
    verdict: Verdict | None = None
    dof: int
    effect_size: dict[str, float | None]  # cramers_v
    n_reference: int
    n_production: int
    categories: list[str]
    reference: CategoryCounts
    production: CategoryCounts
    thresholds: dict[str, float]
    flagged: bool


FeatureDrift = Annotated[NumericDrift | CategoricalDrift, Field(discriminator="kind")]


class ReferenceInfo(_Model):
    """The training table drift is measured against (error: why there is none)."""

    model_version: str | None = None
    data_version: str | None = None
    path: str | None = None
    sha256: str | None = None
    rows: int | None = None
    error: str | None = None


class DriftReport(_Model):
    status: Literal["ok", "insufficient_data", "no_reference"]
    reason: str | None = None
    n_reference: int
    n_production: int
    min_samples: int | None = None
    correction: Correction | None = None
    alpha: float | None = None
    features: dict[str, FeatureDrift] = Field(default_factory=dict)
    flagged: list[str] = Field(default_factory=list)
    reference: ReferenceInfo | None = None
    window: Window | None = None


def quantile_edges(reference: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Interior bin edges at the reference's deciles (duplicates merged for discrete data)."""
    qs = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def binned_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(
    reference: np.ndarray, production: np.ndarray, bins: int = PSI_BINS
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(PSI, edges, reference shares, production shares) with bins from the reference's quantiles."""
    edges = quantile_edges(reference, bins)
    ref = binned_shares(reference, edges)
    prod = binned_shares(production, edges)
    r = np.clip(ref, PSI_EPS, None)
    p = np.clip(prod, PSI_EPS, None)
    r, p = r / r.sum(), p / p.sum()
    value = float(np.sum(special.rel_entr(p, r) + special.rel_entr(r, p)))
    return value, edges, ref, prod


def numeric_drift(
    reference: np.ndarray, production: np.ndarray, *, thresholds: Thresholds, alpha: float
) -> NumericDrift:
    """One feature's test and effect, judged on its own (a family of one: the adjusted p-value is the raw one)."""
    reference = np.asarray(reference, dtype=np.float64)
    production = np.asarray(production, dtype=np.float64)
    ks = stats.ks_2samp(reference, production)
    value, edges, ref_shares, prod_shares = psi(reference, production, bins=thresholds.psi_bins)
    ref_std = float(reference.std(ddof=1)) if len(reference) > 1 else float("nan")
    mean_shift = float(production.mean() - reference.mean())
    return judge(
        NumericDrift(
            statistic=_num(ks.statistic),
            p_value=_num(ks.pvalue),
            effect_size={
                "psi": _num(value),
                "ks_d": _num(ks.statistic),
                "mean_shift": _num(mean_shift),
                "mean_shift_in_sd": _num(mean_shift / ref_std if ref_std else float("nan")),
            },
            n_reference=int(len(reference)),
            n_production=int(len(production)),
            reference=NumericSummary(mean=_num(reference.mean()), std=_num(ref_std)),
            production=NumericSummary(
                mean=_num(production.mean()),
                std=_num(production.std(ddof=1) if len(production) > 1 else float("nan")),
            ),
            bins=Bins(
                edges=[_num(e) for e in edges],
                reference_share=[_num(x) for x in ref_shares],
                production_share=[_num(x) for x in prod_shares],
            ),
            thresholds={"psi": thresholds.psi, "alpha": alpha},
            flagged=False,
        ),
        p_adjusted=_num(ks.pvalue),
    )


def categorical_drift(
    reference: pd.Series, production: pd.Series, *, levels: list[str], thresholds: Thresholds, alpha: float
) -> CategoricalDrift:
    """Levels in their declared order; a level absent from both samples is left out of the table. Judged on its
    own (a family of one), like numeric_drift."""
    reference, production = reference.astype(str), production.astype(str)
    categories = [c for c in levels if (reference == c).any() or (production == c).any()]
    ref_counts = [int((reference == c).sum()) for c in categories]
    prod_counts = [int((production == c).sum()) for c in categories]
    if len(categories) < 2:
        statistic, p_value, dof, cramers_v = 0.0, 1.0, 0, 0.0
    else:
        res = stats.chi2_contingency(np.array([ref_counts, prod_counts]))
        statistic, p_value, dof = float(res.statistic), float(res.pvalue), int(res.dof)
        n = sum(ref_counts) + sum(prod_counts)
        cramers_v = math.sqrt(statistic / (n * (min(2, len(categories)) - 1))) if n else 0.0
    return judge(
        CategoricalDrift(
            statistic=_num(statistic),
            p_value=_num(p_value),
            dof=dof,
            effect_size={"cramers_v": _num(cramers_v)},
            n_reference=int(len(reference)),
            n_production=int(len(production)),
            categories=categories,
            reference=CategoryCounts(counts=ref_counts, share=_shares(ref_counts, len(reference))),
            production=CategoryCounts(counts=prod_counts, share=_shares(prod_counts, len(production))),
            thresholds={"cramers_v": thresholds.cramers_v, "alpha": alpha},
            flagged=False,
        ),
        p_adjusted=_num(p_value),
    )


def drift_report(
    reference: pd.DataFrame,
    production: pd.DataFrame,
    *,
    dataset: DatasetConfig,
    thresholds: Thresholds,
    tests: DriftTestConfig,
    min_samples: int,
) -> DriftReport:
    """Every feature's test, effect size and sample sizes, in feature order, the p-values adjusted as one family
    (`tests.correction`); `flagged` lists the drifted features."""
    n_prod = len(production)
    if n_prod < min_samples:
        return DriftReport(
            status="insufficient_data",
            n_reference=len(reference),
            n_production=n_prod,
            min_samples=min_samples,
            correction=tests.correction,
            alpha=tests.alpha,
        )
    features: dict[str, NumericDrift | CategoricalDrift] = {}
    for c in dataset.features:
        ref, prod = reference[c.name], production[c.name]
        if isinstance(c, CategoricalColumn):
            cat = categorical_drift(ref, prod, levels=c.levels, thresholds=thresholds, alpha=tests.alpha)
            features[c.name] = cat.model_copy(update={"description": c.description})
        else:
            num = numeric_drift(ref.to_numpy(), prod.to_numpy(), thresholds=thresholds, alpha=tests.alpha)
            features[c.name] = num.model_copy(update={"unit": c.unit, "description": c.description})
    adjusted = adjust_pvalues([f.p_value for f in features.values()], tests.correction)
    for (name, f), p in zip(list(features.items()), adjusted, strict=True):
        features[name] = judge(f, p_adjusted=p) if isinstance(f, NumericDrift) else judge(f, p_adjusted=p)
    return DriftReport(
        status="ok",
        n_reference=len(reference),
        n_production=n_prod,
        min_samples=min_samples,
        correction=tests.correction,
        alpha=tests.alpha,
        features=features,
        flagged=[name for name, f in features.items() if f.flagged],
    )


def adjust_pvalues(p_values: Sequence[float | None], correction: Correction) -> list[float | None]:
    """The family's adjusted p-values, in the given order. holm: Holm's step-down (p_(i) x (m - i + 1), made
    non-decreasing); bh: Benjamini-Hochberg's step-up (p_(i) x m / i, made non-decreasing from the top); both
    capped at 1. A test that gave no p-value (None) stays None and is not counted in the family."""
    known = [(i, float(p)) for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    m = len(known)
    if correction == "none" or m == 0:
        for i, p in known:
            out[i] = p
        return out
    ordered = sorted(known, key=lambda ip: ip[1])
    if correction == "holm":
        running = 0.0
        for rank, (i, p) in enumerate(ordered):
            running = max(running, min(1.0, (m - rank) * p))
            out[i] = running
    else:  # bh
        running = 1.0
        for rank in range(m - 1, -1, -1):
            i, p = ordered[rank]
            running = min(running, min(1.0, p * m / (rank + 1)))
            out[i] = running
    return out


Judged = TypeVar("Judged", NumericDrift, CategoricalDrift)


def judge(f: Judged, *, p_adjusted: float | None) -> Judged:
    """`f` with its adjusted p-value, verdict and flag: significant (adjusted p < alpha) and large (the effect
    size above its threshold, PSI for a numeric feature, Cramer's V for a categorical one)."""
    effect = "cramers_v" if isinstance(f, CategoricalDrift) else "psi"
    size = f.effect_size.get(effect)
    large = size is not None and size > f.thresholds[effect]
    significant = p_adjusted is not None and p_adjusted < f.thresholds["alpha"]
    verdict: Verdict = (
        "drift"
        if large and significant
        else "small effect"
        if significant
        else "not significant"
        if large
        else "no drift"
    )
    return f.model_copy(update={"p_adjusted": p_adjusted, "verdict": verdict, "flagged": verdict == "drift"})


def _shares(counts: list[int], n: int) -> list[float | None]:
    return [_num(c / max(n, 1)) for c in counts]


def _num(x: float) -> float | None:
    """JSON-safe float: NaN and infinities become null."""
    x = float(x)
    return x if math.isfinite(x) else None
