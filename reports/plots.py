"""Figures from a run directory (matplotlib, Agg backend; PNG and SVG).

``plot_run(run_dir)`` writes into ``<run_dir>/plots/``:

- ``overview``: the suite's question at a glance: the headline accuracy (``q_*``) or fidelity
  (``fid_*``) metric against speedup, one colour per method, the Pareto front per panel with its
  variants labelled (``httm#3``, see :func:`reports.tables.variants`); without such a metric,
  speedup (or latency) per variant as bars. One panel per workload setting (e.g. frame count);
- ``latency_vs_<axis>``: median latency per method vs each swept numeric axis, error bars
  p10–p90 (IQR when percentiles are missing), log y when the values span more than 10x;
- ``speedup_vs_<axis>``: speedup vs the reference per method vs each swept numeric axis (error
  bars: the speedup's 95 % bootstrap interval);
- ``<metric>_vs_speedup``: each quality/fidelity column vs speedup, one colour per method,
  with the Pareto front (direction from ``metrics.json``'s ``higher_is_better``);
- ``roofline``: achieved TFLOP/s against arithmetic intensity per point (and per attention /
  matching phase) under the roofs of the run's recorded peaks (:mod:`harness.measure.efficiency`);
- ``phases``: the breakdown pass's phase times per variant as stacked bars.

A method-specific axis (e.g. a merge ratio the reference does not have) draws the reference as
a dashed horizontal line. Other workload-level axes that vary become panels. Figures with
nothing to draw (fewer than two x values) are skipped; :func:`nothing_to_plot` says why a run
has no figure at all. Panels have a fixed size and the legend sits beside them (the saved image
grows to hold it), so a long legend never squeezes the axes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # must precede the pyplot import: reports run headless

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter, NullLocator  # noqa: E402

from harness.measure.efficiency import PEAKS_KEY, peak_key  # noqa: E402
from harness.store import RunData, load  # noqa: E402
from harness.store import columns as C  # noqa: E402
from reports import tables as T  # noqa: E402
from reports.status import print_warnings, run_status  # noqa: E402

DEFAULT_SUBDIR = "plots"
FORMATS = ("png", "svg")
LOG_SPAN = 10.0  # use a log y axis when max/min exceeds this
MAX_PANEL_COLS = 4
PANEL_SIZE_IN = (4.4, 3.2)
# margins and gaps around the panels, inches: (left, right, bottom, top, between columns, between rows)
MARGINS_IN = (0.9, 0.25, 0.7, 0.6, 1.05, 0.95)
BAR_HEIGHT_IN = 0.24  # per bar of the overview's bar chart
DPI = 150
MAX_XTICKS = 8  # label every x value when there are at most this many
OVERVIEW = "overview"


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


def uncertain_order(front: pd.DataFrame, x: str) -> dict[Any, bool]:
    """Per front row (sorted by ``x``): whether its ``x`` interval (the speedup's bootstrap
    interval) overlaps a neighbour's on the front, so the run cannot tell which of the two is
    faster; all False without intervals."""
    if x != C.SPEEDUP or T.SPEEDUP_LOW not in front.columns or len(front) < 2:
        return dict.fromkeys(front.index, False)
    lo = front[T.SPEEDUP_LOW].astype(float).to_numpy()
    hi = front[T.SPEEDUP_HIGH].astype(float).to_numpy()
    overlap = [bool(hi[k] >= lo[k + 1]) for k in range(len(front) - 1)]  # NaN compares False
    return {idx: (k > 0 and overlap[k - 1]) or (k < len(overlap) and overlap[k])
            for k, idx in enumerate(front.index)}


def is_numeric_axis(s: pd.Series) -> bool:
    """True when every present value is a real number (bools and strings are not)."""
    vals = [T.hashable(v) for v in s]
    vals = [v for v in vals if v is not None]
    return bool(vals) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals
    )


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "x"


def _save(fig: plt.Figure, out_dir: Path, stem: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` in every format; the canvas grows to hold what lies outside the panels."""
    paths = []
    for ext in formats:
        p = out_dir / f"{_safe(stem)}.{ext}"
        with plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays editable text (and is fast)
            fig.savefig(p, dpi=DPI, bbox_inches="tight", pad_inches=0.15)  # legend and notes included
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
    for key in sorted(groups, key=lambda k: tuple(T.order_key(v) for v in k)):
        title = ", ".join(f"{a}={T.fmt_value(v)}" for a, v in zip(facet_axes, key))
        out.append((title, df.loc[groups[key]]))
    return out


