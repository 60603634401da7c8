"""The terminal view of a run: tables that fit :data:`WIDTH` columns.

The first column is the variant's short label (``httm#3``; :func:`reports.tables.variants`),
then the workload setting (the swept workload-level axes), then as many of the columns that
matter for the suite as fit, in this priority: speedup, the headline accuracy or fidelity metric,
the headline work counter (kept tokens, BOPs), latency, then the next ones. Everything else is in
``report.md``, ``points.csv`` and ``report.html``; the legend maps each label to its parameters.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

import pandas as pd

from harness.store import columns as C
from reports import tables as T

WIDTH = 100
LABEL = C.METHOD  # header of the first column: the variant label (``vggt``, ``httm#3``)
LATENCY = "latency ms"  # median ± IQR
INSTRUCTIONS = "instructions"  # per call, where counted
IQR_DIGITS = 2


def width(text: str) -> int:
    """Longest line of ``text``."""
    return max((len(line) for line in text.splitlines()), default=0)


def wrap(text: str, limit: int = WIDTH, indent: str = "") -> str:
    """``text`` wrapped to ``limit`` columns (long words are broken, so nothing exceeds it)."""
    return "\n".join(textwrap.wrap(text, limit, subsequent_indent=indent, break_on_hyphens=False)) or text


def _cells(table: pd.DataFrame, col: str, axes: Sequence[str]) -> tuple[str, list[str]]:
    """Header and formatted cells of one terminal column."""
    if col == T.VARIANT:
        return LABEL, [str(v) for v in table[T.VARIANT]]
    if col in axes:
        return col, [T.fmt_value(v) for v in table[col]]
    if col == C.LAT_MEDIAN:
        iqr = table[C.LAT_IQR] if C.LAT_IQR in table.columns else [None] * len(table)
        return LATENCY, [T.fmt_num(m) + ("" if T.is_missing(q) else f" ± {T.fmt_num(q, IQR_DIGITS)}")
                         + T.unstable_mark(table, i) for i, m, q in zip(table.index, table[col], iqr)]
    if col == C.SPEEDUP:
        return col, [T.speedup_text(table, i) for i in table.index]
    if col == C.INSTRUCTIONS:
        return INSTRUCTIONS, ["" if T.is_missing(v) else f"{v:,.0f}" for v in table[col]]
    return col, [T.fmt_num(v) for v in table[col]]


def latency_note(table: pd.DataFrame) -> str:
    """What the latency column holds: the timed calls' median ± IQR, or, in a run that counted
    instructions, the counted calls' wall times under valgrind (not comparable with timed runs)."""
    if T.counted(table):
        return f"{LATENCY}: median ± IQR of the counted calls' wall times under valgrind (not a native time)"
    return f"{LATENCY}: median ± IQR of the timed calls"


def fit(columns: Sequence[str], required: int, render: Callable[[list[str]], str],
        priority: Sequence[str], limit: int = WIDTH) -> list[str]:
    """The first ``required`` of ``columns`` plus those of ``priority`` that still fit in ``limit``
    columns when rendered (tried in priority order), in the order of ``columns``."""
    chosen = list(columns[:required])
    for col in priority:
        trial = [c for c in columns if c in set(chosen) | {col}]
        if width(render(trial)) <= limit:
            chosen = trial
    return [c for c in columns if c in set(chosen)]


def key_columns(table: pd.DataFrame, metrics: dict) -> tuple[list[str], list[str]]:
    """(display order, priority) of the measured columns the terminal table may show."""
    quality = T.directed_columns(table, metrics, C.QUALITY_PREFIX)
    fidelity = T.directed_columns(table, metrics, C.FIDELITY_PREFIX)
    acc, more = (quality, fidelity) if quality else (fidelity, [])
    work = T.work_columns(table, metrics)
    speed = [C.SPEEDUP] if C.SPEEDUP in table.columns and table[C.SPEEDUP].notna().any() else []
    lat = [C.LAT_MEDIAN] if C.LAT_MEDIAN in table.columns else []
    counted = [C.INSTRUCTIONS] if C.INSTRUCTIONS in table.columns else []  # first: its run's measure
    priority = [*counted, *speed, *acc[:1], *work[:1], *lat, *acc[1:2], *work[1:2], *more[:1], *acc[2:],
                *more[1:], *work[2:]]
    return [*counted, *lat, *speed, *acc, *more, *work], priority


