"""Markdown/CSV report of one run directory.

``report(run_dir)`` prints the key tables to stdout (tabulate, github format, at most 100
columns wide: :mod:`reports.terminal`), warns on stderr when the run is incomplete, still running
or has duplicate rows (:mod:`reports.status`), writes ``report.md`` and ``points.csv`` (every
column) and ``report.html`` (self-contained: tables, figures, environment; :mod:`reports.html`)
into ``<run_dir>/report/`` (or ``out_dir``) and returns the Markdown text. It reads results files
only (``harness.store.results.load``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.measure import env as E
from harness.store import columns as C
from harness.store.results import POINTS_FILE, POINTS_LOG, RunData, load
from reports import tables as T
from reports import terminal as TV
from reports.status import RunStatus, print_warnings, run_status

REPORT_FILE = "report.md"
POINTS_CSV = "points.csv"
HTML_FILE = "report.html"
DEFAULT_SUBDIR = "report"

_TIMER_NOTES = {
    "cuda_event": "CUDA events recorded around each call on the benchmark stream (device time; "
                  "one synchronisation after the samples)",
    "cuda_graph": "CUDA-graph replays timed with CUDA events (host launch overhead hidden)",
    "perf_counter": "the host clock (time.perf_counter) around each call (CPU runs)",
}


# ---------------------------------------------------------------------------- env summary


def env_summary(env: dict[str, Any], points: pd.DataFrame | None = None) -> str:
    """One line: device, GPU name, torch/CUDA versions, CPU model and threads, commit.

    Reads ``env.json`` by the keys :mod:`harness.measure.env` writes; absent fields are left out.
    """
    env = env or {}

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


# ---------------------------------------------------------------------------- notes


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


# ---------------------------------------------------------------------------- report


def peak_sources(run: RunData) -> str:
    """Where the run's peaks come from (env.json ``peaks``), in one line."""
    from harness.measure.efficiency import PEAKS_KEY

    peaks = run.env.get(PEAKS_KEY) or {}
    text = "; ".join(f"{k}: {v.get('source')}" for k, v in peaks.items() if isinstance(v, dict))
    return text or "none recorded"


def _title(run: RunData) -> str:
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
    )