def _grid(n: int, panel: tuple[float, float] = PANEL_SIZE_IN) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of ``n`` panels of a fixed size in inches (no layout engine: nothing is squeezed)."""
    ncols = min(n, MAX_PANEL_COLS)
    nrows = -(-n // ncols)
    left, right, bottom, top, wgap, hgap = MARGINS_IN
    pw, ph = panel
    fw = left + ncols * pw + (ncols - 1) * wgap + right
    fh = bottom + nrows * ph + (nrows - 1) * hgap + top
    fig = plt.figure(figsize=(fw, fh))
    axes = []
    for i in range(n):
        r, c = divmod(i, ncols)
        x0 = (left + c * (pw + wgap)) / fw
        y0 = (bottom + (nrows - 1 - r) * (ph + hgap)) / fh
        axes.append(fig.add_axes((x0, y0, pw / fw, ph / fh)))
    return fig, axes


def _legend(fig: plt.Figure, axs: Iterable[plt.Axes], title: str | None = None) -> None:
    """One legend for the whole figure, right of the panels (outside them: it never squeezes them)."""
    entries: dict[str, Any] = {}
    for ax in axs:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if not lab.startswith("_"):
                entries.setdefault(lab, h)
    if not entries:
        return
    left, right, bottom, top, _, _ = MARGINS_IN
    fw, fh = fig.get_size_inches()
    fig.legend(list(entries.values()), list(entries.keys()), loc="upper left", fontsize=8, title=title,
               title_fontsize=8, frameon=False, bbox_to_anchor=(1 - right / fw + 0.1 / fw, 1 - top / fh))


def _note(fig: plt.Figure, text: str) -> None:
    """A line of small print under the panels (e.g. what every line of a method has in common)."""
    if text:
        fig.text(MARGINS_IN[0] / fig.get_size_inches()[0], 0.0, text, fontsize=7, va="top", ha="left",
                 color="0.3")


def _title(fig: plt.Figure, text: str) -> None:
    fw, fh = fig.get_size_inches()
    fig.suptitle(text, x=MARGINS_IN[0] / fw, y=1 - 0.12 / fh, ha="left", va="top", fontsize=10)


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
    # a series is one method with one setting of its own parameters that vary among its drawn points
    varying = {
        m: [a for a in label_params if g[a].map(T.hashable).nunique(dropna=True) > 1]
        for m, g in drawn.groupby(C.METHOD)
    }

    def key_of(row: pd.Series) -> tuple:
        m = row[C.METHOD]
        return (m, tuple(T.hashable(row[a]) for a in varying.get(m, [])))

    facet_axes = [a for a in axes if a not in specific and a not in (axis, C.METHOD)]
    # only series with at least two x values make a line; single points (e.g. an ablation run
    # at one frame count) are left to the tables
    series_x = drawn.assign(__key=[key_of(r) for _, r in drawn.iterrows()]).groupby("__key")[axis]
    lines = {k for k, xs in series_x if xs.map(T.hashable).nunique() >= 2}
    if not lines:
        return None
    names, shared = _line_names(lines, varying)
    panels = _panels(pts, facet_axes)
    fig, axs = _grid(len(panels))
    order = sorted(lines, key=lambda k: (str(k[0]), tuple(T.order_key(v) for v in k[1])))
    palette = palette_for(order)
    all_vals = drawn[value].to_numpy(float)
    for (title, panel), ax in zip(panels, axs):
        sub = panel[panel[axis].notna() & panel[value].notna()].copy()
        ids = {k: i for i, k in enumerate(order)}
        sub["__id"] = [ids.get(key_of(r), -1) for _, r in sub.iterrows()]
        for key in order:
            g = sub[sub["__id"] == ids[key]].sort_values(axis)
            if g.empty:
                continue
            xv = g[axis].astype(float).to_numpy()
            yv = g[value].astype(float).to_numpy()
            yerr = _error_bars(g) if errors else _ci_err(g, value)  # a speedup: its bootstrap interval
            ax.errorbar(xv, yv, yerr=yerr, marker="o", capsize=3, label=names[key], color=palette[key])
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
    _legend(fig, axs)
    _note(fig, "; ".join(shared))
    _scale_axes(axs, all_vals, np.unique(drawn[axis].astype(float).to_numpy()))
    return fig


def _line_names(lines: set[tuple], varying: dict[str, list[str]]) -> tuple[dict[tuple, str], list[str]]:
    """A legend entry per line naming only what tells a method's lines apart, and the notes of what
    each method's lines share (written under the panels)."""
    names: dict[tuple, str] = {}
    shared = []
    for m in sorted({k[0] for k in lines}, key=str):
        keys = sorted((k for k in lines if k[0] == m), key=lambda k: tuple(T.order_key(v) for v in k[1]))
        params = varying.get(m, [])
        differ = [i for i in range(len(params)) if len({k[1][i] for k in keys}) > 1]
        same = [f"{params[i]}={T.fmt_value(keys[0][1][i])}" for i in range(len(params))
                if i not in differ and keys[0][1][i] is not None]
        if same:
            shared.append(f"{m} lines: {' '.join(same)}")
        for k in keys:
            names[k] = " ".join([str(m), *(f"{params[i]}={T.fmt_value(k[1][i])}" for i in differ)])
    return names, shared


