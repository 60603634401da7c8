"""Efficiency columns: how close a point (and each method phase) runs to the device's peak.

Work comes from the counters a workload reports for ONE timed call (``work_*`` columns):

- ``work_flops`` / ``work_bytes``: everything the timed call does, when the workload knows it
  (the attention micro-workload, VGGT's ``scope=attention`` layer, Swin's float MACs x 2);
- per method phase (:data:`PHASE_WORK`): attention (``work_attn_flops``, ``work_attn_bytes``),
  matching (``work_match_flops``, ``work_match_bytes``) and the merge's gathers and scatters
  (``work_agg_bytes``), timed by the breakdown pass (``bd_<phase>_ms``).

The bytes model is the minimum traffic of each step: attention reads Q, K, V once and writes
the output once (what a fused kernel moves); matching reads the tokens it compares; a merge
reads the N tokens and writes the M slots, an unmerge reads M slots and writes N tokens. Index
tensors, the similarity scores and the outlier bookkeeping are not counted.

Columns (``eff_`` prefix; ``<scope>`` is empty for the whole call, ``<phase>_`` for a phase):
``eff_<scope>tflop_s`` achieved TFLOP/s, ``eff_<scope>flop_frac`` that over the peak FLOP/s,
``eff_<scope>flop_per_byte`` arithmetic intensity, ``eff_<scope>gb_s`` achieved GB/s and
``eff_<scope>bw_frac`` that over the peak bandwidth.

Peaks (:class:`Peak`): on a GPU the vendor's dense figures by device name
(:mod:`harness.measure.peaks`); on a CPU, or a GPU not in that table, a calibration measured once per
run (the best of a few square matmuls and large copies at the point's dtype and threads),
recorded in the run's ``env.json`` under ``peaks``. A calibrated peak is what this machine
reaches in a plain matmul, not a datasheet figure: a fraction near 1 means "as fast as a
large GEMM here".
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from harness.measure.devices import torch_dtype
from harness.measure.peaks import gpu_peak
from harness.store import columns as C

#: method phase -> (FLOPs counter, bytes counter); None where no model exists
PHASE_WORK: dict[str, tuple[str | None, str | None]] = {
    "attention": ("work_attn_flops", "work_attn_bytes"),
    "match": ("work_match_flops", "work_match_bytes"),
    "aggregate": (None, "work_agg_bytes"),
}
TOTAL_FLOPS = "work_flops"
TOTAL_BYTES = "work_bytes"

CALIBRATION_MATMUL_N = 1024  # square matmul side of the CPU/GPU FLOP/s calibration
CALIBRATION_COPY_MIB = 64  # size of the copied buffer of the bandwidth calibration
CALIBRATION_REPEATS = 3  # best of this many timed calls (after one warm-up call)
PEAKS_KEY = "peaks"  # env.json key


@dataclass(frozen=True)
class Peak:
    """The device's peak for one (device, dtype, threads): FLOP/s and bytes/s, and where they
    come from ("table: <GPU> (<source>)" or "calibrated: ...")."""

    flop_s: float | None
    bytes_s: float | None
    source: str


def _div(a: Any, b: Any) -> float | None:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0 or a < 0:
        return None
    return a / b


def _scope_columns(prefix: str, flops: Any, nbytes: Any, ms: Any, peak: Peak | None) -> dict[str, float]:
    out: dict[str, float] = {}
    seconds = _div(ms, 1e3)
    flop_s = _div(flops, seconds) if seconds else None
    bytes_s = _div(nbytes, seconds) if seconds else None
    if flop_s is not None:
        out[f"{prefix}tflop_s"] = flop_s / 1e12
        if peak is not None and peak.flop_s:
            out[f"{prefix}flop_frac"] = flop_s / peak.flop_s
    intensity = _div(flops, nbytes)
    if intensity is not None:
        out[f"{prefix}flop_per_byte"] = intensity
    if bytes_s is not None:
        out[f"{prefix}gb_s"] = bytes_s / 1e9
        if peak is not None and peak.bytes_s:
            out[f"{prefix}bw_frac"] = bytes_s / peak.bytes_s
    return out


def efficiency_columns(row: dict[str, Any], peak: Peak | None,
                       phase_work: dict[str, Any] | None = None) -> dict[str, float]:
    """The ``eff_*`` columns of one point's row (its ``work_*``, latency and ``bd_*_ms`` columns).

    The whole call uses the median latency and the row's work; a phase uses its breakdown time
    and ``phase_work`` (the ``work_*`` counters of the breakdown pass itself, on the scale of
    its times: per layer when the times are), else the row's. A column is left out when its
    work or time is missing or not positive; fractions need a peak."""
    work = row if phase_work is None else phase_work
    out = _scope_columns(C.EFFICIENCY_PREFIX, row.get(TOTAL_FLOPS), row.get(TOTAL_BYTES),
                         row.get(C.LAT_MEDIAN), peak)
    for phase, (flops_col, bytes_col) in PHASE_WORK.items():
        ms = row.get(f"{C.BREAKDOWN_PREFIX}{phase}_ms")
        if ms is None:
            continue
        flops = work.get(flops_col) if flops_col else None
        nbytes = work.get(bytes_col) if bytes_col else None
        out.update(_scope_columns(f"{C.EFFICIENCY_PREFIX}{phase}_", flops, nbytes, ms, peak))
    return out


def efficiency_metric_info(col: str) -> dict[str, Any] | None:
    """``metrics.json`` entry of an ``eff_*`` column (None for another column)."""
    if not col.startswith(C.EFFICIENCY_PREFIX):
        return None
    rest = col[len(C.EFFICIENCY_PREFIX):]
    scope = "the timed call"
    for phase in PHASE_WORK:
        if rest.startswith(f"{phase}_"):
            scope, rest = f"phase {phase!r} (breakdown pass)", rest[len(phase) + 1:]
    what = {
        "tflop_s": ("achieved TFLOP/s", "TFLOP/s"),
        "flop_frac": ("achieved FLOP/s over the device's peak for the dtype", ""),
        "flop_per_byte": ("arithmetic intensity, FLOPs per byte of the bytes model", "FLOP/B"),
        "gb_s": ("achieved bandwidth under the bytes model", "GB/s"),
        "bw_frac": ("achieved bandwidth over the device's peak bandwidth", ""),
    }.get(rest)
    if what is None:
        return None
    higher = None if rest == "flop_per_byte" else True
    return {"kind": "efficiency", "help": f"{what[0]} of {scope}", "higher_is_better": higher,
            "unit": what[1], "tolerance": None}


# ---------------------------------------------------------------------------------- peaks


def peak_key(device: str, dtype: str, threads: int) -> str:
    """Key of a peak in env.json: the device type, the dtype and (on CPU) the thread count."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    return f"{kind}|{dtype}" + (f"|{threads}t" if kind == "cpu" else "")


