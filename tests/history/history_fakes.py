"""What the history tests share: run directories written by the real RunWriter, synthetic stores,
seeded series with a step (the fixtures in conftest.py hand them out)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.history.store import write_store
from harness.store import RunWriter
from harness.store import columns as C

SUITE = {"name": "hist", "workload": "attention", "reference": "sdpa", "fixed": {"device": "cpu"},
         "sweep": {"seq_len": [128, 256]}, "methods": {"sdpa": {}},
         "parameters": {"workload": ["seq_len"], "common": ["device"], "methods": {"sdpa": []}}}
COMMIT = "a" * 40
NOISE = 0.003  # relative noise of a median latency from commit to commit: a few tenths of a percent
BASE_MS = 10.0


def commit_of(i: int) -> str:
    """The sha of commit ``i`` (1-based) of a synthetic history: ``c0031`` padded to 40 characters."""
    return f"c{i:04d}".ljust(40, "0")


def stepped(n: int = 60, after: int = 30, step: float = 0.03, seed: int = 0, noise: float = NOISE,
            base: float = BASE_MS) -> np.ndarray:
    """[n] median latencies (ms) with relative noise ``noise`` (seeded) and a step of ``step``
    (relative) from the entry after the ``after``-th on (``after`` commits before the step)."""
    values = base * (1 + np.random.default_rng(seed).normal(0.0, noise, n))
    values[after:] *= 1 + step
    return values


def point_row(run_id: str, point_hash: str, latency_ms: float | None, status: str = C.OK,
              seq_len: int = 128, **extra: Any) -> dict[str, Any]:
    """One row of points.jsonl (the ``sdpa`` method at ``seq_len``)."""
    row = {C.RUN_ID: run_id, C.SUITE: "hist", C.HASH: point_hash, C.WORKLOAD: "attention", C.METHOD: "sdpa",
           C.PRESET: None, C.STATUS: status, C.ERROR: None if status == C.OK else "boom",
           C.STARTED_AT: "2026-01-01T00:00:00", C.ELAPSED_S: 1.0, "seq_len": seq_len, "device": "cpu",
           C.LAT_MEDIAN: latency_ms, C.N_SAMPLES: 20, C.STABLE: True}
    row.update(extra)
    return row


def run_factory(tmp_path: Path) -> Callable[..., Path]:
    """``make(name, latencies={hash: ms}, commit=..., statuses={hash: status}, extra={hash: {...}})``:
    a finished run directory under ``tmp_path`` (two points by default) written by the real
    RunWriter."""

    def make(name: str, latencies: dict[str, float] | None = None, commit: str | None = COMMIT,
             statuses: dict[str, str] | None = None, extra: dict[str, dict[str, Any]] | None = None,
             env: dict[str, Any] | None = None) -> Path:
        latencies = latencies if latencies is not None else {"p0": 10.0, "p1": 20.0}
        run_env = {"device_kind": "cpu", "cpu_model": "Toy CPU", "gpu_name": None, "git_commit": commit,
                   "git_dirty": False, **(env or {})}
        run_dir = tmp_path / name
        w = RunWriter.create(run_dir, {"run_id": name, "suite": "hist", "created_at": "2026-01-01T00:00:00"},
                             SUITE, run_env, {})
        for i, (h, ms) in enumerate(latencies.items()):
            status = (statuses or {}).get(h, C.OK)
            w.append(point_row(name, h, ms if status == C.OK else None, status, 128 * (i + 1),
                               **(extra or {}).get(h, {})))
        return run_dir

    return make


def history_frame(series: dict[str, Sequence[float]], commits: Sequence[str] | None = None,
                  branch: str = "main", metric: str = C.LAT_MEDIAN) -> pd.DataFrame:
    """A store's entries: entry ``i`` (seq i + 1, commit ``commits[i]``) holds ``series[hash][i]``
    for every point hash."""
    n = len(next(iter(series.values())))
    commits = list(commits) if commits is not None else [commit_of(i + 1) for i in range(n)]
    rows = []
    for i in range(n):
        for h, values in series.items():
            rows.append({"seq": i + 1, C.RUN_ID: f"run{i + 1}", "commit": commits[i], "branch": branch,
                         C.HASH: h, "label": f"sdpa {h}", C.WORKLOAD: "attention", C.METHOD: "sdpa",
                         "device_kind": "cpu", "device": "Toy CPU", C.LAT_MEDIAN: BASE_MS, metric: values[i],
                         C.N_SAMPLES: 20})
    return pd.DataFrame(rows)


def store_factory(tmp_path: Path) -> Callable[..., Path]:
    """``write({hash: values}, ...)``: a store file holding :func:`history_frame` of the arguments."""

    def write(series: dict[str, Sequence[float]], **kw: Any) -> Path:
        path = tmp_path / "history.parquet"
        write_store(path, history_frame(series, **kw))
        return path

    return write