def _scale_axes(axs: Sequence[Any], all_vals: np.ndarray, xs: np.ndarray) -> None:
    """Log scales where the values or the x values span more than LOG_SPAN; readable x ticks."""
    finite = all_vals[np.isfinite(all_vals) & (all_vals > 0)]
    for ax in axs:
        if finite.size and finite.max() / finite.min() > LOG_SPAN:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
        if xs.min() > 0 and xs.max() / xs.min() > LOG_SPAN:
            ax.set_xscale("log", base=2)
        if len(xs) <= MAX_XTICKS:
            ax.set_xticks(_spaced(xs, ax.get_xscale() == "log"))
            ax.xaxis.set_major_formatter(_NUM_FORMAT)
            ax.xaxis.set_minor_locator(NullLocator())


def _spaced(xs: np.ndarray, log: bool, min_gap: float = 0.06) -> np.ndarray:
    """The tick positions among sorted ``xs`` at least ``min_gap`` of the axis span apart (so that
    labels such as 0.68 and 0.7 do not print over each other); the first and last are kept."""
    pos = np.log(xs) if log else xs.astype(float)
    span = pos[-1] - pos[0]
    if len(xs) < 3 or span <= 0:
        return xs
    keep = [0]
    for i in range(1, len(xs)):
        if pos[i] - pos[keep[-1]] >= min_gap * span:
            keep.append(i)
    if keep[-1] != len(xs) - 1:
        keep[-1] = len(xs) - 1
    return xs[keep]


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


def palette_for(keys: Sequence[Any]) -> dict[Any, Any]:
    """A distinct colour per key: seaborn's default 10 colours, or tab20 beyond 10 (the default
    palette repeats itself after 10, so an 11th method would share the first one's colour)."""
    n = max(len(keys), 1)
    colors = sns.color_palette(n_colors=n) if n <= 10 else sns.color_palette("tab20", n_colors=n)
    return dict(zip(keys, colors))


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p", "d", "8", "H")


