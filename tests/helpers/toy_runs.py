"""A toy run directory written through the real RunWriter (sdpa and httm at two sequence lengths,
one out-of-memory point), for the report tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.store import RunWriter
from harness.store import columns as C

SUITE = {
    "name": "toy",
    "workload": "attention",
    "reference": "sdpa",
    "fixed": {"device": "cpu", "dtype": "float32"},
    "sweep": {"seq_len": [128, 256]},
    "methods": {"sdpa": {}, "httm": {"r": [0.25, 0.5]}},
    "regression": {"threshold": 0.05, "alpha": 0.01, "per_metric": {}},
    "parameters": {"workload": ["seq_len"], "common": ["device", "dtype", "seed", "threads"],
                   "methods": {"sdpa": [], "httm": ["r"]}},
}
METRICS = {
    "q_err": {"kind": "quality", "help": "depth error", "higher_is_better": False, "unit": "m",
              "tolerance": 0.01},
    "fid_cos": {"kind": "fidelity", "help": "cosine vs reference", "higher_is_better": True, "unit": "",
                "tolerance": None},
    "work_flops": {"kind": "work", "help": "FLOPs", "higher_is_better": None, "unit": "FLOP",
                   "tolerance": None},
}
ENV = {"device_kind": "cpu", "torch": "2.14.1", "cpu_model": "Toy CPU", "torch_threads": 2,
       "gpu_name": None}


def _point(method: str, seq_len: int, r: float | None, lat_ms: float, rng: np.random.Generator,
           status: str = C.OK, error: str | None = None, n: int = 12) -> tuple[dict, list[dict]]:
    h = f"{method}-{seq_len}-{r}"
    row: dict[str, Any] = {
        C.RUN_ID: "run0", C.SUITE: "toy", C.HASH: h, C.WORKLOAD: "attention", C.METHOD: method,
        C.PRESET: None, C.STATUS: status, C.ERROR: error, C.STARTED_AT: "2026-01-01T00:00:00",
        C.ELAPSED_S: 1.0, "seq_len": seq_len, "device": "cpu", "dtype": "float32", "seed": 0,
    }
    if r is not None:
        row["r"] = r
    if status != C.OK:
        return row, []
    samples = lat_ms * rng.lognormal(0.0, 0.03, size=n)
    row.update({
        C.LAT_MEDIAN: float(np.median(samples)),
        C.LAT_IQR: float(np.subtract(*np.percentile(samples, [75, 25]))),
        C.LAT_P10: float(np.percentile(samples, 10)), C.LAT_P90: float(np.percentile(samples, 90)),
        C.N_SAMPLES: n, C.N_WARMUP: 2, C.TIMER: "perf_counter", C.THREADS: 2,
        C.RSS_PEAK_MB: 500.0,
        "work_flops": 2.0 * seq_len**2 * (1 - (r or 0)),
        "q_err": 0.01 + (r or 0) * 0.1,
        "fid_cos": 1.0 - (r or 0) * 0.02,
    })
    rows = [{C.RUN_ID: "run0", C.HASH: h, C.SAMPLE: i, C.DEVICE_MS: float(s), C.HOST_MS: float(s)}
            for i, s in enumerate(samples)]
    return row, rows


def make_run(run_dir: Path, with_failure: bool = True, single: bool = False) -> Path:
    """Write the toy run into ``run_dir`` (lognormal samples from a fixed seed) and return it."""
    rng = np.random.default_rng(0)
    w = RunWriter.create(run_dir, {"run_id": "run0", "suite": "toy"}, SUITE, ENV, METRICS)
    specs = [("sdpa", 128, None)] if single else [
        (m, s, r) for s in (128, 256) for m, r in (("sdpa", None), ("httm", 0.25), ("httm", 0.5))
    ]
    for m, s, r in specs:
        base_ms = s / 10
        w.append(*_point(m, s, r, base_ms * (1 - (r or 0)), rng))
    if with_failure and not single:
        w.append(*_point("httm", 256, 0.75, 0.0, rng, status=C.OOM,
                         error="Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory"))
    return run_dir
