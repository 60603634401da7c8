"""Steps in a history: the change points of every point's series, measured and judged.

A series is one point (``point_hash``) on one device (GPU model, else CPU model) measured by one
timer (CUDA events and Callgrind wall times do not mix), its entries in order of ``seq``,
optionally of one branch only. Its change points come from
:func:`harness.history.changepoints.change_points`; each is then measured between its two
neighbouring segments (the entries since the previous change point, and up to the next one):

- ``before`` / ``after``: the medians of the metric over those two segments;
- ``rel_change = after / before - 1`` (both metrics: higher is worse);
- verdict: ``regression`` when ``rel_change > min_step``, ``improvement`` when ``rel_change <
  -min_step``, else ``no change`` (significant, but too small to matter);
- ``new``: its first entry is among the series' newest ``recent`` entries.

The gate (:attr:`CheckResult.failed`): a series whose newest step over ``min_step`` is a new
regression. Older steps are history: reported, never failing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.history.changepoints import ChangePoint, EDivisiveConfig, change_points
from harness.history.store import BRANCH, COMMIT, DEVICE, LABEL, METRICS, SEQ
from harness.store import columns as C
from reports import stats as S

DEFAULT_MIN_STEP = 0.02
DEFAULT_RECENT = 5
#: entries of each series examined (the newest); bounds the time a long history takes
DEFAULT_WINDOW = 200

#: columns of :attr:`CheckResult.steps`
STEP_COLUMNS = (C.HASH, DEVICE, C.TIMER, LABEL, "metric", "n_entries", "index", SEQ, "x", COMMIT,
                "prev_commit", "before", "after", "rel_change", "p_value", "verdict", "new", "gating")


@dataclass(frozen=True)
class CheckConfig:
    """What ``harness history check`` looks at and how it judges.

    metric: the column checked (:data:`harness.history.store.METRICS`).
    branch: only entries of this branch (None: all).
    min_step: a step smaller than this relative change (0.02 = 2 %) is ``no change``.
    recent: a step whose first entry is among the series' newest ``recent`` entries is new.
    window: only the newest ``window`` entries of each series are examined.
    detector: the change-point search and its significance test.
    """

    metric: str = C.LAT_MEDIAN
    branch: str | None = None
    min_step: float = DEFAULT_MIN_STEP
    recent: int = DEFAULT_RECENT
    window: int = DEFAULT_WINDOW
    detector: EDivisiveConfig = field(default_factory=EDivisiveConfig)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not (np.isfinite(self.min_step) and self.min_step >= 0):
            raise ValueError(f"min_step must be a finite number >= 0 (0.02 = 2 %), got {self.min_step}")
        if self.recent < 1 or self.window < 2 * self.detector.min_size:
            raise ValueError(f"recent must be >= 1 and window >= {2 * self.detector.min_size}, got "
                             f"{self.recent} and {self.window}")


@dataclass(frozen=True)
class Series:
    """One point's entries on one device, oldest first: ``values`` [n] of the metric, and the
    ``seq`` [n] and ``commits`` [n] they came with."""

    point_hash: str
    device: str | None
    timer: str | None
    label: str
    values: np.ndarray
    seqs: np.ndarray
    commits: list[str]


@dataclass(frozen=True)
class CheckResult:
    """The steps found (:data:`STEP_COLUMNS`, one row per change point) and the series examined."""

    steps: pd.DataFrame
    series: list[Series]
    config: CheckConfig

    @property
    def failed(self) -> bool:
        """A new regression is the newest step over ``min_step`` of some series."""
        return bool(self.steps["gating"].any()) if len(self.steps) else False

    @property
    def too_short(self) -> list[Series]:
        """Series with too few entries for any change point."""
        return [s for s in self.series if len(s.values) < 2 * self.config.detector.min_size]


def series_of(history: pd.DataFrame, cfg: CheckConfig) -> Iterator[Series]:
    """The series of ``history`` (entries with a finite ``cfg.metric``, of ``cfg.branch``), each
    cut to its newest ``cfg.window`` entries; ordered by label."""
    h = history if cfg.branch is None else history[history[BRANCH] == cfg.branch]
    h = h[pd.to_numeric(h[cfg.metric], errors="coerce").notna()]
    h = h.assign(**{k: h[k].fillna("") for k in (DEVICE, C.TIMER)}).sort_values(SEQ, kind="stable")
    key = [C.HASH, DEVICE, C.TIMER]
    groups = sorted(h.groupby(key, sort=False), key=lambda g: (str(g[1][LABEL].iloc[-1]), g[0]))
    for (point_hash, device, timer), g in groups:
        g = g.drop_duplicates(SEQ, keep="last").tail(cfg.window)
        yield Series(point_hash=str(point_hash), device=str(device) or None, timer=str(timer) or None,
                     label=str(g[LABEL].iloc[-1]),
                     values=g[cfg.metric].to_numpy(float), seqs=g[SEQ].to_numpy(int),
                     commits=[str(c) for c in g[COMMIT]])


def verdict(rel_change: float, min_step: float) -> str:
    """regression / improvement beyond ``min_step``, else no change (higher is worse)."""
    if rel_change > min_step:
        return S.REGRESSION
    if rel_change < -min_step:
        return S.IMPROVEMENT
    return S.NO_CHANGE


def measure(series: Series, points: list[ChangePoint], cfg: CheckConfig) -> list[dict]:
    """One row of :data:`STEP_COLUMNS` per change point of ``series``, measured between its
    neighbouring segments; ``gating`` marks a new regression that is the series' newest step
    over ``min_step``."""
    n = len(series.values)
    bounds = [0, *[c.index for c in points], n]
    rows = []
    for i, cp in enumerate(points):
        before = float(np.median(series.values[bounds[i]:cp.index]))
        after = float(np.median(series.values[cp.index:bounds[i + 2]]))
        rel = after / before - 1 if before else float("inf")
        rows.append({
            C.HASH: series.point_hash, DEVICE: series.device, C.TIMER: series.timer, LABEL: series.label,
            "metric": cfg.metric,
            "n_entries": n, "index": cp.index, SEQ: int(series.seqs[cp.index]),
            "x": (series.seqs[cp.index - 1] + series.seqs[cp.index]) / 2, COMMIT: series.commits[cp.index],
            "prev_commit": series.commits[cp.index - 1], "before": before, "after": after, "rel_change": rel,
            "p_value": cp.p_value, "verdict": verdict(rel, cfg.min_step), "new": cp.index >= n - cfg.recent,
            "gating": False,
        })
    counted = [r for r in rows if r["verdict"] != S.NO_CHANGE]
    if counted and counted[-1]["verdict"] == S.REGRESSION and counted[-1]["new"]:
        counted[-1]["gating"] = True
    return rows


def check(history: pd.DataFrame, cfg: CheckConfig | None = None) -> CheckResult:
    """The steps of every series of ``history`` (see the module docstring)."""
    cfg = cfg or CheckConfig()
    all_series = list(series_of(history, cfg))
    rows: list[dict] = []
    for s in all_series:
        if len(s.values) >= 2 * cfg.detector.min_size:
            rows += measure(s, change_points(s.values, cfg.detector), cfg)
    return CheckResult(steps=pd.DataFrame(rows, columns=list(STEP_COLUMNS)), series=all_series, config=cfg)
