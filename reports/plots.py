"""Figures from a run directory (seaborn + matplotlib, Agg backend; PNG and SVG).

``plot_run(run_dir)`` writes into ``<run_dir>/plots/``:

- ``latency_vs_<axis>``: median latency per method vs each swept numeric axis, error bars
  p10–p90 (IQR when percentiles are missing), log y when the values span more than 10x;
- ``speedup_vs_<axis>``: speedup vs the reference per method vs each swept numeric axis;
- ``<metric>_vs_speedup``: each quality/fidelity column vs speedup, one colour per method,
  with the Pareto front (direction from ``metrics.json``'s ``higher_is_better``).

A method-specific axis (e.g. a merge ratio the reference does not have) draws the reference as
a dashed horizontal line. Other workload-level axes that vary become panels. Figures with
nothing to draw (fewer than two x values) are skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # must precede the pyplot import: reports run headless

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter, NullLocator  # noqa: E402

from harness import columns as C  # noqa: E402
from harness.results import RunData, load  # noqa: E402
from reports import tables as T  # noqa: E402

DEFAULT_SUBDIR = "plots"
FORMATS = ("png", "svg")
LOG_SPAN = 10.0  # use a log y axis when max/min exceeds this
MAX_PANEL_COLS = 4
PANEL_SIZE_IN = (5.0, 3.6)
DPI = 150
MAX_XTICKS = 8  # label every x value when there are at most this many


_NUM_FORMAT = FuncFormatter(lambda v, _pos: T.fmt_num(v))

# ---------------------------------------------------------------------------- pure helpers


def pareto_front(df: pd.DataFrame, x: str, y: str, y_higher_is_better: bool) -> pd.DataFrame:
    """Rows of ``df`` on the Pareto front of (higher ``x``, better ``y``), sorted by ``x``.

    A row is on the front when no other row has ``x`` at least as large and ``y`` at least as
    good, with at least one of the two strictly better. Rows with NaN in ``x`` or ``y`` are
    ignored. Identical rows do not dominate each other (both stay).
    """
    d = df[[x, y]].apply(pd.to_numeric, errors="coerce")
    keep = d.notna().all(axis=1)
    sub = df[keep]
    if sub.empty:
        return sub
    xs = d.loc[keep, x].to_numpy(float)
    ys = d.loc[keep, y].to_numpy(float)
    if not y_higher_is_better:
        ys = -ys
    # dominated[i] = any j: x_j >= x_i and y_j >= y_i and (x_j > x_i or y_j > y_i)
    ge = (xs[None, :] >= xs[:, None]) & (ys[None, :] >= ys[:, None])
    gt = (xs[None, :] > xs[:, None]) | (ys[None, :] > ys[:, None])
    dominated = (ge & gt).any(axis=1)
    return sub[~dominated].sort_values(x, kind="stable")


def is_numeric_axis(s: pd.Series) -> bool:
    """True when every present value is a real number (bools and strings are not)."""
    vals = [T.hashable(v) for v in s]
    vals = [v for v in vals if v is not None]
    return bool(vals) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals
    )


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "x"


def _save(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    fig.tight_layout()
    for ext in FORMATS:
        p = out_dir / f"{_safe(stem)}.{ext}"
        with plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays editable text (and is fast)
            fig.savefig(p, dpi=DPI, bbox_inches="tight")  # legends sit outside the axes
        paths.append(p)
    plt.close(fig)
    return paths


def _panels(df: pd.DataFrame, facet_axes: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    if not facet_axes:
        return [("", df)]
    groups: dict[tuple, list[Any]] = {}
    for idx, row in df[list(facet_axes)].iterrows():
        groups.setdefault(tuple(T.hashable(v) for v in row), []).append(idx)
    out = []
    for key, idx in groups.items():
        title = ", ".join(f"{a}={T.fmt_value(v)}" for a, v in zip(facet_axes, key))
        out.append((title, df.loc[idx]))
    return out


def _grid(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    ncols = min(n, MAX_PANEL_COLS)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(PANEL_SIZE_IN[0] * ncols, PANEL_SIZE_IN[1] * nrows), squeeze=False
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


# ---------------------------------------------------------------------------- figures


def _metric_vs_axis(
    pts: pd.DataFrame, axis: str, value: str, specific: set[str], axes: Sequence[str],
    reference: str | None, errors: bool,
) -> plt.Figure | None:
    """value vs axis per method label; None when fewer than two x values can be drawn."""
    has_x = pts[axis].notna()
    drawn = pts[has_x & pts[value].notna()]
    if drawn[axis].map(T.hashable).nunique() < 2:
        return None
    label_params = [a for a in axes if a in specific and a != axis]
    # a label names only the method's own parameters that vary among its drawn points
    varying = {
        m: [a for a in label_params if g[a].map(T.hashable).nunique(dropna=True) > 1]
        for m, g in drawn.groupby(C.METHOD)
    }

    def label_of(row: pd.Series) -> str:
        return T.method_label(row, varying.get(row[C.METHOD], []))

    facet_axes = [a for a in axes if a not in specific and a not in (axis, C.METHOD)]
    # only series with at least two x values make a line; single points (e.g. an ablation run
    # at one frame count) are left to the tables
    series_x = drawn.assign(__label=[label_of(r) for _, r in drawn.iterrows()]).groupby("__label")[axis]
    lines = {lab for lab, xs in series_x if xs.map(T.hashable).nunique() >= 2}
    if not lines:
        return None
    panels = _panels(pts, facet_axes)
    fig, axs = _grid(len(panels))
    labels = sorted(lines)
    palette = dict(zip(labels, sns.color_palette(n_colors=max(len(labels), 1))))
    all_vals = drawn[value].to_numpy(float)
    for (title, panel), ax in zip(panels, axs):
        sub = panel[panel[axis].notna() & panel[value].notna()].copy()
        sub["__label"] = [label_of(r) for _, r in sub.iterrows()]
        sub = sub[sub["__label"].isin(lines)]
        for label, g in sub.groupby("__label", sort=True):
            g = g.sort_values(axis)
            xv = g[axis].astype(float).to_numpy()
            yv = g[value].astype(float).to_numpy()
            yerr = _error_bars(g) if errors else None
            ax.errorbar(xv, yv, yerr=yerr, marker="o", capsize=3, label=label, color=palette[label])
        if reference is not None and axis in specific:
            ref = panel[(panel[C.METHOD] == reference) & panel[axis].isna() & panel[value].notna()]
            for _, r in ref.iterrows():
                ax.axhline(float(r[value]), ls="--", color="0.4", lw=1, label=f"{reference} (reference)")
                all_vals = np.append(all_vals, float(r[value]))
        if value == C.SPEEDUP:
            ax.axhline(1.0, ls=":", color="0.6", lw=1)
        ax.set_xlabel(axis)
        ax.set_ylabel(_ylabel(value))
        if title:
            ax.set_title(title, fontsize=9)
        handles, hl = ax.get_legend_handles_labels()
        if handles:
            uniq = dict(zip(hl, handles))
            ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    finite = all_vals[np.isfinite(all_vals) & (all_vals > 0)]
    xs = np.unique(drawn[axis].astype(float).to_numpy())
    for ax in axs:
        if finite.size and finite.max() / finite.min() > LOG_SPAN:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
        if xs.min() > 0 and xs.max() / xs.min() > LOG_SPAN:
            ax.set_xscale("log", base=2)
        if len(xs) <= MAX_XTICKS:
            ax.set_xticks(xs)
            ax.xaxis.set_major_formatter(_NUM_FORMAT)
            ax.xaxis.set_minor_locator(NullLocator())
    return fig


def _error_bars(g: pd.DataFrame) -> np.ndarray | None:
    med = g[C.LAT_MEDIAN].astype(float).to_numpy()
    if {C.LAT_P10, C.LAT_P90} <= set(g.columns) and g[[C.LAT_P10, C.LAT_P90]].notna().all().all():
        lo = med - g[C.LAT_P10].astype(float).to_numpy()
        hi = g[C.LAT_P90].astype(float).to_numpy() - med
    elif C.LAT_IQR in g.columns and g[C.LAT_IQR].notna().all():
        lo = hi = g[C.LAT_IQR].astype(float).to_numpy() / 2
    else:
        return None
    return np.clip(np.vstack([lo, hi]), 0, None)


def _ylabel(value: str) -> str:
    return {C.LAT_MEDIAN: "latency (ms, median; bars p10–p90)", C.SPEEDUP: "speedup vs reference (×)"}.get(
        value, value
    )


def _quality_scatter(
    pts: pd.DataFrame, col: str, info: dict[str, Any], x: str, x_label: str, x_higher_is_better: bool,
    facet_axes: Sequence[str],
) -> plt.Figure | None:
    """``col`` against ``x`` per method, one panel per workload-level config (e.g. per frame
    count: a Pareto front across different inputs would mean nothing), with each panel's front."""
    sub = pts[pts[col].notna() & pts[x].notna()].copy()
    if len(sub) < 2 or sub[x].nunique() < 2:
        return None
    hib = info.get("higher_is_better")
    panels = [(t, g) for t, g in _panels(sub, facet_axes) if len(g) >= 2]
    if not panels:
        return None
    fig, axs = _grid(len(panels))
    methods = list(dict.fromkeys(sub[C.METHOD]))
    palette = dict(zip(methods, sns.color_palette(n_colors=max(len(methods), 1))))
    direction = "" if hib is None else (" (↑ better)" if hib else " (↓ better)")
    unit = f" [{info['unit']}]" if info.get("unit") else ""
    for (title, g), ax in zip(panels, axs):
        sns.scatterplot(data=g, x=x, y=col, hue=C.METHOD, style=C.METHOD, palette=palette,
                        hue_order=[m for m in methods if m in set(g[C.METHOD])], s=60, ax=ax)
        if hib is not None:
            g = g.assign(_goodness=g[x] if x_higher_is_better else -g[x])
            front = pareto_front(g, "_goodness", col, bool(hib))
            ax.plot(front[x], front[col], color="0.2", lw=1.2, ls="--", label="Pareto front", zorder=0)
        if not x_higher_is_better and g[x].max() > 10 * g[x].min() > 0:
            ax.set_xscale("log")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{col}{unit}{direction}")
        if title:
            ax.set_title(title, fontsize=9)
    return fig


