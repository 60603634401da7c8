"""Tables from a run directory: swept axes, speedup vs the reference, summary and pivot views.

Everything here reads a :class:`harness.store.RunData` (``harness.store.load``) and
returns pandas DataFrames; nothing imports a model or a method. Numeric tables stay
numeric (``points.csv`` keeps full precision); :func:`format_table` turns one into strings
with 3 significant figures for Markdown, and :func:`to_markdown` renders it with tabulate.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from harness.store import RunData
from harness.store import columns as C
from reports import stats as S

# columns that describe the row, not its configuration
BOOKKEEPING = (C.RUN_ID, C.SUITE, C.HASH, C.STATUS, C.ERROR, C.STARTED_AT, C.ELAPSED_S)
VARIANT = "variant"  # short label of a method's configuration (``httm#3``), see :func:`variants`
# gpu_name is left out on purpose: where a run spans several GPU models it varies, so it becomes a
# workload axis (reports group by it, speedup pairs points on the same model)
SPEEDUP_LOW, SPEEDUP_HIGH = "speedup_ci_low", "speedup_ci_high"  # its 95 % bootstrap interval (derived)
_NOT_CONFIG = (set(BOOKKEEPING) | set(C.TIMING) | set(C.INSTRUCTION_COUNTS) | set(C.TELEMETRY)
               | set(C.HOST_LOAD) | set(C.PROVENANCE) | set(C.ARTIFACTS)
               | {C.HOST, C.GPU_UUID, C.SPEEDUP, SPEEDUP_LOW, SPEEDUP_HIGH, VARIANT})

# telemetry columns shown in the summary when any ok point has them
RESOURCE_COLUMNS = (
    C.ENERGY_J, C.POWER_MEAN_W, C.GPU_MEM_PEAK_MB, C.TORCH_PEAK_ALLOC_MB, C.RSS_PEAK_MB,
)
SIG_DIGITS = 3
#: quality/fidelity columns that lead the terminal table and the overview figure when present
HEADLINE_METRICS = ("q_top1", "q_depth_abs_rel", "q_pose_auc_30", "fid_attn_rel_err", "fid_depth_rel_err",
                    "fid_logit_kl", "fid_token_cos")
#: work counters that lead when present: kept tokens, BOPs
HEADLINE_WORK = ("work_tokens_q_frac", "work_tokens_kv_frac", "work_bops_speedup", "work_bops",
                 "work_eq_act_bits")
HASH_SHORT = 8
_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"))


# ---------------------------------------------------------------------------- values


def is_missing(v: Any) -> bool:
    """True for None and float NaN (pandas' two spellings of 'no value')."""
    if v is None:
        return True
    try:
        return bool(isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT
    except TypeError:
        return False


def hashable(v: Any) -> Hashable:
    """A hashable stand-in for a config value: NaN -> None, arrays/lists -> tuples."""
    if is_missing(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, hashable(x)) for k, x in v.items()))
    return v


def fmt_value(v: Any) -> str:
    """A config value as short text: integral floats print as ints, missing as ''."""
    v = hashable(v)
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:g}"
    if isinstance(v, tuple):
        return "(" + ", ".join(fmt_value(x) for x in v) + ")"
    return str(v)


def fmt_num(x: Any, digits: int = SIG_DIGITS) -> str:
    """A number with ``digits`` significant figures; large counts get SI suffixes (1.23G).

    Values in [1e3, 1e6) print as integers (1234), which keeps them readable.
    """
    if is_missing(x):
        return ""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if not isinstance(x, (int, float, np.integer, np.floating)):
        return str(x)
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    ax = abs(x)
    for scale, suffix in _SI:
        if ax >= scale:
            return f"{x / scale:.{digits}g}{suffix}"
    if ax >= 10 ** digits:
        return f"{x:.0f}"
    if x.is_integer():
        return str(int(x))
    return f"{x:.{digits}g}"


# ---------------------------------------------------------------------------- columns


def _frame(run: RunData | pd.DataFrame) -> pd.DataFrame:
    return run.points if isinstance(run, RunData) else run