def effective_threads(threads: int) -> int:
    """The torch thread count a point runs with (``threads=0`` keeps torch's default)."""
    return threads if threads > 0 else torch.get_num_threads()


_calibrated: dict[str, Peak] = {}  # per process: a calibration is repeated only for a new key


def _best_seconds(fn: Any, sync: Any) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(CALIBRATION_REPEATS):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def calibrate(device: str, dtype: str, threads: int) -> Peak:
    """Measure this machine's matmul FLOP/s and copy bandwidth at ``dtype`` (on CPU with
    ``threads`` torch threads): the best of :data:`CALIBRATION_REPEATS` calls of an
    N x N @ N x N matmul (2 N^3 FLOPs) and of a copy of a large buffer (read + write)."""
    key = peak_key(device, dtype, threads)
    if key in _calibrated:
        return _calibrated[key]
    cuda = str(device).startswith("cuda")
    before = torch.get_num_threads()
    if not cuda:
        torch.set_num_threads(threads)
    try:
        n = CALIBRATION_MATMUL_N
        a = torch.randn(n, n, device=device).to(torch_dtype(dtype))
        b = torch.randn(n, n, device=device).to(torch_dtype(dtype))
        numel = CALIBRATION_COPY_MIB * 2**20 // 4
        src = torch.ones(numel, device=device, dtype=torch.float32)
        dst = torch.empty_like(src)

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize(device)

        t_mm = _best_seconds(lambda: torch.mm(a, b), sync)
        t_copy = _best_seconds(lambda: dst.copy_(src), sync)
    finally:
        if not cuda:
            torch.set_num_threads(before)
    where = f"{threads} thread(s)" if not cuda else str(device)
    source = f"calibrated: best {dtype} {n}x{n} matmul and {CALIBRATION_COPY_MIB} MiB copy, {where}"
    peak = Peak(flop_s=2.0 * n**3 / t_mm, bytes_s=2.0 * numel * 4 / t_copy, source=source)
    _calibrated[key] = peak
    return peak


def table_peak(device: str, dtype: str) -> Peak | None:
    """The vendor's dense peak of the current CUDA device for ``dtype`` (None off the table)."""
    name = torch.cuda.get_device_name(torch.device(device))
    entry = gpu_peak(name)
    if entry is None:
        return None
    tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
    tf32_note = " (tf32 on)" if tf32 and dtype == "float32" else ""
    return Peak(flop_s=entry.flop_s(dtype, tf32=tf32), bytes_s=entry.bytes_s,
                source=f"table: {entry.name}{tf32_note} ({entry.source})")


def run_peaks(settings: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, Any]]:
    """Peaks for each distinct (device, dtype, threads) of a run, JSON-ready for env.json."""
    out: dict[str, dict[str, Any]] = {}
    for device, dtype, threads in settings:
        threads = effective_threads(threads)
        key = peak_key(device, dtype, threads)
        if key in out:
            continue
        peak = table_peak(device, dtype) if str(device).startswith("cuda") else None
        out[key] = asdict(peak if peak is not None else calibrate(device, dtype, threads))
    return out


def peak_for(peaks: dict[str, Any] | None, device: str, dtype: str, threads: int) -> Peak | None:
    """The stored peak of a point's setting (None when the run recorded none for it)."""
    entry = (peaks or {}).get(peak_key(device, dtype, effective_threads(threads)))
    if not isinstance(entry, dict):
        return None
    return Peak(flop_s=entry.get("flop_s"), bytes_s=entry.get("bytes_s"), source=str(entry.get("source", "")))
