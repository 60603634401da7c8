"""The history as one figure: a panel per series, its steps marked (matplotlib, Agg backend).

Each panel: x is the entry's ``seq`` (tick labels: the commits' short shas), y the metric. Every
segment between change points carries a horizontal line at its median; every change point a
vertical line halfway between the last entry before it and the first after it (the step's ``x``
in :data:`harness.history.steps.STEP_COLUMNS`), red for a regression, green for an improvement,
grey for a step under ``min_step``; a new step's segment is shaded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # must precede the pyplot import: runs headless

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from harness.history.steps import CheckResult, Series  # noqa: E402
from harness.history.store import DEVICE, INSTRUCTIONS  # noqa: E402
from harness.store import columns as C  # noqa: E402
from reports import stats as S  # noqa: E402

MAX_COLS = 3
PANEL_SIZE_IN = (6.0, 3.0)
DPI = 120
MAX_TICKS = 12  # commit labels per panel (the steps' commits always among them)
SHORT_SHA = 7
STEP_COLOURS = {S.REGRESSION: "tab:red", S.IMPROVEMENT: "tab:green", S.NO_CHANGE: "tab:grey"}
UNITS = {C.LAT_MEDIAN: "median latency (ms)", INSTRUCTIONS: "median instructions per call"}


def _ticks(series: Series, steps: pd.DataFrame) -> list[int]:
    """Positions (into the series) labelled with a commit: evenly spread, plus every step's first."""
    n = len(series.values)
    chosen = set(np.linspace(0, n - 1, min(n, MAX_TICKS)).round().astype(int).tolist())
    chosen |= {int(i) for i in steps["index"]}
    return sorted(chosen)


def draw_series(ax: plt.Axes, series: Series, steps: pd.DataFrame, metric: str) -> None:
    """One panel: the series, its segments' medians, its steps (``steps``: its rows of
    :data:`STEP_COLUMNS`)."""
    x = series.seqs
    ax.plot(x, series.values, marker="o", markersize=3, linewidth=0.8, color="tab:blue")
    bounds = [0, *[int(i) for i in steps["index"]], len(x)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        ax.hlines(float(np.median(series.values[a:b])), x[a], x[b - 1], colors="black", linewidth=1.6)
    for _, step in steps.iterrows():
        colour = STEP_COLOURS.get(step["verdict"], "tab:grey")
        ax.axvline(step["x"], color=colour, linestyle="--", linewidth=1.2,
                   label=f"{step['verdict']} {step['rel_change']:+.1%} at {str(step['commit'])[:SHORT_SHA]}")
        if step["new"]:
            ax.axvspan(step["x"], x[-1] + 0.5, color=colour, alpha=0.12)
    ticks = _ticks(series, steps)
    ax.set_xticks([x[i] for i in ticks])
    ax.set_xticklabels([series.commits[i][:SHORT_SHA] for i in ticks], rotation=60, fontsize=7,
                       fontfamily="monospace")
    where = ", ".join(x for x in (series.device, series.timer) if x)
    ax.set_title(f"{series.label} ({series.point_hash[:8]})" + (f" [{where}]" if where else ""), fontsize=9)
    ax.set_ylabel(UNITS.get(metric, metric), fontsize=8)
    if len(steps):
        ax.legend(fontsize=7, loc="best")


def history_figure(result: CheckResult) -> plt.Figure:
    """The figure of ``result``: one panel per series (in :attr:`CheckResult.series` order)."""
    series = result.series
    cols = max(1, min(MAX_COLS, len(series)))
    rows = max(1, math.ceil(len(series) / cols))
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_SIZE_IN[0] * cols, PANEL_SIZE_IN[1] * rows),
                             squeeze=False)
    steps = result.steps
    for ax, s in zip(axes.flat, series):
        mine = steps[(steps[C.HASH] == s.point_hash) & (steps[DEVICE].fillna("") == (s.device or ""))
                     & (steps[C.TIMER].fillna("") == (s.timer or ""))]
        draw_series(ax, s, mine, result.config.metric)
    for ax in list(axes.flat)[len(series):]:
        ax.set_visible(False)
    fig.suptitle(f"history of {result.config.metric}" +
                 (f" on {result.config.branch}" if result.config.branch else ""))
    fig.tight_layout()
    return fig


def output_path(out: str | os.PathLike, metric: str) -> Path:
    """``out`` when it names a ``.png`` file, else ``out/history-<metric>.png`` (a folder)."""
    p = Path(out)
    return p if p.suffix.lower() == ".png" else p / f"history-{metric}.png"


def save(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (its folder created) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path
