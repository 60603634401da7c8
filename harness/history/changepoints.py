"""Change points of one series: E-divisive means with a permutation significance test.

The method of Matteson & James (2014, "A nonparametric approach for multiple change point
analysis of multivariate data"), in the form MongoDB's ``signal-processing-algorithms`` and
DataStax Hunter / Apache Otava use on performance histories: split a segment where the energy
distance between its two parts is largest, keep the split only when a permutation test says
such a split is unlikely under "no change", and repeat inside the parts.

For a candidate split of a segment ``z`` (length ``m``) at ``tau`` into ``x = z[:tau]`` (``p``
values) and ``y = z[tau:]`` (``q`` values), with ``|.|`` the absolute difference::

    E(tau) = 2 mean|x_i - y_j| - mean_{i != k}|x_i - x_k| - mean_{j != l}|y_j - y_l|
    Q(tau) = p q / (p + q) * E(tau)

Each round takes the segment and ``tau`` of largest ``Q`` (each part at least ``min_size``
long). Its significance: the values are shuffled within every current segment ``permutations``
times and the largest ``Q`` of each shuffle recorded; ``p_value = (1 + #{shuffled >= observed})
/ (1 + permutations)``. A round whose ``p_value > alpha`` ends the search. Rank-free and
distribution-free: a step in the median or in the spread shows; one outlier does not make a
segment (``min_size``).

Everything here is pure numpy on a 1-D array; the caller decides what a change means (its
direction, its size). Cost: ``permutations * m**2`` per round, fine up to a few hundred entries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the smallest p-value a test of ``permutations`` shuffles can give is ``1 / (1 + permutations)``
DEFAULT_PERMUTATIONS = 199
DEFAULT_ALPHA = 0.01
#: entries on each side of a change point; 3: a step must hold for three entries to be one
DEFAULT_MIN_SIZE = 3


@dataclass(frozen=True)
class EDivisiveConfig:
    """Parameters of :func:`change_points`.

    alpha: significance level of each round's permutation test (keep a split when p <= alpha).
    permutations: shuffles per round (the p-value's resolution is ``1 / (1 + permutations)``).
    min_size: at least this many values on each side of a change point (>= 2).
    seed: of the shuffles, so one series gives the same answer every time.
    max_points: stop after this many change points (None: no limit but the segment sizes).
    """

    alpha: float = DEFAULT_ALPHA
    permutations: int = DEFAULT_PERMUTATIONS
    min_size: int = DEFAULT_MIN_SIZE
    seed: int = 0
    max_points: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.permutations < 1:
            raise ValueError(f"permutations must be >= 1, got {self.permutations}")
        if self.min_size < 2:
            raise ValueError(f"min_size must be >= 2 (a part needs two values for its spread), got "
                             f"{self.min_size}")
        if 1 / (1 + self.permutations) > self.alpha:
            raise ValueError(f"{self.permutations} permutations cannot reach p <= {self.alpha}: use at "
                             f"least {int(np.ceil(1 / self.alpha)) - 1}")


@dataclass(frozen=True)
class ChangePoint:
    """A significant change: ``index`` is the first value after it (0-based; the parts are
    ``values[:index]`` and ``values[index:]`` within their segment), ``q`` its statistic,
    ``p_value`` its permutation test's."""

    index: int
    q: float
    p_value: float


def split_statistics(values: np.ndarray, min_size: int) -> np.ndarray:
    """``Q(tau)`` of every split of ``values`` ([m]) into parts of at least ``min_size``.

    Returns [m + 1]: entry ``tau`` is ``Q`` of the split before ``values[tau]``; ``-inf`` where a
    part would be shorter than ``min_size``.
    """
    z = np.asarray(values, dtype=float)
    m = len(z)
    out = np.full(m + 1, -np.inf)
    if m < 2 * min_size:
        return out
    dist = np.abs(z[:, None] - z[None, :])
    cum = np.zeros((m + 1, m + 1))
    cum[1:, 1:] = dist.cumsum(axis=0).cumsum(axis=1)  # cum[i, j] = sum(dist[:i, :j])
    tau = np.arange(min_size, m - min_size + 1)
    p, q = tau.astype(float), (m - tau).astype(float)
    within_x = cum[tau, tau]  # ordered pairs inside x (the diagonal is 0)
    between = cum[tau, m] - cum[tau, tau]
    within_y = cum[m, m] - 2 * cum[tau, m] + cum[tau, tau]
    energy = 2 * between / (p * q) - within_x / (p * (p - 1)) - within_y / (q * (q - 1))
    out[tau] = p * q / (p + q) * energy
    return out


def _best_split(values: np.ndarray, bounds: list[int], min_size: int) -> tuple[int, float]:
    """(index, Q) of the largest split over the segments ``bounds[i]:bounds[i + 1]``; (-1, -inf)
    when no segment can be split."""
    best = (-1, -np.inf)
    for a, b in zip(bounds[:-1], bounds[1:]):
        stats = split_statistics(values[a:b], min_size)
        tau = int(np.argmax(stats))
        if stats[tau] > best[1]:
            best = (a + tau, float(stats[tau]))
    return best


def _p_value(values: np.ndarray, bounds: list[int], observed: float, cfg: EDivisiveConfig,
             rng: np.random.Generator) -> float:
    """Share of within-segment shuffles whose best split is at least ``observed`` (counting the
    observed order itself). Stops early once the share must exceed ``alpha`` (the value returned
    is then an estimate above ``alpha``, not the exact share)."""
    as_large = 0
    enough = cfg.alpha * (1 + cfg.permutations)  # more than this many: p > alpha, whatever follows
    shuffled = values.copy()
    for done in range(1, cfg.permutations + 1):
        for a, b in zip(bounds[:-1], bounds[1:]):
            shuffled[a:b] = rng.permutation(values[a:b])
        if _best_split(shuffled, bounds, cfg.min_size)[1] >= observed:
            as_large += 1
            if 1 + as_large > enough:  # not significant: the rest cannot change that
                return (1 + as_large) / (1 + done)
    return (1 + as_large) / (1 + cfg.permutations)


def change_points(values: np.ndarray, cfg: EDivisiveConfig | None = None) -> list[ChangePoint]:
    """The significant change points of ``values`` ([n], in order of time), sorted by index.

    NaN values are not allowed (drop them first). Deterministic for a given ``cfg.seed``.
    """
    cfg = cfg or EDivisiveConfig()
    z = np.asarray(values, dtype=float)
    if z.ndim != 1 or not np.isfinite(z).all():
        raise ValueError("change_points needs a 1-D series of finite numbers")
    rng = np.random.default_rng(cfg.seed)
    found: list[ChangePoint] = []
    bounds = [0, len(z)]
    while cfg.max_points is None or len(found) < cfg.max_points:
        index, q = _best_split(z, bounds, cfg.min_size)
        if index < 0 or not q > 0:
            break
        p = _p_value(z, bounds, q, cfg, rng)
        if p > cfg.alpha:
            break
        found.append(ChangePoint(index=index, q=q, p_value=p))
        bounds = sorted([*bounds, index])
    return sorted(found, key=lambda c: c.index)