def _ci_err(df: pd.DataFrame, value: str) -> np.ndarray | None:
    """[[below], [above]] error-bar lengths of ``value`` from its interval columns (the speedup's
    bootstrap interval), 0 where a row has none; None when there is no interval at all."""
    if value != C.SPEEDUP or T.SPEEDUP_LOW not in df.columns or df[T.SPEEDUP_LOW].isna().all():
        return None
    v = df[value].astype(float).to_numpy()
    lo = df[T.SPEEDUP_LOW].astype(float).fillna(df[value]).to_numpy()
    hi = df[T.SPEEDUP_HIGH].astype(float).fillna(df[value]).to_numpy()
    return np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])


def _quality_scatter(
    pts: pd.DataFrame, col: str, info: dict[str, Any], x: str, x_label: str, x_higher_is_better: bool,
    facet_axes: Sequence[str], *, min_panel_points: int = 2, label_front: bool = True,
) -> plt.Figure | None:
    """``col`` against ``x`` per method, one panel per workload-level config (e.g. per frame
    count: a Pareto front across different inputs would mean nothing), with each panel's front
    (its points labelled with their variant when ``pts`` has a ``variant`` column)."""
    sub = pts[pts[col].notna() & pts[x].notna()].copy()
    if len(sub) < 2 or sub[x].nunique() < 2:
        return None
    hib = info.get("higher_is_better")
    panels = [(t, g) for t, g in _panels(sub, facet_axes) if len(g) >= min_panel_points]
    if not panels:
        return None
    fig, axs = _grid(len(panels))
    methods = list(dict.fromkeys(sub[C.METHOD]))
    palette = palette_for(methods)
    marker = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(methods)}
    direction = "" if hib is None else (" (↑ better)" if hib else " (↓ better)")
    unit = f" [{info['unit']}]" if info.get("unit") else ""
    for (title, g), ax in zip(panels, axs):
        for m in methods:
            gm = g[g[C.METHOD] == m]
            if not gm.empty:
                ax.scatter(gm[x].astype(float), gm[col].astype(float), s=40, color=palette[m],
                           marker=marker[m], label=str(m), edgecolors="white", linewidths=0.5, zorder=3)
                err = _ci_err(gm, x)
                if err is not None:  # the speedup's 95 % bootstrap interval
                    ax.errorbar(gm[x].astype(float), gm[col].astype(float), xerr=err, fmt="none",
                                ecolor=palette[m], elinewidth=0.8, alpha=0.7, zorder=2)
        shaky = g[T.unstable_rows(g)]
        if not shaky.empty:  # ringed: their samples were judged unstable (harness.measure.stability)
            ax.scatter(shaky[x].astype(float), shaky[col].astype(float), s=130, facecolors="none",
                       edgecolors="crimson", linewidths=1.2, label="unstable (!)", zorder=4)
        if x == C.SPEEDUP:
            ax.axvline(1.0, ls=":", color="0.6", lw=1)
        if hib is not None:
            g = g.assign(_goodness=g[x] if x_higher_is_better else -g[x])
            front = pareto_front(g, "_goodness", col, bool(hib))
            ax.plot(front[x], front[col], color="0.2", lw=1.2, ls="--", label="Pareto front", zorder=2)
            unsure = uncertain_order(front, x)
            if label_front and T.VARIANT in front.columns:
                for i, r in front.iterrows():
                    mark = " ?" if unsure.get(i, False) else ""  # its speedup interval overlaps a neighbour's
                    ax.annotate(f"{r[T.VARIANT]}{mark}", (float(r[x]), float(r[col])), xytext=(4, 4),
                                textcoords="offset points", fontsize=7, color="0.2")
        if not x_higher_is_better and g[x].max() > 10 * g[x].min() > 0:
            ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{col}{unit}{direction}")
        if title:
            ax.set_title(title, fontsize=9)
    _legend(fig, axs)
    return fig