def _ok(run: RunData | pd.DataFrame) -> pd.DataFrame:
    df = _frame(run)
    if C.STATUS not in df.columns:
        return df
    return df[df[C.STATUS] == C.OK]


def config_columns(points: pd.DataFrame) -> list[str]:
    """Columns that hold configuration (workload, method, preset and every resolved param)."""
    return [
        c for c in points.columns
        if c not in _NOT_CONFIG and not str(c).startswith(C.METRIC_PREFIXES)
    ]


def metric_columns(points: pd.DataFrame, prefix: str) -> list[str]:
    """Columns starting with ``prefix`` (``q_``, ``fid_``, ``work_``, ``bd_``) that hold any value."""
    return [c for c in points.columns if str(c).startswith(prefix) and points[c].notna().any()]


def _n_distinct(s: pd.Series) -> int:
    return len({hashable(v) for v in s} - {None})


def varying_columns(points: pd.DataFrame) -> list[str]:
    """Config columns taking more than one value in ``points``; ``method`` first."""
    cols = [c for c in config_columns(points) if _n_distinct(points[c]) > 1]
    if C.METHOD in cols:
        cols.remove(C.METHOD)
        cols.insert(0, C.METHOD)
    return cols


def swept_axes(run: RunData | pd.DataFrame) -> list[str]:
    """Config columns that take more than one value among the ok points, ``method`` first.

    Bookkeeping (run id, hash, status, ...), timing, telemetry and metric columns are never axes.
    """
    return varying_columns(_ok(run))


def method_specific_params(points: pd.DataFrame, suite: dict[str, Any]) -> list[str]:
    """Config columns that belong to methods rather than to the workload-level config, as the
    run's resolved suite records them (``parameters``: workload, common, methods)."""
    owners = suite.get("parameters")
    if not owners:
        raise ValueError("the suite record has no 'parameters' section (which columns belong to the "
                         "workload, the methods and every point); it comes from a run of an older harness: "
                         "re-run its suite")
    shared = set(owners.get("workload", ())) | set(owners.get("common", ()))
    of_methods = {n for names in (owners.get("methods") or {}).values() for n in names} - shared
    return [c for c in config_columns(points) if c in of_methods]


def match_key_columns(points: pd.DataFrame, suite: dict[str, Any]) -> list[str]:
    """Columns that pair a point with its reference: the workload-level config."""
    specific = set(method_specific_params(points, suite))
    return [c for c in config_columns(points) if c != C.METHOD and c not in specific]


# ---------------------------------------------------------------------------- variants


def order_key(v: Any) -> tuple[int, float, str]:
    """Sort key for config values of mixed types: numbers by value, then text, then missing."""
    v = hashable(v)
    if v is None:
        return (2, 0.0, "")
    if isinstance(v, (bool, int, float)):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def method_params(points: pd.DataFrame, suite: dict[str, Any], method: str) -> list[str]:
    """The method-specific config columns that belong to ``method`` (suite record order)."""
    specific = method_specific_params(points, suite)
    owned = ((suite.get("parameters") or {}).get("methods") or {}).get(method)
    if owned is None:  # a method the record does not list: whatever of its own it has values for
        rows = points[points[C.METHOD] == method]
        return [c for c in specific if rows[c].notna().any()]
    return [c for c in specific if c in set(owned)]


