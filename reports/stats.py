"""Statistics for comparing two sets of timing samples (pure functions, numpy/scipy only).

- :func:`median_ratio`: effect size, ``median(new) / median(base)`` (> 1 means slower).
- :func:`bootstrap_ratio_ci`: percentile bootstrap CI of that ratio, resampling both sample
  sets with replacement (seeded, vectorised).
- :func:`mann_whitney_p`: two-sided Mann–Whitney U p-value; rank based, so a few outliers
  (a GC pause, a clock dip) do not dominate it the way they dominate a t-test.
- :func:`classify_latency` / :func:`classify_quality`: the verdicts the regression gate uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no change"
NOISE = "noise"
NOT_GATED = "not gated"
CANNOT_JUDGE = "cannot judge"  # the gate lacks what it needs (raw samples, a readable row)
FIXED = "fixed"

_BOOT_CHUNK_ELEMS = 2_000_000  # bound memory: resample at most this many values at once


def _arr(x: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    return a[np.isfinite(a)]


def median_ratio(base: Sequence[float], new: Sequence[float]) -> float:
    """median(new) / median(base); NaN when either is empty, inf when the base median is 0."""
    b, n = _arr(base), _arr(new)
    if b.size == 0 or n.size == 0:
        return math.nan
    mb = float(np.median(b))
    return float(np.median(n)) / mb if mb != 0 else math.inf


def _boot_medians(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    rows = max(1, _BOOT_CHUNK_ELEMS // max(x.size, 1))
    out = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        out[start:stop] = np.median(x[idx], axis=1)
    return out


def bootstrap_ratio_ci(
    base: Sequence[float],
    new: Sequence[float],
    *,
    n_boot: int = 2000,
    rng: np.random.Generator | int | None = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``median(new) / median(base)``.

    Each replicate resamples ``base`` and ``new`` independently with replacement (same sizes)
    and takes the ratio of their medians; the CI is the (1-level)/2 and (1+level)/2 percentiles
    of the replicates. Returns (NaN, NaN) when either set is empty; a bound among replicates whose
    base median is 0 is inf, as :func:`median_ratio` is.
    """
    b, n = _arr(base), _arr(new)
    if b.size == 0 or n.size == 0 or n_boot < 1:
        return math.nan, math.nan
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_ratio_ci: level must be in (0, 1), got {level}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    mb = _boot_medians(b, n_boot, gen)
    mn = _boot_medians(n, n_boot, gen)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mn / mb
        tail = (1 - level) / 2 * 100
        lo, hi = (float(v) for v in np.percentile(ratios, [tail, 100 - tail]))
    # a base median of 0 makes ratios infinite, and interpolating between infinities gives NaN:
    # the bound is then the infinite replicate itself (as median_ratio says inf)
    if math.isnan(lo):
        lo = float(np.percentile(ratios, tail, method="lower"))
    if math.isnan(hi):
        hi = float(np.percentile(ratios, 100 - tail, method="higher"))
    return lo, hi


def smallest_p(n_base: int, n_new: int) -> float:
    """The smallest two-sided Mann–Whitney p-value ``n_base`` vs ``n_new`` samples can give (tie-free,
    exact): 2 / C(n_base + n_new, n_base); 0.1 for 3 vs 3. A gate whose alpha is at or below it
    cannot call any change significant."""
    if n_base < 1 or n_new < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n_base + n_new, n_base))


def mann_whitney_p(base: Sequence[float], new: Sequence[float]) -> float:
    """Two-sided Mann–Whitney U p-value that the two samples come from one distribution.

    NaN when either set is empty; 1.0 when every value in both sets is equal (scipy's normal
    approximation is undefined there). Small tie-free samples use the exact distribution, so
    3 vs 3 samples can never reach p < 0.1: a gate built on it needs enough samples.
    """
    b, n = _arr(base), _arr(new)
    if b.size == 0 or n.size == 0:
        return math.nan
    if np.ptp(np.concatenate([b, n])) == 0:
        return 1.0
    return float(sps.mannwhitneyu(n, b, alternative="two-sided").pvalue)


def classify_latency(ratio: float, p: float, alpha: float, threshold: float) -> str:
    """Verdict for a latency ratio (new/base) with its p-value.

    regression: p < alpha and ratio - 1 > threshold; improvement: p < alpha and
    1 - ratio > threshold; noise: the change exceeds the threshold but is not significant;
    no change: everything else (including significant changes smaller than the threshold).
    """
    if math.isnan(ratio):
        return CANNOT_JUDGE
    significant = not math.isnan(p) and p < alpha
    if ratio - 1 > threshold:
        return REGRESSION if significant else NOISE
    if 1 - ratio > threshold:
        return IMPROVEMENT if significant else NOISE
    return NO_CHANGE


def classify_counts(ratio: float, noise: float, threshold: float) -> str:
    """Verdict for an instruction-count ratio (new/base) whose samples vary by ``noise`` (relative:
    the larger (max - min) / median of the two sides; 0 when the counts repeat exactly).

    No statistics: a count is not a sample of a distribution but (nearly) a property of the code.
    regression: ratio - 1 - noise > threshold (beyond the threshold even at the noise's worst);
    improvement: 1 - ratio - noise > threshold; no change: |ratio - 1| + noise <= threshold;
    cannot judge: the noise straddles the threshold.
    """
    if math.isnan(ratio) or math.isnan(noise):
        return CANNOT_JUDGE
    change = ratio - 1
    if change - noise > threshold:
        return REGRESSION
    if -change - noise > threshold:
        return IMPROVEMENT
    if abs(change) + noise <= threshold:
        return NO_CHANGE
    return CANNOT_JUDGE


def classify_quality(
    base: float, new: float, tolerance: float | None, higher_is_better: bool | None
) -> str:
    """Verdict for a quality/fidelity value: regression when it got worse by more than
    ``tolerance`` (absolute) in the metric's direction; not gated without a tolerance or a
    direction. A value that became NaN while the base was finite is a regression."""
    if tolerance is None or higher_is_better is None:
        return NOT_GATED
    if math.isnan(base):
        return NO_CHANGE if math.isnan(new) else NOT_GATED
    if math.isnan(new):
        return REGRESSION
    worse_by = (base - new) if higher_is_better else (new - base)
    if worse_by > tolerance:
        return REGRESSION
    if -worse_by > tolerance:
        return IMPROVEMENT
    return NO_CHANGE
