"""A finished run as history entries: one row per ok point (:data:`harness.history.store.SCHEMA`).

Refused, with one paragraph each (:class:`~harness.history.store.HistoryError`, exit 2): a run
another process is still writing, a run without an ok point, and a run whose commit is unknown
(``env.json`` records none and none was given).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.history.store import (
    BRANCH,
    COMMIT,
    DEVICE,
    DEVICE_KIND,
    INSTRUCTIONS,
    LABEL,
    METRICS,
    RUN_STARTED_AT,
    HistoryError,
    conform,
)
from harness.measure.env import CPU_MODEL, GIT_COMMIT, GIT_DIRTY
from harness.measure.env import DEVICE_KIND as ENV_DEVICE_KIND
from harness.store import RunData, load, lock_holder
from harness.store import columns as C
from reports import tables as T


@dataclass(frozen=True)
class Provenance:
    """Where a run's code came from: ``commit`` (None: the one ``env.json`` records) and
    ``branch`` (None: not recorded)."""

    commit: str | None = None
    branch: str | None = None


def _number(v: Any) -> float:
    """``v`` as a float; NaN when missing or not a number."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def _ok_points(run: RunData) -> pd.DataFrame:
    """The run's ok points with a median latency or an instruction count, the last row of each."""
    pts = run.points
    if C.STATUS not in pts.columns:
        return pts.iloc[0:0]
    measured = pd.Series(False, index=pts.index)
    for col in METRICS:
        if col in pts.columns:
            measured |= pd.to_numeric(pts[col], errors="coerce").notna()
    return pts[(pts[C.STATUS] == C.OK) & measured].drop_duplicates(C.HASH, keep="last")


def _commit(run: RunData, given: str | None) -> str:
    if given:
        return given
    recorded = run.env.get(GIT_COMMIT)
    if not recorded:
        raise HistoryError(f"{run.path} records no git commit (env.json has no {GIT_COMMIT}: the harness did "
                           "not run from a git checkout); give the commit the run measured with --commit SHA")
    return str(recorded)


def _device(row: pd.Series, env: dict[str, Any]) -> str | None:
    """The GPU model the point ran on (its row, else ``env.json``), else the CPU model."""
    for v in (row.get(C.GPU_NAME), env.get(C.GPU_NAME), env.get(CPU_MODEL)):
        if not T.is_missing(v) and v:
            return str(v)
    return None


def check_addable(run_dir: Path) -> None:
    """A :class:`HistoryError` when another process still writes the run."""
    holder = lock_holder(run_dir)
    if holder is not None:
        raise HistoryError(f"{run_dir} is still being written by {holder}: wait for that run to finish (or "
                           "stop it and resume it to the end), then add it; a run in progress would enter "
                           "the history with only some of its points")


def run_entries(run_dir: str | os.PathLike,
                provenance: Provenance | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The history entries of the finished run in ``run_dir`` (without ``seq`` and ``added_at``,
    which the store assigns), and warnings about them (a checkout with uncommitted changes).
    Raises :class:`HistoryError` (see the module docstring) or the store's RunDirError for a
    directory that is not a run."""
    provenance = provenance or Provenance()
    run_dir = Path(run_dir)
    check_addable(run_dir)
    run = load(run_dir)
    ok = _ok_points(run)
    if ok.empty:
        statuses = run.points[C.STATUS].value_counts().to_dict() if C.STATUS in run.points else {}
        seen = ", ".join(f"{n} {s}" for s, n in statuses.items()) or "no points"
        raise HistoryError(f"{run_dir} has no ok point with a latency or an instruction count ({seen}); "
                           "nothing to add. A history tracks the measurements of ok points: fix what failed "
                           "and add a run that has some")
    commit = _commit(run, provenance.commit)
    axes = [a for a in T.varying_columns(ok) if a != C.METHOD]
    rows = []
    for _, row in ok.iterrows():
        stable = T.hashable(row.get(C.STABLE))
        rows.append({
            C.RUN_ID: str(run.manifest.get(C.RUN_ID) or run_dir.name), COMMIT: commit,
            BRANCH: provenance.branch, RUN_STARTED_AT: run.manifest.get("created_at"),
            C.HASH: row[C.HASH], LABEL: T.method_label(row, axes), C.WORKLOAD: row.get(C.WORKLOAD),
            C.METHOD: row.get(C.METHOD), DEVICE_KIND: run.env.get(ENV_DEVICE_KIND),
            DEVICE: _device(row, run.env), C.TIMER: row.get(C.TIMER),
            C.LAT_MEDIAN: _number(row.get(C.LAT_MEDIAN)),
            INSTRUCTIONS: _number(row.get(INSTRUCTIONS)), C.N_SAMPLES: _number(row.get(C.N_SAMPLES)),
            C.STABLE: stable if isinstance(stable, bool) else None,
        })
    notes = []
    if provenance.commit is None and run.env.get(GIT_DIRTY):
        notes.append(f"{run_dir} ran from a checkout with uncommitted changes (env.json {GIT_DIRTY}); its "
                     f"entries carry commit {commit[:12]}, which did not hold all of its code")
    return conform(pd.DataFrame(rows)), notes