def markdown(parts: ReportParts) -> str:
    """``report.md``: every column of every table (the terminal shows a selection)."""
    lines = [f"# {parts.title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in parts.meta]
    lines.append(f"- **environment**: {env_summary(parts.run.env, parts.run.points)}")
    lines.append(f"- **points**: {parts.points_line()}")
    lines += [f"- **warning**: {w}" for w in parts.status.warnings()]
    lines += ["", "## Results", ""]
    if parts.summary.empty:
        lines.append("_No point finished ok._")
    else:
        lines.append(T.to_markdown(T.format_table(parts.summary.drop(columns=[C.HASH], errors="ignore"))))
    if parts.legend:
        lines += ["", "## Variants", "", "Parameters that differ between the variants of a method "
                  "(all of them are columns of the results).", ""]
        for method, df in parts.legend.items():
            lines += [f"**{method}**", "", T.to_markdown(df), ""]
        lines.pop()
    if parts.pivot is not None:
        frame, _ = TV.pivot_frame(parts.pivot)
        lines += ["", f"## {parts.pivot_title}", "", T.to_markdown(frame)]
    lines += ["", "## Failed points", ""]
    lines.append("_None._" if parts.failed.empty else T.to_markdown(T.format_table(parts.failed)))
    lines += ["", "## How latency was measured", "", parts.timing]
    if parts.metric_notes:
        lines += ["", "## Metrics", ""]
        lines += [f"- `{col}`{f' [{unit}]' if unit else ''}: {help_}{f' ({arrow})' if arrow else ''}"
                  for col, unit, help_, arrow in parts.metric_notes]
    return "\n".join(lines) + "\n"


def terminal(parts: ReportParts, out: Path | None = None, limit: int = TV.WIDTH) -> str:
    """The tables as printed: at most ``limit`` columns wide, the key columns only."""
    name = parts.run.suite.get("name") or parts.run.manifest.get("suite") or parts.run.path.name
    ref = parts.run.suite.get("reference")
    head = f"{name} · points: {parts.points_line()}" + (f" · reference {ref}" if ref else "")
    lines = [TV.wrap(head, limit), TV.wrap(f"environment: {env_summary(parts.run.env, parts.run.points)}",
                                           limit, "  "), ""]
    left_out: list[str] = []
    if parts.summary.empty:
        lines.append("No point finished ok.")
    else:
        text, shown, left_out = TV.results_table(parts.summary, parts.run.metrics, parts.axes, limit)
        notes = [f"{TV.LATENCY}: median ± IQR of the timed calls"] if C.LAT_MEDIAN in shown else []
        if C.SPEEDUP in shown:
            notes.append("speedup: the reference's median latency at the same workload setting / the point's")
        lines += [text, *([TV.wrap("; ".join(notes) + ".", limit)] if notes else [])]
    if parts.legend:
        lines += ["", "Variants (the parameters that differ between a method's variants):", "",
                  TV.legend(parts.legend, limit)]
    if parts.pivot is not None:
        frame, fits = TV.pivot_frame(parts.pivot, limit)
        lines += ["", f"{parts.pivot_title}:", ""]
        lines.append(T.to_markdown(frame) if fits else "(too wide for the terminal: see report.md)")
    eff = None if parts.summary.empty else TV.efficiency_table(parts.summary, parts.axes, limit)
    if eff is not None:
        what = ("Efficiency (*_frac: of the device's peak; tflop_s: achieved TFLOP/s; the phases' from the "
                f"breakdown pass). Peak: {peak_sources(parts.run)}.")
        lines += ["", TV.wrap(what, limit), "", eff]
        left_out = [c for c in left_out if not c.startswith(C.EFFICIENCY_PREFIX)]
    lines.append("")
    if parts.failed.empty:
        lines.append("Failed points: none.")
    else:
        hide = T.method_specific_params(parts.run.points, parts.run.suite)
        lines += [f"Failed points ({len(parts.failed)}):", "", TV.failed_table(parts.failed, hide, limit)]
    if left_out:
        lines += ["", TV.wrap(f"Not shown here ({len(left_out)} columns): {', '.join(left_out)}.", limit)]
    if out is not None:
        files = ", ".join(str(out / f) for f in (REPORT_FILE, POINTS_CSV, HTML_FILE))
        lines += [TV.wrap(f"Every column, the figures, the environment: {files}", limit)]
    return "\n".join(lines) + "\n"


def build_report(run: RunData) -> tuple[str, pd.DataFrame]:
    """Markdown text of the report and the numeric summary table (with the ``variant`` column)."""
    parts = gather(run)
    return markdown(parts), parts.summary


def _metric_notes(run: RunData) -> list[tuple[str, str, str, str]]:
    out = []
    for col, info in sorted(run.metrics.items()):
        if col not in run.points.columns or not isinstance(info, dict):
            continue
        hib = info.get("higher_is_better")
        arrow = "" if hib is None else ("higher is better" if hib else "lower is better")
        out.append((col, str(info.get("unit") or ""), str(info.get("help", "")), arrow))
    return out


def _points_mtime(run_dir: Path) -> float:
    times = [p.stat().st_mtime for p in (run_dir / POINTS_LOG, run_dir / POINTS_FILE) if p.exists()]
    return max(times, default=0.0)


def _html(parts: ReportParts) -> str:
    """``report.html`` with the figures of ``<run>/plots`` embedded when they are newer than the
    points, else with figures drawn for it (PNG, in a temporary folder)."""
    from reports import html
    from reports import plots as P

    run_dir = parts.run.path
    pngs = sorted((run_dir / P.DEFAULT_SUBDIR).glob("*.png"))
    if pngs and min(p.stat().st_mtime for p in pngs) >= _points_mtime(run_dir):
        return html.render(parts, P.order_figures(pngs))
    with tempfile.TemporaryDirectory(prefix="harness-figures-") as tmp:
        figures = [p for p in P.plot_data(parts.run, Path(tmp), formats=("png",)) if p.suffix == ".png"]
        return html.render(parts, figures)


def report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> str:
    """Print the run's key tables (at most 100 columns wide; warnings about an incomplete, running
    or duplicated run on stderr) and write ``report.md``, ``points.csv`` and ``report.html``.

    out_dir defaults to ``<run_dir>/report/``. Returns the Markdown text.
    """
    run = load(run_dir)
    parts = gather(run)
    print_warnings(parts.status)
    text = markdown(parts)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / DEFAULT_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_FILE).write_text(text)
    parts.summary.to_csv(out / POINTS_CSV, index=False)
    (out / HTML_FILE).write_text(_html(parts), encoding="utf-8")
    print(terminal(parts, out), end="")
    return text
