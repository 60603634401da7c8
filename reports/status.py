"""Is a run directory complete? Expected total, points recorded, duplicates, a writer still at work.

Read only: the run's ``.lock`` is tried with a shared, non-blocking ``flock`` on a read-only file
handle and released at once (nothing is created or written); the writer holds it exclusively for
as long as it runs (:class:`harness.store.RunLock`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pandas as pd

from harness.measure.load import under_load
from harness.store import (
    POINTS_LOG,
    SAMPLES_FILE,
    SAMPLES_LOG,
    DamagedLine,
    RunData,
    lock_holder,
    resume_command_line,
)
from harness.store import columns as C

SHOW_HASHES = 3  # duplicate hashes named in the warning


def resume_command(run: RunData) -> str:
    """The command that finishes the run: its recorded command line with ``--resume RUN_DIR``."""
    source = run.manifest.get("suite_source") or run.manifest.get("suite") or "SUITE"
    return resume_command_line(run.manifest.get("argv") or [], run.path, str(source))


@dataclass(frozen=True)
class RunStatus:
    """How much of a run is on disk."""

    run_dir: Path
    expected: int | None  # points the suite resolved to (run.json's n_points)
    recorded: int  # rows in the points log
    unique: int  # distinct point hashes among them
    duplicates: dict[str, int] = field(default_factory=dict)  # point hash -> rows
    running: str | None = None  # holder of the lock while a process writes the run
    resume: str = ""
    damaged: list[DamagedLine] = field(default_factory=list)  # log lines that are not rows
    under_load: str = ""  # how the machine was loaded while points were timed ("" when it was not)
    samples_note: str = ""  # the raw samples' log is missing ("" when it is there)

    @property
    def missing(self) -> int:
        return max(0, self.expected - self.unique) if self.expected is not None else 0

    @property
    def complete(self) -> bool:
        return self.running is None and self.missing == 0

    def progress(self) -> str:
        """``24 of 26 points`` (or ``24 points`` when the expected total was not recorded)."""
        total = f" of {self.expected}" if self.expected is not None else ""
        return f"{self.unique}{total} points"

    def warnings(self) -> list[str]:
        """One sentence per problem: still running, incomplete, damaged log lines, duplicate rows."""
        out = [w for w in (self.under_load, self.samples_note) if w]
        if self.running is not None:
            out.append(f"the run is still running ({self.running}): {self.progress()} recorded so far; "
                       "these results are a snapshot, run the command again when it has finished")
        elif self.missing:
            out.append(f"the run is incomplete: {self.progress()} recorded, {self.missing} missing; "
                       f"finish it with: {self.resume}")
        if self.expected is not None and self.unique > self.expected:
            extra = self.unique - self.expected
            out.append(f"the points log holds {self.unique} distinct points, {extra} more than the "
                       f"{self.expected} its suite resolved to: rows from another suite or run (logs merged "
                       "by hand?); the tables list them all")
        # a torn tail while the writer is at work is a line being written, not damage
        damaged = [d for d in self.damaged if not (d.torn_tail and self.running is not None)]
        for log in sorted({d.path.name for d in damaged}):
            lines = [d for d in damaged if d.path.name == log]
            shown = "; ".join(d.describe() for d in lines[:SHOW_HASHES])
            more = f" and {len(lines) - SHOW_HASHES} more" if len(lines) > SHOW_HASHES else ""
            if log == POINTS_LOG:
                then = ("their points count as not recorded. Resuming moves such lines to <log>.damaged (a "
                        f"torn tail is cut) and runs those points again: {self.resume}")
            else:
                then = ("what they held is left out (a point without raw samples cannot be judged by "
                        "compare; run it again in a new run for new samples). Resuming moves such lines to "
                        "<log>.damaged")
            out.append(f"{shown}{more}: {then}")
        if self.duplicates:
            extra = self.recorded - self.unique
            named = ", ".join(f"{h[:8]} ({n} rows)" for h, n in list(self.duplicates.items())[:SHOW_HASHES])
            hidden = len(self.duplicates) - SHOW_HASHES
            more = f" and {hidden} more" if hidden > 0 else ""
            out.append(f"{extra} duplicate row(s) in the points log: point_hash {named}{more}; the tables "
                       "list every row (a point recorded twice, e.g. logs merged by hand), so medians and "
                       "pivots may be off, and compare keeps each point's last row. To clean the run, delete "
                       "the rows you do not want from points.jsonl (resume keeps them: they are valid rows)")
        return out


def run_status(run: RunData) -> RunStatus:
    """Expected total, recorded and distinct points, duplicate hashes and the lock holder of a run."""
    pts = run.points
    hashes = pts[C.HASH].dropna().astype(str) if C.HASH in pts.columns else None
    counts = hashes.value_counts(sort=False) if hashes is not None else None
    dups = {str(h): int(n) for h, n in counts.items() if n > 1} if counts is not None else {}
    expected = run.manifest.get("n_points")
    return RunStatus(
        run_dir=run.path,
        expected=int(expected) if isinstance(expected, (int, float)) else None,
        recorded=len(pts),
        unique=len(counts) if counts is not None else len(pts),
        duplicates=dups,
        running=lock_holder(run.path),
        resume=resume_command(run),
        damaged=list(run.damaged),
        under_load=load_note(run.points),
        samples_note=_samples_note(run),
    )


def _samples_note(run: RunData) -> str:
    """A warning when ``samples.jsonl`` is gone ("" when it is there, or nothing was recorded)."""
    if (run.path / SAMPLES_LOG).exists() or run.points.empty:
        return ""
    if (run.path / SAMPLES_FILE).exists():
        return (f"{SAMPLES_LOG} is missing: the raw samples are read from {SAMPLES_FILE}, its export; "
                "resuming the run writes the log again")
    return (f"{SAMPLES_LOG} and {SAMPLES_FILE} are missing: no raw samples (no speedup intervals, and "
            "compare cannot judge these points); restore them from a copy of the run, or re-run its suite")


def load_note(points: pd.DataFrame) -> str:
    """One sentence when points were timed while other work loaded the machine
    (:func:`harness.measure.load.under_load`), with the figures; "" otherwise."""
    if not {C.CPU_OTHER_FRAC, C.CPU_STEAL_FRAC, C.GPU_OTHER_PROCS} & set(points.columns):
        return ""
    rows = points.to_dict("records")
    loaded = [r for r in rows if under_load(r)]
    if not loaded:
        return ""
    def finite(rs: list[dict], col: str) -> list[float]:
        return [float(r[col]) for r in rs if isinstance(r.get(col), (int, float)) and r[col] == r[col]]

    other, steal, loads = finite(loaded, C.CPU_OTHER_FRAC), finite(loaded, C.CPU_STEAL_FRAC), \
        finite(rows, C.LOAD_AVG_1M)
    gpu = finite(loaded, C.GPU_OTHER_PROCS)
    figures = [f"other processes used up to {max(other):.0%} of the CPU" if other else "",
               f"up to {max(gpu):.0f} other process(es) on the GPU" if gpu and max(gpu) > 0 else "",
               f"the hypervisor stole up to {max(steal):.0%}" if steal and max(steal) > 0 else "",
               f"load average up to {max(loads):.2g}" if loads else ""]
    return (f"measured under load: {len(loaded)} of {len(rows)} points were timed while other work ran on "
            f"this machine ({', '.join(f for f in figures if f)}); their timings compete with it and may not "
            "repeat. Re-run on a quiet machine (or on cores nothing else uses)")


def print_warnings(warns: list[str], file: TextIO | None = None) -> list[str]:
    """Print each warning as ``warning: ...`` (stderr by default); return them."""
    for w in warns:
        print(f"warning: {w}", file=file or sys.stderr)
    return warns
