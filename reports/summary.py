"""Markdown/CSV report of one run directory.

``report(run_dir)`` prints the tables to stdout (tabulate, github format), writes
``report.md`` and ``points.csv`` into ``<run_dir>/report/`` (or ``out_dir``) and returns the
text. It reads results files only (``harness.results.load``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from harness import columns as C
from harness import env as E
from harness.results import RunData, load
from reports import tables as T

REPORT_FILE = "report.md"
POINTS_CSV = "points.csv"
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

    Reads ``env.json`` by the keys :mod:`harness.env` writes; absent fields are left out.
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


def _title(run: RunData) -> str:
    name = run.suite.get("name") or run.manifest.get("suite") or run.path.name
    return f"Benchmark report: {name}"


def build_report(run: RunData) -> tuple[str, pd.DataFrame]:
    """Markdown text of the report and the numeric summary table."""
    summary = T.summary_table(run)
    failed = T.failed_table(run)
    lines = [f"# {_title(run)}", ""]
    meta = [
        ("run", run.manifest.get("run_id") or run.path.name),
        ("suite", run.suite.get("name") or run.manifest.get("suite")),
        ("workload", run.suite.get("workload")),
        ("reference", run.suite.get("reference")),
        ("created", run.manifest.get("created_at")),
    ]
    lines += [f"- **{k}**: {v}" for k, v in meta if v is not None]
    lines.append(f"- **environment**: {env_summary(run.env, run.points)}")
    n_ok = len(summary)
    lines.append(f"- **points**: {len(run.points)} ({n_ok} ok, {len(failed)} not ok)")
    lines += ["", "## Results", ""]
    if summary.empty:
        lines.append("_No point finished ok._")
    else:
        lines.append(T.to_markdown(T.format_table(summary.drop(columns=[C.HASH], errors="ignore"))))
        piv = T.pivot_table(run)
        if piv is not None and piv.shape[1] > 1:
            lines += ["", "## Speedup by " + ", ".join(map(str, piv.index.names)), ""]
            lines.append(T.to_markdown(T.format_pivot(piv)))
    lines += ["", "## Failed points", ""]
    if failed.empty:
        lines.append("_None._")
    else:
        lines.append(T.to_markdown(T.format_table(failed)))
    lines += ["", "## How latency was measured", "", timing_note(run.points, run.suite)]
    notes = _metric_notes(run)
    if notes:
        lines += ["", "## Metrics", ""] + notes
    return "\n".join(lines) + "\n", summary


def _metric_notes(run: RunData) -> list[str]:
    out = []
    for col, info in sorted(run.metrics.items()):
        if col not in run.points.columns or not isinstance(info, dict):
            continue
        hib = info.get("higher_is_better")
        arrow = "" if hib is None else (" (higher is better)" if hib else " (lower is better)")
        unit = f" [{info['unit']}]" if info.get("unit") else ""
        out.append(f"- `{col}`{unit}: {info.get('help', '')}{arrow}")
    return out


def report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> str:
    """Print the run's tables to stdout and write ``report.md`` + ``points.csv``.

    out_dir defaults to ``<run_dir>/report/``. Returns the Markdown text.
    """
    run = load(run_dir)
    text, summary = build_report(run)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / DEFAULT_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_FILE).write_text(text)
    summary.to_csv(out / POINTS_CSV, index=False)
    print(text)
    return text
