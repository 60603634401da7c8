"""Reading a run directory into DataFrames: ``load(path)`` -> :class:`RunData`."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.store import columns as C
from harness.store.files import DamagedLine
from harness.store.layout import (
    ENV_FILE,
    METRICS_FILE,
    OPS_LOG,
    POINTS_FILE,
    POINTS_LOG,
    PROFILED_AT,
    SAMPLES_FILE,
    SAMPLES_LOG,
    SUITE_FILE,
    RunDirError,
    read_json_object,
    read_manifest,
)
from harness.store.logs import read_log


def read_ops(run_dir: Path, damaged: list[DamagedLine] | None = None) -> pd.DataFrame:
    """The operator table of a profiled run (rows of committed points only, of each point's
    latest profile: ``harness profile`` appends a newer one); empty when none. Lines of the
    operator log that are not rows go to ``damaged``."""
    run_dir = Path(run_dir)
    done = {r.get(C.HASH) for r in read_log(run_dir / POINTS_LOG)}
    rows = [r for r in read_log(run_dir / OPS_LOG, damaged) if r.get(C.HASH) in done]
    latest: dict[str, str] = {}
    for r in rows:
        latest[r[C.HASH]] = max(latest.get(r[C.HASH], ""), str(r.get(PROFILED_AT) or ""))
    return pd.DataFrame([r for r in rows if str(r.get(PROFILED_AT) or "") == latest[r[C.HASH]]])


def read_tables(run_dir: Path, damaged: list[DamagedLine] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, samples) of a run from its logs (the source of truth), samples only of committed
    points; the logs' lines that are not rows go to ``damaged`` when given. Without logs (a run
    directory copied without them): the parquet tables."""
    run_dir = Path(run_dir)
    if not (run_dir / POINTS_LOG).exists() and (run_dir / POINTS_FILE).exists():
        points = pd.read_parquet(run_dir / POINTS_FILE)
        samples = (pd.read_parquet(run_dir / SAMPLES_FILE) if (run_dir / SAMPLES_FILE).exists()
                   else pd.DataFrame(columns=list(C.SAMPLE_COLUMNS)))
        return points, samples
    rows = read_log(run_dir / POINTS_LOG, damaged)
    done = {r.get(C.HASH) for r in rows}
    if not (run_dir / SAMPLES_LOG).exists() and (run_dir / SAMPLES_FILE).exists():
        table = pd.read_parquet(run_dir / SAMPLES_FILE)  # the log was lost: its export still holds them
        return _points_frame(rows), table[table[C.HASH].isin(done)].reset_index(drop=True)
    samples = [r for r in read_log(run_dir / SAMPLES_LOG, damaged) if r.get(C.HASH) in done]
    counted = [C.INSTRUCTIONS] if any(C.INSTRUCTIONS in r for r in samples) else []
    return _points_frame(rows), pd.DataFrame(samples, columns=[*C.SAMPLE_COLUMNS, *counted])


def _points_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in C.IDENTITY:
        if col not in df.columns:
            df[col] = None
    # mixed-type config columns (e.g. a param that is an int for one method and absent for
    # another) are fine in pandas; parquet needs one type per column, so stringify mixed objects
    for col in df.columns:
        if df[col].dtype == object:
            present = [v for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))]
            types = {type(v) for v in present}
            if len(types) > 1 and not types <= {int, float}:
                df[col] = df[col].map(lambda v: None if v is None else str(v))
    return df


@dataclass
class RunData:
    """A loaded run directory."""

    path: Path
    points: pd.DataFrame
    samples: pd.DataFrame
    manifest: dict[str, Any]
    suite: dict[str, Any]
    env: dict[str, Any]
    metrics: dict[str, Any]
    damaged: list[DamagedLine] = field(default_factory=list)  # log lines that are not rows

    @property
    def ok(self) -> pd.DataFrame:
        """Points whose status is ok."""
        return self.points[self.points[C.STATUS] == C.OK]


def read_suite_file(run_dir: Path) -> dict[str, Any]:
    """``suite.resolved.yaml`` of a run: a mapping, or RunDirError naming the file and what to do
    (resuming the run writes it again from the suite given)."""
    path = Path(run_dir) / SUITE_FILE
    fix = ("restore it from a copy of the run, or resume the run (`harness run SUITE --resume RUN` writes "
           "it again from the suite)")
    try:
        suite = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing (the run's resolved suite, which the reports read); {fix}") \
            from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise RunDirError(f"{path} is damaged ({type(e).__name__}: {first}); {fix}") from None
    if not isinstance(suite, dict):
        raise RunDirError(f"{path} is damaged (it holds {type(suite).__name__}, not a mapping); {fix}")
    return suite


def load(path: str | os.PathLike) -> RunData:
    """Load a run directory into DataFrames (``points``, ``samples``) and its metadata.

    Raises RunDirError (see :func:`read_manifest`) when ``path`` is not a run directory of
    this schema version.
    """
    run_dir = Path(path)
    manifest = read_manifest(run_dir)
    bad_lines: list[DamagedLine] = []
    points, samples = read_tables(run_dir, bad_lines)

    def _json(name: str) -> dict[str, Any]:
        p = run_dir / name
        return read_json_object(p) if p.exists() else {}

    return RunData(
        path=run_dir,
        points=points,
        samples=samples,
        manifest=manifest,
        suite=read_suite_file(run_dir),
        env=_json(ENV_FILE),
        metrics=_json(METRICS_FILE),
        damaged=bad_lines,
    )
