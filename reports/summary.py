"""Markdown/CSV report of one run directory.

``report(run_dir)`` prints the key tables to stdout (tabulate, github format, at most 100
columns wide: :mod:`reports.terminal`), warns on stderr when the run is incomplete, still running
or has duplicate rows (:mod:`reports.status`), writes ``report.md`` and ``points.csv`` (every
column) and ``report.html`` (self-contained: tables, figures, environment; :mod:`reports.html`)
into ``<run_dir>/report/`` (or ``out_dir``) and returns the Markdown text. It reads results files
only (``harness.store.load``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from harness.store import POINTS_FILE, POINTS_LOG, RunData, load
from harness.store import columns as C
from reports import html
from reports import plots as P
from reports import tables as T
from reports import terminal as TV
from reports.parts import ReportParts, env_summary, gather, peak_sources
from reports.status import print_warnings

REPORT_FILE = "report.md"
POINTS_CSV = "points.csv"
HTML_FILE = "report.html"
DEFAULT_SUBDIR = "report"


def markdown(parts: ReportParts) -> str:
    """``report.md``: every column of every table (the terminal shows a selection)."""
    lines = [f"# {parts.title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in parts.meta]
    lines.append(f"- **environment**: {env_summary(parts.run.env, parts.run.points)}")
    lines.append(f"- **points**: {parts.points_line()}")
    lines += [f"- **warning**: {w}" for w in parts.warnings]
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
        notes = [TV.latency_note(parts.summary)] if C.LAT_MEDIAN in shown else []
        if C.INSTRUCTIONS in shown:
            notes.insert(0, f"{TV.INSTRUCTIONS}: median instructions per call, counted under valgrind")
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


def _points_mtime(run_dir: Path) -> float:
    times = [p.stat().st_mtime for p in (run_dir / POINTS_LOG, run_dir / POINTS_FILE) if p.exists()]
    return max(times, default=0.0)


def _html(parts: ReportParts) -> str:
    """``report.html`` with the figures of ``<run>/plots`` embedded when they are newer than the
    points, else with figures drawn for it (PNG, in a temporary folder)."""
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
    print_warnings(parts.warnings)
    text = markdown(parts)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / DEFAULT_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_FILE).write_text(text)
    parts.summary.to_csv(out / POINTS_CSV, index=False)
    (out / HTML_FILE).write_text(_html(parts), encoding="utf-8")
    print(terminal(parts, out), end="")
    return text