def plot_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write every figure for the run as PNG and SVG; return the written paths.

    out_dir defaults to ``<run_dir>/plots/``. Never raises for lack of data: a figure with
    nothing to draw is skipped.
    """
    run = load(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / DEFAULT_SUBDIR
    return plot_data(run, out)


def plot_data(run: RunData, out_dir: Path) -> list[Path]:
    """:func:`plot_run` on an already loaded run."""
    pts = T.add_speedup(run.points, run.suite)
    pts = pts[pts[C.STATUS] == C.OK] if C.STATUS in pts.columns else pts
    paths: list[Path] = []
    if pts.empty or C.LAT_MEDIAN not in pts.columns:
        return paths
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = T.swept_axes(pts)
    specific = set(T.method_specific_params(pts, run.suite))
    reference = run.suite.get("reference")
    numeric_axes = [a for a in axes if a != C.METHOD and is_numeric_axis(pts[a])]
    with sns.axes_style("whitegrid"):
        for axis in numeric_axes:
            for value, errors, stem in (
                (C.LAT_MEDIAN, True, f"latency_vs_{axis}"),
                (C.SPEEDUP, False, f"speedup_vs_{axis}"),
            ):
                if pts[value].notna().sum() == 0:
                    continue
                fig = _metric_vs_axis(pts, axis, value, specific, axes, reference, errors)
                if fig is not None:
                    paths += _save(fig, out_dir, stem)
        facets = [a for a in axes if a not in specific and a != C.METHOD]
        for prefix in (C.QUALITY_PREFIX, C.FIDELITY_PREFIX):
            for col in T.metric_columns(pts, prefix):
                if not pd.api.types.is_numeric_dtype(pts[col]):
                    continue
                info = run.metrics.get(col) or {}
                fig = _quality_scatter(pts, col, info, C.SPEEDUP, "speedup vs reference (×, → better)",
                                       True, facets)
                if fig is not None:
                    paths += _save(fig, out_dir, f"{col}_vs_speedup")
                for cost, cost_info in run.metrics.items():
                    if not (isinstance(cost_info, dict) and cost_info.get("cost_axis")) or cost not in pts:
                        continue
                    cost_unit = f" [{cost_info['unit']}]" if cost_info.get("unit") else ""
                    fig = _quality_scatter(pts, col, info, cost, f"{cost}{cost_unit} (← cheaper)", False,
                                           facets)
                    if fig is not None:
                        paths += _save(fig, out_dir, f"{col}_vs_{cost}")
    return paths
