"""What a report of one run shows, computed once for every view (terminal, Markdown, HTML, docs pages).

:func:`gather` reads a loaded run (``harness.store.load``) into :class:`ReportParts`: metadata, the
environment in one line, the run's status, the summary table with variant labels, the failed
points, the speedup pivot and the meaning of each metric column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.measure import env as E
from harness.measure.efficiency import PEAKS_KEY
from harness.store import ENV_FILE, RunData
from harness.store import columns as C
from reports import tables as T
from reports.status import RunStatus, run_status

_TIMER_NOTES = {
    "cuda_event": "CUDA events recorded around each call on the benchmark stream (device time; "
                  "one synchronisation after the samples)",
    "cuda_graph": "CUDA-graph replays timed with CUDA events (host launch overhead hidden)",
    "perf_counter": "the host clock (time.perf_counter) around each call (CPU runs)",
}


def env_summary(env: dict[str, Any], points: pd.DataFrame | None = None) -> str:
    """One line: device, GPU name, torch/CUDA versions, CPU model and threads, commit.

    Reads ``env.json`` by the keys :mod:`harness.measure.env` writes; absent fields are left out.
    """
    if not env:
        return (f"unknown ({ENV_FILE} is missing or empty: no fingerprint of the machine, torch version or "
                "commit)")

    def get(key: str) -> Any:
        v = env.get(key)
        return None if T.is_missing(v) or v == "" else v

    parts = []
    devices = []
    if points is not None and "device" in points.columns:
        devices = sorted({str(d) for d in points["device"].dropna()})
    if devices:
        parts.append("device " + ", ".join(devices))
    for label, key in (("GPU", E.GPU_NAME), ("torch", E.TORCH), ("CUDA", E.CUDA), ("driver", E.GPU_DRIVER)):
        if get(key) is not None:
            parts.append(f"{label} {get(key)}")
    cpu, threads = get(E.CPU_MODEL), get(E.TORCH_THREADS)
    if threads is None and points is not None and C.THREADS in points.columns:
        vals = sorted({int(t) for t in points[C.THREADS].dropna()})
        threads = ", ".join(map(str, vals)) if vals else None
    cpu_text = f"CPU {cpu}" if cpu is not None else "CPU"
    if threads is not None:
        cpu_text += f", {threads} threads"
    if cpu is not None or threads is not None:
        parts.append(cpu_text)
    if get(E.GIT_COMMIT) is not None:
        parts.append(f"commit {str(get(E.GIT_COMMIT))[:10]}{' (dirty)' if get(E.GIT_DIRTY) else ''}")
    return " · ".join(parts) if parts else "(no environment fingerprint recorded)"


def timing_note(points: pd.DataFrame, suite: dict[str, Any] | None = None) -> str:
    """How latency was measured, from the ``timer``, ``n_samples`` and ``n_warmup`` columns
    (and the suite's ``timing`` settings when given)."""
    ok = points[points[C.STATUS] == C.OK] if C.STATUS in points.columns else points
    timers = sorted({str(t) for t in ok[C.TIMER].dropna()}) if C.TIMER in ok.columns else []
    if not timers:
        how = "the timer was not recorded"
    else:
        how = "; ".join(f"`{t}`: {_TIMER_NOTES.get(t, 'timer ' + t)}" for t in timers)
    text = (
        f"Latency is the median over the per-call samples of each point ({how}); "
        "± is the interquartile range of those samples. Speedup is the reference method's "
        "median latency at the same workload-level configuration divided by the point's."
    )

    def _range(col: str) -> str | None:
        if col not in ok.columns or ok[col].dropna().empty:
            return None
        lo, hi = int(ok[col].min()), int(ok[col].max())
        return str(lo) if lo == hi else f"{lo}–{hi}"

    n, w = _range(C.N_SAMPLES), _range(C.N_WARMUP)
    if n is not None:
        text += f" Samples per point: {n}"
        text += f" after {w} warm-up calls." if w is not None else "."
    timing = (suite or {}).get("timing") or {}
    if timing.get("flush_l2"):
        text += " On CUDA, a buffer larger than L2 was zeroed before each sample (cold cache)."
    if timing.get("cuda_graph"):
        text += " On CUDA, the call was captured once and CUDA-graph replays were timed."
    if C.THROTTLED in ok.columns:
        n_thr = int(ok[C.THROTTLED].fillna(False).astype(bool).sum())
        if n_thr:
            text += f" **{n_thr} point(s) saw power/thermal throttling**; their timings are suspect."
    return text


def peak_sources(run: RunData) -> str:
    """Where the run's peaks come from (env.json ``peaks``), in one line."""
    peaks = run.env.get(PEAKS_KEY) or {}
    text = "; ".join(f"{k}: {v.get('source')}" for k, v in peaks.items() if isinstance(v, dict))
    return text or "none recorded"


def _title(run: RunData) -> str:
    """The report's title: the suite's name."""
    name = run.suite.get("name") or run.manifest.get("suite") or run.path.name
    return f"Benchmark report: {name}"


@dataclass
class ReportParts:
    """Everything a report shows, computed once for the terminal, Markdown and HTML views."""

    run: RunData
    title: str
    meta: list[tuple[str, str]]
    status: RunStatus
    summary: pd.DataFrame  # one row per ok point, numeric, with the ``variant`` column
    axes: list[str]  # the workload setting of a row (swept workload-level columns)
    failed: pd.DataFrame
    legend: dict[str, pd.DataFrame]  # method -> its variants and the parameters that differ
    pivot: pd.DataFrame | None  # speedup by workload setting (rows) and variant (columns)
    timing: str
    metric_notes: list[tuple[str, str, str, str]]  # column, unit, help, direction
    n_points: int = 0
    notes: list[str] = field(default_factory=list)  # what the figures themselves cannot be trusted for

    @property
    def warnings(self) -> list[str]:
        """The run's warnings (incomplete, running, damaged, duplicated) and the figures' own."""
        return self.status.warnings() + self.notes

    @property
    def pivot_title(self) -> str:
        return "Speedup by " + ", ".join(map(str, self.pivot.index.names)) if self.pivot is not None else ""

    def points_line(self) -> str:
        expected = self.status.expected
        total = f" of {expected} expected" if expected is not None and expected != self.n_points else ""
        return f"{self.n_points}{total} ({len(self.summary)} ok, {len(self.failed)} not ok)"


def gather(run: RunData) -> ReportParts:
    """The report's parts for a loaded run."""
    axes = T.workload_axes(run, run.suite)
    reference = run.suite.get("reference")
    summary = T.sort_by_variant(T.with_variants(T.summary_table(run), run), reference, axes)
    summary, notes = hide_impossible_efficiency(summary, run)
    notes += unstable_points(summary, run, axes)
    failed = T.with_variants(T.failed_table(run), run)
    _, legend = T.variants(run.points, run.suite)
    piv = T.pivot_table(run, columns=T.VARIANT)
    meta = [
        ("run", run.manifest.get("run_id") or run.path.name),
        ("suite", run.suite.get("name") or run.manifest.get("suite")),
        ("workload", run.suite.get("workload")),
        ("reference", reference),
        ("created", run.manifest.get("created_at")),
    ]
    return ReportParts(
        run=run, title=_title(run), meta=[(k, str(v)) for k, v in meta if v is not None],
        status=run_status(run), summary=summary.reset_index(drop=True), axes=axes, failed=failed,
        legend=legend, pivot=piv if piv is not None and piv.shape[1] > 1 and piv.notna().any().any()
        else None,
        timing=timing_note(run.points, run.suite), metric_notes=_metric_notes(run), n_points=len(run.points),
        notes=notes,
    )


SHOW_UNSTABLE = 5  # unstable points named in the warning


def unstable_points(summary: pd.DataFrame, run: RunData, axes: list[str]) -> list[str]:
    """One warning naming the points whose samples were judged unstable (``stable`` False) and
    why (:mod:`harness.measure.stability`), with what to do; [] when there are none."""
    if C.STABLE not in summary.columns or summary.empty:
        return []
    bad = summary[T.unstable_rows(summary)]
    if bad.empty:
        return []
    why = run.points.drop_duplicates(C.HASH, keep="last").set_index(C.HASH).get(C.UNSTABLE_WHY)
    named = []
    for _, r in bad.head(SHOW_UNSTABLE).iterrows():
        where = " ".join(f"{a}={T.fmt_value(r[a])}" for a in axes if a in r and not T.is_missing(r[a]))
        reason = "" if why is None or r.get(C.HASH) not in why.index else f": {why.loc[r[C.HASH]]}"
        named.append(f"{r[T.VARIANT]}{' ' + where if where else ''}{reason}")
    more = f"; and {len(bad) - SHOW_UNSTABLE} more" if len(bad) > SHOW_UNSTABLE else ""
    return [f"{len(bad)} of {len(summary)} points were measured unstably ({'; '.join(named)}{more}); "
            f"their figures may not repeat ('{T.UNSTABLE_MARK.strip()}' marks them in the tables). Re-run "
            "them on a quiet machine, or give them more time (timing.budget_s, timing.max_samples)"]


#: columns naming what a peak was measured for: a point's (device, dtype, threads)
PEAK_GROUP = ("device", "dtype", C.THREADS)


def hide_impossible_efficiency(summary: pd.DataFrame, run: RunData) -> tuple[pd.DataFrame, list[str]]:
    """The summary with the ``eff_*_frac`` columns emptied for every (device, dtype, threads) where
    some point ran above the recorded peak (a fraction > 1 means the peak is wrong, typically a CPU
    calibration measured while the machine was busy), and one warning per such group. Achieved
    TFLOP/s and GB/s stay: they do not depend on the peak."""
    fracs = [c for c in summary.columns if c.startswith(C.EFFICIENCY_PREFIX) and c.endswith("_frac")]
    if not fracs or summary.empty:
        return summary, []
    over = summary[fracs].apply(pd.to_numeric, errors="coerce").gt(1.0)
    if not over.any().any():
        return summary, []
    # the summary drops settings every point shares: read each row's group from its point
    pts = run.points.drop_duplicates(C.HASH, keep="last").set_index(C.HASH)
    keys = [k for k in PEAK_GROUP if k in pts.columns]
    group = (pts.loc[summary[C.HASH], keys].reset_index(drop=True).set_axis(summary.index)
             if keys and C.HASH in summary.columns else pd.DataFrame(index=summary.index))
    out, notes = summary.copy(), []
    groups = group.groupby(keys, dropna=False).groups if keys and not group.empty else {(): out.index}
    for key, idx in groups.items():
        bad = over.loc[idx]
        if not bad.any().any():
            continue
        col = bad.any().idxmax()
        worst = float(pd.to_numeric(out.loc[idx, col], errors="coerce").max())
        out.loc[idx, fracs] = float("nan")
        values = key if isinstance(key, tuple) else (key,)
        where = ", ".join(f"{k} {v}" for k, v in zip(keys, values)) or "this run"
        notes.append(
            f"efficiency above the recorded peak: {col} reached {worst:.2f} ({worst:.0%}) at {where}, so the "
            f"peak recorded for it ({peak_sources(run)}) is too low, most likely "
            "calibrated while other work loaded the machine; the *_frac columns of those points are hidden "
            "(achieved TFLOP/s and GB/s stay). Re-run on a quiet machine: each run calibrates its peaks at "
            "its start")
    return out, notes


def _metric_notes(run: RunData) -> list[tuple[str, str, str, str]]:
    """(column, unit, help, direction) of each metric column the run has."""
    out = []
    for col, info in sorted(run.metrics.items()):
        if col not in run.points.columns or not isinstance(info, dict):
            continue
        hib = info.get("higher_is_better")
        arrow = "" if hib is None else ("higher is better" if hib else "lower is better")
        out.append((col, str(info.get("unit") or ""), str(info.get("help", "")), arrow))
    return out