def results_table(table: pd.DataFrame, metrics: dict, axes: Sequence[str],
                  limit: int = WIDTH) -> tuple[str, list[str], list[str]]:
    """The summary (one row per ok point, with a ``variant`` column) as a Markdown table that fits
    ``limit`` columns; returns (text, the columns shown, the measured columns left out)."""
    display, priority = key_columns(table, metrics)
    identity = [T.VARIANT, *axes]

    def render(cols: list[str]) -> str:
        cells = [_cells(table, c, axes) for c in cols]
        frame = pd.DataFrame({h: v for h, v in cells}, columns=[h for h, _ in cells])
        return T.to_markdown(frame)

    cols = fit([*identity, *display], len(identity), render, priority, limit)
    shown = set(cols)
    folded = (C.METHOD, C.HASH, C.LAT_IQR, C.STABLE, T.SPEEDUP_LOW, T.SPEEDUP_HIGH)  # inside other cells
    left_out = [c for c in table.columns if c not in shown and c not in folded
                and c not in T.config_columns(table) and table[c].notna().any()]
    return render(cols), cols, left_out


#: efficiency columns of the terminal, most telling first (fractions of the device's peak)
EFFICIENCY_PRIORITY = tuple(f"{C.EFFICIENCY_PREFIX}{s}" for s in (
    "flop_frac", "attention_flop_frac", "match_flop_frac", "aggregate_bw_frac", "tflop_s", "bw_frac",
    "flop_per_byte", "attention_tflop_s", "match_tflop_s", "aggregate_gb_s"))


def efficiency_table(table: pd.DataFrame, axes: Sequence[str], limit: int = WIDTH) -> str | None:
    """Per ok point: how close it (and its phases) ran to the device's peak, as many of
    :data:`EFFICIENCY_PRIORITY` as fit; None when the run has no efficiency column."""
    present = [c for c in EFFICIENCY_PRIORITY if c in table.columns and table[c].notna().any()]
    if not present:
        return None
    identity = [T.VARIANT, *axes]

    def render(cols: list[str]) -> str:
        cells = [_cells(table, c, axes) for c in cols]
        headers = [h[len(C.EFFICIENCY_PREFIX):] if h.startswith(C.EFFICIENCY_PREFIX) else h for h, _ in cells]
        return T.to_markdown(pd.DataFrame(dict(zip(headers, (v for _, v in cells))), columns=headers))

    return render(fit([*identity, *present], len(identity), render, present, limit))


def legend(tables: dict[str, pd.DataFrame], limit: int = WIDTH) -> str:
    """Per method with several variants: a table of the parameters that differ between them, or
    ``httm#3: query_merge=0.6 ...`` lines when the table would be wider than ``limit``."""
    out = []
    for _method, df in tables.items():
        text = T.to_markdown(df)
        if width(text) > limit:
            lines = []
            for _, r in df.iterrows():
                params = " ".join(f"{c}={r[c]}" for c in df.columns if c != T.VARIANT and r[c] != "")
                lines.append(wrap(f"{r[T.VARIANT]}: {params}", limit, indent="    "))
            text = "\n".join(lines)
        out.append(text)
    return "\n\n".join(out)


def pivot_frame(piv: pd.DataFrame, limit: int = WIDTH) -> tuple[pd.DataFrame, bool]:
    """A pivot (workload settings x variants) as strings: as is when it fits ``limit`` columns,
    else transposed (variants as rows, one column per setting such as ``frames=8``); the flag
    says whether the result fits."""
    flat = T.format_pivot(piv)
    if width(T.to_markdown(flat)) <= limit:
        return flat, True
    names = [str(n) for n in piv.index.names]
    settings = [" ".join(f"{n}={flat.at[i, n]}" for n in names) for i in flat.index]
    values = flat.drop(columns=names)
    trans = pd.DataFrame(values.to_numpy().T, columns=settings)
    trans.insert(0, LABEL, [str(c) for c in values.columns])
    return trans, width(T.to_markdown(trans)) <= limit


def failed_table(failed: pd.DataFrame, hide: Sequence[str] = (), limit: int = WIDTH) -> str:
    """Failed points: label, their setting, status and the error cut to fit ``limit`` columns."""
    skip = {C.HASH, C.METHOD, T.VARIANT, C.STATUS, C.ERROR, *hide}
    frame = pd.DataFrame({LABEL: failed[T.VARIANT].astype(str)}) if T.VARIANT in failed.columns \
        else pd.DataFrame(index=failed.index)
    for c in failed.columns:
        if c not in skip:
            frame[c] = failed[c].map(T.fmt_value)
    frame[C.STATUS] = failed[C.STATUS].map(T.fmt_value) if C.STATUS in failed.columns else ""
    errors = (failed[C.ERROR].map(T.short_error) if C.ERROR in failed.columns
              else pd.Series("", index=failed.index))
    room = limit - width(T.to_markdown(frame.assign(**{C.ERROR: ""}))) - 1
    room = max(room, len(C.ERROR))
    frame[C.ERROR] = [e if len(e) <= room else e[: room - 1] + "…" for e in errors]
    return T.to_markdown(frame)