def _bars(
    pts: pd.DataFrame, value: str, facet_axes: Sequence[str], reference: str | None,
) -> plt.Figure | None:
    """``value`` per variant as horizontal bars, one panel per workload setting."""
    sub = pts[pts[value].notna()]
    if len(sub) < 2:
        return None
    panels = _panels(sub, facet_axes)
    order = sorted(dict.fromkeys(sub[T.VARIANT]), key=T.variant_order(reference), reverse=True)
    fig, axs = _grid(len(panels), (PANEL_SIZE_IN[0], max(PANEL_SIZE_IN[1], BAR_HEIGHT_IN * len(order))))
    methods = list(dict.fromkeys(sub[C.METHOD]))
    palette = palette_for(methods)
    for (title, g), ax in zip(panels, axs):
        g = g.drop_duplicates(T.VARIANT).set_index(T.VARIANT)
        labels = [v for v in order if v in g.index]
        colors = [palette[g.at[v, C.METHOD]] for v in labels]
        shaky = T.unstable_rows(g.loc[labels])
        bars = ax.barh([f"{v}{T.UNSTABLE_MARK if bad else ''}" for v, bad in zip(labels, shaky)],
                       g.loc[labels, value].astype(float), color=colors,
                       xerr=_ci_err(g.loc[labels], value), error_kw={"lw": 1, "capsize": 2})
        for bar, bad in zip(bars, shaky):
            if bad:  # hatched, and '!' after its label: its samples were judged unstable
                bar.set_hatch("///")
                bar.set_edgecolor("crimson")
        if value == C.SPEEDUP:
            ax.axvline(1.0, ls=":", color="0.4", lw=1)
        ax.set_xlabel(_ylabel(value))
        ax.tick_params(axis="y", labelsize=7)
        if title:
            ax.set_title(title, fontsize=9)
    return fig


def overview(run: RunData, pts: pd.DataFrame) -> plt.Figure | None:
    """The figure that answers the suite's question: the headline accuracy or fidelity metric
    against speedup with the Pareto front, one panel per workload setting; without such a metric
    (or without a reference), speedup (or latency) per variant. None with fewer than two points."""
    facets = T.workload_axes(pts, run.suite)
    name = run.suite.get("name") or run.manifest.get("suite") or run.path.name
    has_speedup = C.SPEEDUP in pts.columns and pts[C.SPEEDUP].notna().sum() >= 2
    acc = [c for c in T.accuracy_columns(pts, run.metrics) if pd.api.types.is_numeric_dtype(pts[c])]
    if has_speedup and acc:
        col = acc[0]
        fig = _quality_scatter(pts, col, run.metrics.get(col) or {}, C.SPEEDUP,
                               "speedup vs reference (×, → better)", True, facets, min_panel_points=1)
        if fig is not None:
            _title(fig, f"{name}: {col} against speedup (bars: 95% intervals); dashed: Pareto front "
                        "(labelled variants; '?': its speedup interval overlaps a neighbour's on the front)")
            return fig
    value = C.SPEEDUP if has_speedup else C.LAT_MEDIAN
    fig = _bars(pts, value, facets, run.suite.get("reference"))
    if fig is not None:
        what = "speedup vs the reference" if has_speedup else "median latency"
        _title(fig, f"{name}: {what} per variant")
    return fig


PHASE_MARKERS = {"": "o", "attention": "s", "match": "^"}  # roofline: the whole call, then each phase
ROOFLINE = "roofline"
PHASES = "phases"


