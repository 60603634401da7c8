"""Whether a point's timing can be trusted, judged from its own samples (``stable`` and
``unstable_why`` columns).

A point is **unstable** when any of these holds (thresholds in :class:`StabilityRules`):

- *spread*: IQR / median above ``max_rel_iqr`` (15 %: for normal samples about pyperf's "standard
  deviation above 10 % of the mean", since an IQR is 1.35 standard deviations): the samples
  disagree with each other;
- *outliers*: more than ``max_outlier_frac`` (10 %, and at least 2) of the samples lie beyond
  ``outlier_iqr_k`` (3) IQRs outside the quartiles, with at least ``min_outlier_samples`` (10)
  samples (the quartiles of fewer are too rough): something else ran now and then (pyperf and
  hyperfine warn on the same sign);
- *trend*: the samples drift across the sampling window (Kendall's tau, two-sided p below
  ``trend_alpha`` with at least ``min_trend_samples`` samples) by more than ``min_trend_rel``
  (5 %) of the median between the first and the last third: the machine warmed, throttled or
  got busier while the point ran.

When an unstable point's sampling stopped on the budget with the spread above the timer's
``target_rel_iqr``, the reasons say so too (it wanted more samples than the budget allowed; the
timer keeps sampling an unstable point until then). Too few samples (fewer than 3) cannot be
judged: ``stable`` is then None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau

MIN_SAMPLES_TO_JUDGE = 3


@dataclass(frozen=True)
class StabilityRules:
    """Thresholds of the verdict; see the module docstring."""

    max_rel_iqr: float = 0.15
    outlier_iqr_k: float = 3.0
    max_outlier_frac: float = 0.10
    min_outlier_samples: int = 10
    trend_alpha: float = 0.01
    min_trend_rel: float = 0.05
    min_trend_samples: int = 8


@dataclass(frozen=True)
class Verdict:
    """stable: True, False, or None when there are too few samples to judge; why: the reasons
    (empty when stable), each a short phrase with its figure."""

    stable: bool | None
    why: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return "; ".join(self.why)


def judge(samples_ms: Sequence[float], *, stopped_on_budget: bool = False, target_rel_iqr: float = 0.0,
          rules: StabilityRules | None = None) -> Verdict:
    """The stability verdict of one point's samples (in the order they were taken)."""
    r = rules or StabilityRules()
    x = np.asarray([v for v in samples_ms if np.isfinite(v)], dtype=float)
    if x.size < MIN_SAMPLES_TO_JUDGE:
        return Verdict(None, (f"{x.size} sample(s): too few to judge",))
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    iqr = float(q3 - q1)
    rel = iqr / med if med > 0 else 0.0
    why = []
    if rel > r.max_rel_iqr:
        why.append(f"spread: IQR {rel:.0%} of the median")
    lo, hi = q1 - r.outlier_iqr_k * iqr, q3 + r.outlier_iqr_k * iqr
    n_out = int(((x < lo) | (x > hi)).sum()) if iqr > 0 and x.size >= r.min_outlier_samples else 0
    if n_out >= 2 and n_out / x.size > r.max_outlier_frac:
        why.append(f"outliers: {n_out} of {x.size} samples beyond {r.outlier_iqr_k:g} IQR")
    drift = _trend(x, float(med), r)
    if drift is not None:
        why.append(f"trend: samples drifted {drift:+.0%} across the sampling window")
    unstable = bool(why)
    if unstable and stopped_on_budget and rel >= target_rel_iqr > 0:
        why.append(f"the budget ran out at {x.size} samples, before the spread fell under "
                   f"{target_rel_iqr:.0%}")
    return Verdict(not unstable, tuple(why))


def _trend(x: np.ndarray, med: float, r: StabilityRules) -> float | None:
    """Relative drift (last third's median - first third's, over the median) when the samples
    trend significantly and by more than ``min_trend_rel``; else None."""
    n = x.size
    if n < r.min_trend_samples or med <= 0:
        return None
    res = kendalltau(np.arange(n), x)
    if not np.isfinite(res.pvalue) or res.pvalue >= r.trend_alpha:
        return None
    third = max(1, n // 3)
    drift = float(np.median(x[-third:]) - np.median(x[:third])) / med
    return drift if abs(drift) > r.min_trend_rel else None