def variants(points: pd.DataFrame, suite: dict[str, Any]) -> tuple[pd.Series, dict[str, pd.DataFrame]]:
    """Short labels for each method's configurations, and the legend that spells them out.

    A variant is a method with one setting of its own parameters (workload-level parameters such
    as the frame count are not part of it). A method run with one setting is labelled by its
    name (``vggt``); one run with several gets ``httm#1``, ``httm#2``, ... numbered in the order
    of its parameter values. Returns (label per row of ``points``, and per method with several
    variants a table: ``variant`` plus the parameters that differ between them).
    """
    labels = pd.Series("", index=points.index, dtype=object)
    legend: dict[str, pd.DataFrame] = {}
    if points.empty or C.METHOD not in points.columns:
        return labels, legend
    for method, rows in points.groupby(C.METHOD, sort=False):
        params = method_params(points, suite, str(method))
        keys = pd.Series([tuple(hashable(r[c]) for c in params) for _, r in rows[params].iterrows()]
                         if params else [()] * len(rows), index=rows.index)
        distinct = sorted(set(keys), key=lambda k: tuple(order_key(v) for v in k))
        shown = {method_name(r) for _, r in rows.iterrows()}
        base = shown.pop() if len(shown) == 1 else str(method)  # vggt*: every row lean
        if len(distinct) <= 1:
            labels[rows.index] = base
            continue
        names = {k: f"{base}#{i}" for i, k in enumerate(distinct, start=1)}
        labels[rows.index] = keys.map(names)
        differ = [i for i, c in enumerate(params) if len({k[i] for k in distinct}) > 1]
        legend[str(method)] = pd.DataFrame(
            [[names[k], *(fmt_value(k[i]) for i in differ)] for k in distinct],
            columns=[VARIANT, *(params[i] for i in differ)],
        )
    return labels, legend


def with_variants(table: pd.DataFrame, run: RunData) -> pd.DataFrame:
    """``table`` (rows of the run's points, with their ``point_hash``) with a ``variant`` column
    after ``method``."""
    labels, _ = variants(run.points, run.suite)
    by_hash = dict(zip(run.points[C.HASH], labels)) if C.HASH in run.points.columns else {}
    out = table.copy()
    where = list(out.columns).index(C.METHOD) + 1 if C.METHOD in out.columns else 0
    out.insert(where, VARIANT, out[C.HASH].map(by_hash) if C.HASH in out.columns else "")
    return out


# ---------------------------------------------------------------------------- key columns


def _direction(metrics: dict[str, Any], col: str) -> bool | None:
    info = metrics.get(col)
    return info.get("higher_is_better") if isinstance(info, dict) else None


def _numeric_varying(points: pd.DataFrame, col: str) -> bool:
    vals = pd.to_numeric(points[col], errors="coerce").dropna()
    return len(vals) > 0 and vals.nunique() > 1


def directed_columns(points: pd.DataFrame, metrics: dict[str, Any], prefix: str) -> list[str]:
    """Numeric ``prefix`` columns with a direction in ``metrics`` that vary across ``points``, the
    headline metrics (:data:`HEADLINE_METRICS`) first, then in column order."""
    cols = [c for c in metric_columns(points, prefix)
            if _direction(metrics, c) is not None and _numeric_varying(points, c)]
    return sorted(cols, key=lambda c: HEADLINE_METRICS.index(c) if c in HEADLINE_METRICS
                  else len(HEADLINE_METRICS))


def accuracy_columns(points: pd.DataFrame, metrics: dict[str, Any]) -> list[str]:
    """The columns that say how good the result is: task quality (``q_*``) when the run measured
    any, else fidelity to the reference (``fid_*``); see :func:`directed_columns`."""
    return (directed_columns(points, metrics, C.QUALITY_PREFIX)
            or directed_columns(points, metrics, C.FIDELITY_PREFIX))


def work_columns(points: pd.DataFrame, metrics: dict[str, Any]) -> list[str]:
    """The work counters that say how much was saved: kept tokens, BOPs (:data:`HEADLINE_WORK`
    first), else the declared cost axes; only those that vary across ``points``."""
    cols = [c for c in metric_columns(points, C.WORK_PREFIX) if _numeric_varying(points, c)]
    named = [c for c in cols if c in HEADLINE_WORK]
    named.sort(key=HEADLINE_WORK.index)
    if named:
        return named
    return [c for c in cols if isinstance(metrics.get(c), dict) and metrics[c].get("cost_axis")]


def workload_axes(run: RunData | pd.DataFrame, suite: dict[str, Any]) -> list[str]:
    """Swept config columns that are not the method's own: the workload setting of a row."""
    pts = _ok(run)
    specific = set(method_specific_params(pts, suite))
    return [a for a in swept_axes(pts) if a != C.METHOD and a not in specific]