def _roof_entries(env: dict[str, Any], pts: pd.DataFrame) -> list[tuple[str, float, float, str]]:
    """(label, peak FLOP/s, peak bytes/s, source) of each recorded peak some point ran with."""
    peaks = env.get(PEAKS_KEY) or {}
    used = set()
    for _, r in pts.iterrows():
        threads = r.get(C.THREADS)
        threads = int(threads) if pd.notna(threads) else 0
        used.add(peak_key(str(r.get("device", "cpu")), str(r.get("dtype", "float32")), threads))
    out = []
    for key, e in peaks.items():
        if key in used and isinstance(e, dict) and e.get("flop_s") and e.get("bytes_s"):
            label = key.replace("|", " ")
            out.append((label, float(e["flop_s"]), float(e["bytes_s"]), str(e.get("source", ""))))
    return out


def roofline(run: RunData, pts: pd.DataFrame) -> plt.Figure | None:
    """Achieved TFLOP/s against arithmetic intensity (FLOP per byte of the bytes model), log-log:
    one marker per point (circle: the whole timed call; square / triangle: its attention /
    matching phase from the breakdown pass), one colour per method, under the roofs
    min(peak FLOP/s, intensity x peak bandwidth) of the peaks recorded in env.json. None when no
    point has both a FLOP and a bytes count."""
    series = []
    for phase, marker in PHASE_MARKERS.items():
        pre = f"{C.EFFICIENCY_PREFIX}{phase + '_' if phase else ''}"
        x, y = f"{pre}flop_per_byte", f"{pre}tflop_s"
        if x in pts.columns and y in pts.columns:
            sub = pts[pts[x].notna() & pts[y].notna() & (pts[x] > 0) & (pts[y] > 0)]
            if not sub.empty:
                series.append((phase, marker, sub, x, y))
    if not series:
        return None
    methods = list(dict.fromkeys(pts[C.METHOD]))
    palette = palette_for(methods)
    fig, (ax,) = _grid(1, (PANEL_SIZE_IN[0] * 1.4, PANEL_SIZE_IN[1] * 1.4))
    xs = np.concatenate([s[2][s[3]].to_numpy(float) for s in series])
    ys = np.concatenate([s[2][s[4]].to_numpy(float) for s in series])
    roofs = _roof_entries(run.env, pts)
    lo, hi = xs.min() / 4, xs.max() * 4
    for i, (label, flop_s, bytes_s, _) in enumerate(roofs):
        grid = np.geomspace(min(lo, flop_s / bytes_s / 4), max(hi, flop_s / bytes_s * 4), 200)
        ax.plot(grid, np.minimum(flop_s, grid * bytes_s) / 1e12, color="0.35", lw=1.2,
                ls=("-", "--", ":", "-.")[i % 4], label=f"roof: {label}")
    for _, marker, sub, x, y in series:
        for method, g in sub.groupby(C.METHOD, sort=False):
            ax.scatter(g[x].astype(float), g[y].astype(float), marker=marker, s=34, color=palette[method],
                       edgecolor="white", linewidth=0.5, label=method, zorder=3)
    for phase, marker, *_ in series if len(series) > 1 else ():
        ax.scatter([], [], marker=marker, color="0.5", label=f"[{phase or 'timed call'}]")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte, bytes model)")
    ax.set_ylabel("achieved TFLOP/s")
    if not roofs:
        ax.set_ylim(ys.min() / 4, ys.max() * 4)
    _legend(fig, [ax])
    sources = "; ".join(sorted({r[3] for r in roofs}))
    _note(fig, f"peaks: {sources}" if sources else "no peak recorded for these points: no roof drawn")
    return fig


