"""Per-feature drift of production inputs against a model's training data.

The features are the dataset's (config.yaml `dataset:`), in order. A numeric feature: the two-sample
Kolmogorov-Smirnov test (scipy.stats.ks_2samp) and the population stability index over 10 quantile bins of
the training data (symmetric KL divergence of the binned shares, scipy.special.rel_entr). A categorical
feature: the chi-square test of the 2 x k contingency table of its levels (scipy.stats.chi2_contingency)
with Cramer's V as effect size.

A numeric feature is flagged when PSI > thresholds.psi AND the KS p-value < thresholds.ks_pvalue:
the effect must be large enough to matter and the sample large enough to be sure of it. A categorical
feature is flagged when the chi-square p-value < thresholds.chi2_pvalue. Nothing is flagged below
`min_samples` production rows. The result is a typed `DriftReport` (part of the monitor's report), each
feature with its unit and description.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import special, stats

from services.monitor.rows import Window
from shared.config import Thresholds
from shared.dataset import CategoricalColumn, DatasetConfig

PSI_BINS = 10  # default; the monitor uses monitoring.thresholds.psi_bins
# Share given to an empty bin so that PSI stays finite (the usual convention).
PSI_EPS = 1e-4


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


def numeric_drift(reference: np.ndarray, production: np.ndarray, *, thresholds: Thresholds) -> NumericDrift:
    reference = np.asarray(reference, dtype=np.float64)
    production = np.asarray(production, dtype=np.float64)
    ks = stats.ks_2samp(reference, production)
    value, edges, ref_shares, prod_shares = psi(reference, production, bins=thresholds.psi_bins)
    ref_std = float(reference.std(ddof=1)) if len(reference) > 1 else float("nan")
    mean_shift = float(production.mean() - reference.mean())
    flagged = bool(value > thresholds.psi and ks.pvalue < thresholds.ks_pvalue)
    return NumericDrift(
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
        thresholds={"psi": thresholds.psi, "ks_pvalue": thresholds.ks_pvalue},
        flagged=flagged,
    )


def categorical_drift(
    reference: pd.Series, production: pd.Series, *, levels: list[str], thresholds: Thresholds
) -> CategoricalDrift:
    """Levels in their declared order; a level absent from both samples is left out of the table."""
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
    flagged = bool(p_value < thresholds.chi2_pvalue)
    return CategoricalDrift(
        statistic=_num(statistic),
        p_value=_num(p_value),
        dof=dof,
        effect_size={"cramers_v": _num(cramers_v)},
        n_reference=int(len(reference)),
        n_production=int(len(production)),
        categories=categories,
        reference=CategoryCounts(counts=ref_counts, share=[_num(c / max(len(reference), 1)) for c in ref_counts]),
        production=CategoryCounts(counts=prod_counts, share=[_num(c / max(len(production), 1)) for c in prod_counts]),
        thresholds={"chi2_pvalue": thresholds.chi2_pvalue},
        flagged=flagged,
    )


def drift_report(
    reference: pd.DataFrame,
    production: pd.DataFrame,
    *,
    dataset: DatasetConfig,
    thresholds: Thresholds,
    min_samples: int,
) -> DriftReport:
    """Every feature's test, effect size and sample sizes, in feature order; `flagged` lists the drifted ones."""
    n_prod = len(production)
    if n_prod < min_samples:
        return DriftReport(
            status="insufficient_data", n_reference=len(reference), n_production=n_prod, min_samples=min_samples
        )
    features: dict[str, NumericDrift | CategoricalDrift] = {}
    for c in dataset.features:
        ref, prod = reference[c.name], production[c.name]
        if isinstance(c, CategoricalColumn):
            cat = categorical_drift(ref, prod, levels=c.levels, thresholds=thresholds)
            features[c.name] = cat.model_copy(update={"description": c.description})
        else:
            num = numeric_drift(ref.to_numpy(), prod.to_numpy(), thresholds=thresholds)
            features[c.name] = num.model_copy(update={"unit": c.unit, "description": c.description})
    return DriftReport(
        status="ok",
        n_reference=len(reference),
        n_production=n_prod,
        min_samples=min_samples,
        features=features,
        flagged=[name for name, f in features.items() if f.flagged],
    )


def _num(x: float) -> float | None:
    """JSON-safe float: NaN and infinities become null."""
    x = float(x)
    return x if math.isfinite(x) else None