# ---------------------------------------------------------------------------- speedup


SPEEDUP_CI_LEVEL = 0.95
SPEEDUP_BOOT = 1000  # bootstrap replicates per speedup


def counted(points: pd.DataFrame) -> bool:
    """Whether any of ``points`` had its instructions counted (``timing.mode: instructions``)."""
    return C.INSTRUCTIONS in points.columns and bool(pd.to_numeric(points[C.INSTRUCTIONS], errors="coerce")
                                                      .notna().any())


def add_speedup(points: pd.DataFrame, suite: dict[str, Any],
                samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return a copy of ``points`` with a ``speedup`` column (and, given the run's raw ``samples``,
    its 95 % percentile-bootstrap interval ``speedup_ci_low`` / ``speedup_ci_high``: each replicate
    resamples the point's and its reference's samples and divides their medians, seeded per point).

    speedup = latency of the reference method's ok point with the same workload-level config
    (every non-method parameter equal: frames, seq_len, device, dtype, seed, ...) divided by
    this point's latency. Reference rows get exactly 1.0; points without an ok reference
    match, and points that are not ok, get NaN. Method-specific parameters are not part
    of the match. When several reference points share a key (the reference's own parameters
    swept), their median latency is used. Points whose instructions were counted get NaN: their
    latencies are wall times under valgrind, which say nothing of native speed.
    """
    out = points.copy()
    out[C.SPEEDUP] = np.nan
    ref = suite.get("reference")
    if ref is None or C.LAT_MEDIAN not in out.columns or C.METHOD not in out.columns or out.empty:
        return out
    keys = match_key_columns(out, suite)
    lat = pd.to_numeric(out[C.LAT_MEDIAN], errors="coerce")
    if C.INSTRUCTIONS in out.columns:
        lat = lat.where(pd.to_numeric(out[C.INSTRUCTIONS], errors="coerce").isna())
    ok = (out[C.STATUS] == C.OK) if C.STATUS in out.columns else pd.Series(True, index=out.index)
    usable = ok & lat.notna() & (lat > 0)
    row_key = [tuple(hashable(r[c]) for c in keys) for _, r in out[keys].iterrows()] if keys \
        else [()] * len(out)
    row_key = pd.Series(row_key, index=out.index)
    is_ref = out[C.METHOD] == ref
    ref_lat: dict[tuple, list[float]] = {}
    for i in out.index[is_ref & usable]:
        ref_lat.setdefault(row_key[i], []).append(float(lat[i]))
    for i in out.index[usable]:
        if is_ref[i]:
            out.at[i, C.SPEEDUP] = 1.0
        elif row_key[i] in ref_lat:
            out.at[i, C.SPEEDUP] = float(np.median(ref_lat[row_key[i]])) / float(lat[i])
    if samples is not None and C.HASH in out.columns:
        ref_rows = out.index[is_ref & usable]
        refs = {k: [out.at[i, C.HASH] for i in ref_rows if row_key[i] == k] for k in ref_lat}
        _add_speedup_ci(out, refs, row_key, is_ref, samples)
    return out


def _add_speedup_ci(out: pd.DataFrame, refs: dict[tuple, list[str]], row_key: pd.Series, is_ref: pd.Series,
                    samples: pd.DataFrame) -> None:
    """Fill the speedup interval columns of ``out`` in place (NaN without samples on both sides)."""
    out[SPEEDUP_LOW] = np.nan
    out[SPEEDUP_HIGH] = np.nan
    if samples.empty or C.DEVICE_MS not in samples.columns:
        return
    by_hash = {str(h): g[C.DEVICE_MS].dropna().to_numpy(float) for h, g in samples.groupby(C.HASH)}
    for i in out.index[out[C.SPEEDUP].notna()]:
        if is_ref[i]:
            out.at[i, SPEEDUP_LOW] = out.at[i, SPEEDUP_HIGH] = 1.0
            continue
        mine = by_hash.get(str(out.at[i, C.HASH]), np.empty(0))
        theirs = np.concatenate([by_hash.get(str(h), np.empty(0)) for h in refs.get(row_key[i], [])] or
                                [np.empty(0)])
        if mine.size >= 2 and theirs.size >= 2:
            seed = [zlib.crc32(str(out.at[i, C.HASH]).encode())]
            lo, hi = S.bootstrap_ratio_ci(mine, theirs, n_boot=SPEEDUP_BOOT, rng=np.random.default_rng(seed),
                                          level=SPEEDUP_CI_LEVEL)
            out.at[i, SPEEDUP_LOW], out.at[i, SPEEDUP_HIGH] = lo, hi


# ---------------------------------------------------------------------------- tables


def _sort_rows(df: pd.DataFrame, by: Sequence[str], reference: str | None) -> pd.DataFrame:
    if df.empty or not by:
        return df
    tmp = df.copy()
    sort_cols = []
    if C.METHOD in by and reference is not None:
        tmp["__not_ref"] = tmp[C.METHOD] != reference
        sort_cols.append("__not_ref")
    sort_cols += list(by)
    try:
        tmp = tmp.sort_values(sort_cols, na_position="first", kind="stable")
    except TypeError:  # mixed types in an object column: keep the run's order
        pass
    return tmp.drop(columns=["__not_ref"], errors="ignore")


def summary_columns(points: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    """Column order of the summary: axes, instructions (where counted), latency, speedup, resources,
    work, breakdown, efficiency, quality, fidelity, then the point hash."""
    cols = list(axes) or ([C.METHOD] if C.METHOD in points.columns else [])
    for c in (C.INSTRUCTIONS, C.LAT_MEDIAN, C.LAT_IQR, C.STABLE, C.SPEEDUP, SPEEDUP_LOW, SPEEDUP_HIGH,
              *RESOURCE_COLUMNS):
        if c in points.columns and (c in (C.LAT_MEDIAN, C.SPEEDUP) or points[c].notna().any()):
            cols.append(c)
    prefixes = (C.WORK_PREFIX, C.BREAKDOWN_PREFIX, C.EFFICIENCY_PREFIX, C.QUALITY_PREFIX, C.FIDELITY_PREFIX)
    for prefix in prefixes:
        cols += metric_columns(points, prefix)
    if C.HASH in points.columns:
        cols.append(C.HASH)
    return cols


def summary_table(run: RunData) -> pd.DataFrame:
    """One row per ok point: swept axes, latency median and IQR (ms), speedup, energy/memory
    where present, work counters, breakdown phases, quality and fidelity columns, point hash.

    Values stay numeric; see :func:`format_table` for display.
    """
    pts = add_speedup(run.points, run.suite, run.samples)
    ok = _ok(pts)
    axes = swept_axes(ok)
    cols = summary_columns(ok, axes)
    table = ok[cols]
    return _sort_rows(table, axes, run.suite.get("reference")).reset_index(drop=True)


def failed_table(run: RunData) -> pd.DataFrame:
    """Points whose status is not ok (failed / oom / nan) with their config and error text."""
    pts = run.points
    if C.STATUS not in pts.columns:
        return pd.DataFrame(columns=[C.HASH, C.STATUS, C.ERROR])
    bad = pts[pts[C.STATUS] != C.OK]
    axes = varying_columns(pts) or ([C.METHOD] if C.METHOD in pts.columns else [])
    cols = [c for c in (C.HASH, *axes, C.STATUS, C.ERROR) if c in pts.columns]
    return bad[cols].reset_index(drop=True)


#: plain VGGT in its memory-lean mode (bf16 on CUDA, only the layers the heads read) is the papers'
#: baseline "VGGT*"; tables name it so
LEAN_BASELINE = ("vggt", "lean", "vggt*")


def method_name(row: pd.Series | dict[str, Any]) -> str:
    """The row's method as tables name it: ``vggt*`` for plain VGGT run with ``lean: true``."""
    name = fmt_value(row.get(C.METHOD))
    method, flag, starred = LEAN_BASELINE
    lean = row.get(flag)
    return starred if name == method and not is_missing(lean) and bool(lean) else name


def unstarred(label: str) -> str:
    """The method of a label (``vggt*#2`` or ``vggt* r=1`` -> ``vggt``)."""
    return str(label).split(" ")[0].partition("#")[0].rstrip("*")


def method_label(row: pd.Series | dict[str, Any], params: Iterable[str]) -> str:
    """``method`` plus the given parameters that the row has, e.g. ``httm r=0.5 groups=4``."""
    parts = [method_name(row)]
    for p in params:
        v = row.get(p)
        if not is_missing(v):
            parts.append(f"{p}={fmt_value(v)}")
    return " ".join(x for x in parts if x)


def pivot_table(
    run: RunData,
    value: str = C.SPEEDUP,
    index: str | Sequence[str] | None = None,
    columns: str = C.METHOD,
) -> pd.DataFrame | None:
    """A compact view: ``value`` by ``index`` (rows) and method (columns).

    index defaults to the workload-level swept axes (e.g. ``seq_len``). With
    ``columns="method"`` each column is a method label that also carries the method's own swept
    parameters (``httm r=0.5``); with ``columns="variant"`` it is the variant's short label
    (``httm#2``, see :func:`variants`). Returns None when it does not fit: no index axis, no such
    value column, or more than one point per cell (another axis varies).
    """
    pts = add_speedup(run.points, run.suite)
    if columns == VARIANT:
        pts[VARIANT] = variants(pts, run.suite)[0]
    pts = _ok(pts)
    if pts.empty or value not in pts.columns:
        return None
    axes = swept_axes(pts)
    specific = set(method_specific_params(pts, run.suite))
    if index is None:
        index = [a for a in axes if a not in specific and a != columns
                 and not (columns == VARIANT and a == C.METHOD)]
    index = [index] if isinstance(index, str) else list(index)
    if not index or any(i not in pts.columns for i in index) or columns not in pts.columns:
        return None
    tmp = pts.copy()
    if columns == C.METHOD:
        extra = [a for a in axes if a in specific]
        tmp["__col"] = [method_label(r, extra) for _, r in tmp.iterrows()]
    elif columns == VARIANT:
        tmp["__col"] = tmp[VARIANT]
    else:
        tmp["__col"] = tmp[columns].map(fmt_value)
    for i in index:
        tmp[i] = tmp[i].map(hashable)
    if tmp.duplicated(subset=[*index, "__col"]).any():
        return None
    ref = run.suite.get("reference")
    order = list(dict.fromkeys(tmp.sort_values("__col")["__col"]))
    if columns == VARIANT:
        order.sort(key=variant_order(ref))
    elif columns == C.METHOD and ref is not None:
        order.sort(key=lambda label: unstarred(label) != ref)
    piv = tmp.pivot(index=index, columns="__col", values=value)
    piv = piv[order]
    piv.columns.name = columns
    return piv


def variant_order(reference: str | None) -> Any:
    """Sort key of variant labels: the reference first, then by method, then by number."""
    def key(label: str) -> tuple[bool, str, int]:
        method, _, num = str(label).partition("#")
        return (unstarred(method) != reference, method, int(num) if num.isdigit() else 0)
    return key


def sort_by_variant(df: pd.DataFrame, reference: str | None, first: Sequence[str] = ()) -> pd.DataFrame:
    """Rows ordered by the ``first`` columns (the workload setting), then by variant: the reference
    first, ``httm#2`` before ``httm#10``."""
    if df.empty or VARIANT not in df.columns:
        return df
    key = variant_order(reference)
    tmp = df.assign(__v=df[VARIANT].map(key))
    cols = [*[c for c in first if c in df.columns], "__v"]
    try:
        tmp = tmp.sort_values(cols, kind="stable", na_position="first")
    except TypeError:
        tmp = tmp.sort_values("__v", kind="stable")
    return tmp.drop(columns="__v")


# ---------------------------------------------------------------------------- formatting


def speedup_text(df: pd.DataFrame, i: Any) -> str:
    """Row ``i``'s speedup with its interval where it has one: ``11.4 [10.9, 12]``."""
    v = df.at[i, C.SPEEDUP]
    text = fmt_num(v)
    if SPEEDUP_LOW in df.columns and not is_missing(v) and v != 1.0:
        lo, hi = df.at[i, SPEEDUP_LOW], df.at[i, SPEEDUP_HIGH]
        if not (is_missing(lo) or is_missing(hi)):
            text += f" [{fmt_num(lo)}, {fmt_num(hi)}]"
    return text


UNSTABLE_MARK = " !"  # after the latency of a point whose samples were judged unstable


def judged_unstable(v: Any) -> bool:
    """Whether a ``stable`` value says unstable (False, numpy's False; not None/NaN, which mean no
    verdict)."""
    return v is False or str(v) == "False"


def unstable_rows(df: pd.DataFrame) -> pd.Series:
    """Per row of ``df``: whether its samples were judged unstable (all False without the column)."""
    if C.STABLE not in df.columns:
        return pd.Series(False, index=df.index)
    return df[C.STABLE].map(judged_unstable)


def unstable_mark(df: pd.DataFrame, i: Any) -> str:
    """:data:`UNSTABLE_MARK` when row ``i`` of ``df`` was judged unstable (``stable`` False), else ''."""
    return UNSTABLE_MARK if C.STABLE in df.columns and judged_unstable(df.at[i, C.STABLE]) else ""


def format_table(df: pd.DataFrame, *, hash_short: bool = True) -> pd.DataFrame:
    """Strings for display: numbers to 3 significant figures, ``latency_median_ms`` merged with
    its IQR as ``12.3 ± 0.4``, point hashes shortened, config values compact."""
    out = pd.DataFrame(index=df.index)
    has_iqr = C.LAT_MEDIAN in df.columns and C.LAT_IQR in df.columns
    for c in df.columns:
        if (has_iqr and c == C.LAT_IQR) or c in (C.STABLE, SPEEDUP_LOW, SPEEDUP_HIGH):
            continue
        s = df[c]
        if has_iqr and c == C.LAT_MEDIAN:
            out["latency ms (± IQR)"] = [
                fmt_num(m) + (f" ± {fmt_num(q)}" if not is_missing(q) else "") + unstable_mark(df, i)
                for i, m, q in zip(df.index, s, df[C.LAT_IQR])
            ]
        elif c == C.SPEEDUP:
            out[c] = [speedup_text(df, i) for i in df.index]
        elif c == C.HASH and hash_short:
            out[c] = s.map(lambda h: "" if is_missing(h) else str(h)[:HASH_SHORT])
        elif c == C.ERROR:
            out[c] = s.map(short_error)
        elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            fmt = fmt_value if c in config_columns(df) else fmt_num
            out[c] = s.map(fmt)
        else:
            out[c] = s.map(fmt_value)
    return out


def short_error(e: Any, limit: int = 200) -> str:
    """One line of an error text for a table cell (Markdown pipes escaped, at most ``limit`` chars)."""
    if is_missing(e):
        return ""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    # a full traceback names the exception on its last line; otherwise the first line says it
    text = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    text = text.replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_pivot(piv: pd.DataFrame) -> pd.DataFrame:
    """A pivot table as strings, index levels turned into leading columns."""
    flat = piv.reset_index()
    out = pd.DataFrame(index=flat.index)
    for c in flat.columns:
        if c in piv.index.names:
            out[str(c)] = flat[c].map(fmt_value)
        else:
            out[str(c)] = flat[c].map(fmt_num)
    return out


def to_markdown(df: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown table of an already formatted frame (strings kept verbatim)."""
    if df.empty:
        return "_(none)_"
    return tabulate(
        df.astype(str).values.tolist(), headers=[str(c) for c in df.columns],
        tablefmt="github", disable_numparse=True,
    )