def phase_bars(run: RunData, pts: pd.DataFrame) -> plt.Figure | None:
    """The breakdown pass as stacked horizontal bars: per variant, the time of each method phase
    (``bd_<phase>_ms``) and the rest of the median latency, one panel per workload setting (the
    HTTM paper's Table 4 as a picture). None without breakdown columns."""
    phases = [c for c in pts.columns if c.startswith(C.BREAKDOWN_PREFIX) and c.endswith("_ms")
              and pts[c].notna().any()]
    if not phases:
        return None
    sub = pts[pts[phases].notna().any(axis=1)]
    reference = run.suite.get("reference")
    panels = _panels(sub, T.workload_axes(sub, run.suite))
    order = sorted(dict.fromkeys(sub[T.VARIANT]), key=T.variant_order(reference), reverse=True)
    fig, axs = _grid(len(panels), (PANEL_SIZE_IN[0], max(PANEL_SIZE_IN[1], BAR_HEIGHT_IN * len(order))))
    colors = dict(zip(phases + ["other"], sns.color_palette("Set2", n_colors=len(phases) + 1)))
    for (title, g), ax in zip(panels, axs):
        g = g.drop_duplicates(T.VARIANT).set_index(T.VARIANT)
        labels = [v for v in order if v in g.index]
        left = np.zeros(len(labels))
        for col in phases:
            vals = g.loc[labels, col].astype(float).fillna(0.0).to_numpy()
            ax.barh(labels, vals, left=left, color=colors[col], label=col[len(C.BREAKDOWN_PREFIX):-3])
            left += vals
        if C.LAT_MEDIAN in g.columns:
            rest = np.clip(g.loc[labels, C.LAT_MEDIAN].astype(float).fillna(0.0).to_numpy() - left, 0, None)
            ax.barh(labels, rest, left=left, color=colors["other"], label="rest of the median latency")
        ax.set_xlabel("ms per call (breakdown pass)")
        ax.tick_params(axis="y", labelsize=7)
        if title:
            ax.set_title(title, fontsize=9)
    _legend(fig, axs, title="phase")
    _note(fig, "phases are timed in one synchronized breakdown run after the samples; the rest is the "
               "median latency minus their sum (0 when the phases add up to more)")
    return fig


def plot_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write every figure for the run as PNG and SVG; return the written paths (the overview first).

    out_dir defaults to ``<run_dir>/plots/``. Never raises for lack of data: a figure with
    nothing to draw is skipped (:func:`nothing_to_plot` says why none was).
    """
    run = load(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / DEFAULT_SUBDIR
    return plot_data(run, out)


def plot_data(run: RunData, out_dir: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """:func:`plot_run` on an already loaded run."""
    pts = T.add_speedup(run.points, run.suite, run.samples)
    pts[T.VARIANT] = T.variants(pts, run.suite)[0]
    pts = pts[pts[C.STATUS] == C.OK] if C.STATUS in pts.columns else pts
    paths: list[Path] = []
    if pts.empty or C.LAT_MEDIAN not in pts.columns or T.counted(pts):
        return paths
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = T.swept_axes(pts)
    specific = set(T.method_specific_params(pts, run.suite))
    reference = run.suite.get("reference")
    numeric_axes = [a for a in axes if a != C.METHOD and is_numeric_axis(pts[a])]
    with sns.axes_style("whitegrid"):
        fig = overview(run, pts)
        if fig is not None:
            paths += _save(fig, out_dir, OVERVIEW, formats)
        for stem, make in ((ROOFLINE, roofline), (PHASES, phase_bars)):
            fig = make(run, pts)
            if fig is not None:
                _title(fig, f"{run.suite.get('name') or run.path.name}: "
                            + ("achieved FLOP/s against arithmetic intensity" if stem == ROOFLINE
                               else "where each variant's time goes (breakdown pass)"))
                paths += _save(fig, out_dir, stem, formats)
        for axis in numeric_axes:
            for value, errors, stem in (
                (C.LAT_MEDIAN, True, f"latency_vs_{axis}"),
                (C.SPEEDUP, False, f"speedup_vs_{axis}"),
            ):
                if pts[value].notna().sum() == 0:
                    continue
                fig = _metric_vs_axis(pts, axis, value, specific, axes, reference, errors)
                if fig is not None:
                    paths += _save(fig, out_dir, stem, formats)
        facets = [a for a in axes if a not in specific and a != C.METHOD]
        for prefix in (C.QUALITY_PREFIX, C.FIDELITY_PREFIX):
            for col in T.metric_columns(pts, prefix):
                if not pd.api.types.is_numeric_dtype(pts[col]):
                    continue
                info = run.metrics.get(col) or {}
                fig = _quality_scatter(pts, col, info, C.SPEEDUP, "speedup vs reference (×, → better)",
                                       True, facets)
                if fig is not None:
                    paths += _save(fig, out_dir, f"{col}_vs_speedup", formats)
                for cost, cost_info in run.metrics.items():
                    if not (isinstance(cost_info, dict) and cost_info.get("cost_axis")) or cost not in pts:
                        continue
                    cost_unit = f" [{cost_info['unit']}]" if cost_info.get("unit") else ""
                    fig = _quality_scatter(pts, col, info, cost, f"{cost}{cost_unit} (← cheaper)", False,
                                           facets)
                    if fig is not None:
                        paths += _save(fig, out_dir, f"{col}_vs_{cost}", formats)
    return paths


# ---------------------------------------------------------------------------- what was drawn


def order_figures(paths: Iterable[Path]) -> list[Path]:
    """Figure files in reading order: the overview, speedup, latency, quality, fidelity, the rest."""
    rank = ((OVERVIEW,), ("speedup_vs_",), ("latency_vs_",), (C.QUALITY_PREFIX,), (C.FIDELITY_PREFIX,),
            (PHASES,), (ROOFLINE,))

    def key(p: Path) -> tuple[int, str]:
        for i, prefixes in enumerate(rank):
            if p.stem.startswith(prefixes):
                return (i, p.stem)
        return (len(rank), p.stem)

    return sorted(paths, key=key)


def nothing_to_plot(run: RunData) -> str:
    """Why a run has no figure (plot_data wrote none), in one sentence."""
    pts = run.points
    if pts.empty:
        return "no point has been recorded yet"
    status = pts[C.STATUS] if C.STATUS in pts.columns else pd.Series(C.OK, index=pts.index)
    ok = pts[status == C.OK]
    if ok.empty:
        counts = ", ".join(f"{n} {s}" for s, n in status.value_counts().items())
        return (f"none of the {len(pts)} point(s) finished ok ({counts}); their errors are in the report's "
                "failed points (harness report)")
    if C.LAT_MEDIAN not in ok.columns or ok[C.LAT_MEDIAN].notna().sum() == 0:
        return "no ok point has a latency to draw"
    if T.counted(ok):
        return ("its instructions were counted (timing.mode instructions): its latencies are wall times "
                "under valgrind and would draw nothing of native speed; the counts are in the tables "
                "(harness report)")
    if len(ok) < 2:
        return ("only one point finished ok, and a figure compares at least two; its numbers are in "
                "the tables (harness report)")
    return ("nothing varies that a figure could show (no swept numeric parameter, no quality or fidelity "
            "metric against speedup); the tables (harness report) show the points")


def summary_line(paths: Sequence[Path], out_dir: Path) -> str:
    """``plots: 19 figures (PNG + SVG) in DIR/; start with overview.png``, not every path."""
    stems = list(dict.fromkeys(p.stem for p in paths))
    kinds = " + ".join(sorted({p.suffix.lstrip(".").upper() for p in paths}))
    first = f"; start with {OVERVIEW}.png" if OVERVIEW in stems else ""
    return f"plots: {len(stems)} figure(s) ({kinds}) in {out_dir}/{first}"


def plot_and_summarise(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, warn: bool = True,
) -> tuple[list[Path], str]:
    """Plot the run; return the paths and one line to print: where the figures are, or why there
    are none. With ``warn``, an incomplete, running or duplicated run is reported on stderr first."""
    run = load(run_dir)
    if warn:
        print_warnings(run_status(run).warnings())
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / DEFAULT_SUBDIR
    paths = plot_data(run, out)
    if not paths:
        return paths, f"nothing to plot in {run_dir}: {nothing_to_plot(run)}"
    return paths, summary_line(paths, out)
