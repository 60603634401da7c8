"""Telemetry for one measured window: NVML on GPU, RSS and CPU time on the host.

    with TelemetrySampler("cuda:0") as tel:
        m = timer.measure(fn, "cuda:0")
    row.update(tel.summary())           # exactly the columns.TELEMETRY columns

On a CUDA device a background thread samples NVML (nvidia-ml-py, ``import pynvml``) at
``rate_hz``: power, SM/memory clocks, temperature, utilization, device memory used and the
clock-event (throttle) reason bits; the total-energy counter is read at the window edges.
The host side (``/proc/self/statm`` RSS, process CPU time) is sampled on every device (the
machine's load over each point is :mod:`harness.measure.load`'s).

Energy comes from the counter delta (``energy_source = "counter"``); when the counter is
unsupported, fails, or did not advance (its granularity is ~20-100 ms), from trapezoid-
integrated power over the samples (``"integrated_power"``). Treat absolute joules as
approximate: on Ampere+ ``nvmlDeviceGetPowerUsage`` is a 1 s average, and on A100/H100 the
sensor samples only part of the time. Use windows of a second or more.

Missing NVML (no library, no driver, init error) never raises: the GPU columns stay None and
one warning is logged per process. The NVML access is :mod:`harness.measure.nvml`'s small
injectable backend; the tests replay scripted readings through a fake of the same interface
(``tests/helpers/fake_nvml.py``).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.measure.devices import parse_device
from harness.measure.nvml import (
    MIB,
    THROTTLE_MASK,
    NVMLBackend,
    open_nvml,
    other_processes,
    safe_reading,
)
from harness.store import columns as C

log = logging.getLogger(__name__)

ENERGY_COUNTER = "counter"
ENERGY_INTEGRATED = "integrated_power"


# ---------------------------------------------------------------------------------------------
# host readings


def _rss_mb() -> float | None:
    """Current resident set size from /proc/self/statm (Linux), else None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MIB


def _reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (VmHWM) so that it measures a window from now on
    (Linux >= 4.0: write "5" to /proc/self/clear_refs). False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float | None:
    """The peak RSS since the last :func:`_reset_peak_rss` (VmHWM of /proc/self/status), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MIB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _maxrss_mb() -> float:
    """Process-lifetime peak RSS from getrusage (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


# ---------------------------------------------------------------------------------------------
# samples and their summary


@dataclass(frozen=True)
class TelemetrySample:
    """One reading of everything; None where a reading was unavailable or failed."""

    t_s: float
    power_w: float | None = None
    sm_clock_mhz: float | None = None
    temp_c: float | None = None
    gpu_util_pct: float | None = None
    mem_used_mb: float | None = None
    reasons: int | None = None
    rss_mb: float | None = None
    other_procs: int | None = None  # compute processes on the device besides this one


def integrate_power_j(samples: Sequence[TelemetrySample]) -> float | None:
    """Trapezoid integral of power over time (J); None with fewer than two power readings."""
    pts = [(s.t_s, s.power_w) for s in samples if s.power_w is not None]
    if len(pts) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(pts, pts[1:]))


def summarize_samples(samples: Sequence[TelemetrySample], *, gpu: bool, energy_start_mj: float | None = None,
                      energy_end_mj: float | None = None, torch_peak_alloc_mb: float | None = None,
                      cpu_time_s: float | None = None,
                      rss_fallback_mb: float | None = None,
                      rss_window_peak_mb: float | None = None) -> dict[str, Any]:
    """Exactly the ``columns.TELEMETRY`` columns for one window.

    gpu: whether NVML was usable; when False every GPU column is None (``torch_peak_alloc_mb``
    is torch's, not NVML's, and is kept). rss_peak_mb is the kernel's peak RSS over the window
    (``rss_window_peak_mb``, exact: it catches what sampling misses) or the largest RSS seen in the
    samples, whichever is larger; without either, ``rss_fallback_mb`` (getrusage's lifetime peak).
    """
    def vals(attr: str) -> list[float]:
        return [v for v in (getattr(s, attr) for s in samples) if v is not None]

    row: dict[str, Any] = dict.fromkeys(C.TELEMETRY)
    rss = vals("rss_mb")
    peaks = rss + ([rss_window_peak_mb] if rss_window_peak_mb is not None else [])
    row[C.RSS_PEAK_MB] = max(peaks) if peaks else rss_fallback_mb
    row[C.CPU_TIME_S] = cpu_time_s
    row[C.TORCH_PEAK_ALLOC_MB] = torch_peak_alloc_mb
    if not gpu:
        return row

    if energy_start_mj is not None and energy_end_mj is not None and energy_end_mj > energy_start_mj:
        row[C.ENERGY_J], row[C.ENERGY_SOURCE] = (energy_end_mj - energy_start_mj) / 1e3, ENERGY_COUNTER
    else:
        integrated = integrate_power_j(samples)
        if integrated is not None:
            row[C.ENERGY_J], row[C.ENERGY_SOURCE] = integrated, ENERGY_INTEGRATED
        elif energy_start_mj is not None and energy_end_mj is not None and energy_end_mj == energy_start_mj:
            row[C.ENERGY_J], row[C.ENERGY_SOURCE] = 0.0, ENERGY_COUNTER

    power = vals("power_w")
    if power:
        row[C.POWER_MEAN_W] = sum(power) / len(power)
        row[C.POWER_MAX_W] = max(power)
    temp = vals("temp_c")
    row[C.TEMP_MAX_C] = max(temp) if temp else None
    sm = vals("sm_clock_mhz")
    if sm:
        row[C.SM_CLOCK_MIN_MHZ] = min(sm)
        row[C.SM_CLOCK_MEAN_MHZ] = sum(sm) / len(sm)
    reasons = vals("reasons")
    if reasons:
        bits = 0
        for r in reasons:
            bits |= int(r)
        row[C.THROTTLE_REASONS] = bits
        row[C.THROTTLED] = bool(bits & THROTTLE_MASK)
    util = vals("gpu_util_pct")
    row[C.GPU_UTIL_MEAN_PCT] = sum(util) / len(util) if util else None
    mem = vals("mem_used_mb")
    row[C.GPU_MEM_PEAK_MB] = max(mem) if mem else None
    others = vals("other_procs")
    row[C.GPU_OTHER_PROCS] = max(others) if others else None
    return row


# ---------------------------------------------------------------------------------------------
# the sampler


def _cuda_window_start(dev: Any) -> None:
    """Drain queued work and reset the allocator peak so the window starts clean."""
    import torch

    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)


def _cuda_window_end(dev: Any) -> float:
    """Drain queued work; returns torch's allocator peak in the window (MiB)."""
    import torch

    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) / MIB


class TelemetrySampler:
    """Context manager that samples telemetry for the enclosed window.

    device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. rate_hz: background sampling rate.
    backend: NVML backend (default :class:`PynvmlBackend`); clock: seconds, for the sample
    timestamps (default ``time.monotonic``). One sample is taken on entry and one on exit, so
    even a short window has two; :meth:`sample_now` adds one on demand.
    """

    def __init__(self, device: Any = "cpu", rate_hz: float = 20.0, backend: NVMLBackend | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if not rate_hz > 0:
            raise ValueError(f"TelemetrySampler: rate_hz={rate_hz} must be > 0")
        self.device = device
        self.rate_hz = float(rate_hz)
        self._backend = backend
        self._clock = clock if clock is not None else time.monotonic
        self._samples: list[TelemetrySample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: tuple[NVMLBackend, Any] | None = None
        self._dev: Any = None
        self._energy0: float | None = None
        self._energy1: float | None = None
        self._cpu0 = 0.0
        self._cpu_s: float | None = None
        self._torch_peak_mb: float | None = None
        self._hwm_reset = False
        self._rss_window_peak_mb: float | None = None

    @property
    def samples(self) -> list[TelemetrySample]:
        """A copy of the samples taken so far."""
        with self._lock:
            return list(self._samples)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> TelemetrySampler:
        self._dev = parse_device(self.device)
        self._samples = []
        self._energy0 = self._energy1 = None
        self._cpu_s = self._torch_peak_mb = None
        if self._dev.type == "cuda":
            _cuda_window_start(self._dev)
            self._nvml = open_nvml(self._backend, self._dev.index)
            if self._nvml is not None:
                be, h = self._nvml
                self._energy0 = safe_reading(lambda: be.energy_mj(h))
        self._cpu0 = time.process_time()
        self._hwm_reset = _reset_peak_rss()
        self._rss_window_peak_mb = None
        self.sample_now()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="telemetry-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._dev.type == "cuda":
            self._torch_peak_mb = safe_reading(lambda: _cuda_window_end(self._dev))
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample_now()
        self._cpu_s = time.process_time() - self._cpu0
        self._rss_window_peak_mb = _peak_rss_mb() if self._hwm_reset else None
        if self._nvml is not None:
            be, h = self._nvml
            self._energy1 = safe_reading(lambda: be.energy_mj(h))
            safe_reading(be.shutdown)

    def _loop(self) -> None:
        period = 1.0 / self.rate_hz
        while not self._stop.wait(period):
            try:
                self.sample_now()
            except Exception as e:  # never let the sampler thread die noisily
                log.debug("telemetry sample failed: %s", e)

    def sample_now(self) -> TelemetrySample:
        """Take one sample now (thread-safe) and return it."""
        fields: dict[str, Any] = {"t_s": self._clock(), "rss_mb": _rss_mb()}
        if self._nvml is not None:
            be, h = self._nvml
            power_mw = safe_reading(lambda: be.power_mw(h))
            mem_b = safe_reading(lambda: be.mem_used_bytes(h))
            fields.update(
                power_w=None if power_mw is None else power_mw / 1e3,
                sm_clock_mhz=safe_reading(lambda: be.sm_clock_mhz(h)),
                temp_c=safe_reading(lambda: be.temperature_c(h)),
                gpu_util_pct=safe_reading(lambda: be.gpu_util_pct(h)),
                mem_used_mb=None if mem_b is None else mem_b / MIB,
                reasons=safe_reading(lambda: be.clock_event_reasons(h)),
            )
            pids = safe_reading(lambda: be.compute_pids(h))
            fields["other_procs"] = None if pids is None else other_processes(pids)
        sample = TelemetrySample(**fields)
        with self._lock:
            self._samples.append(sample)
        return sample

    def summary(self) -> dict[str, Any]:
        """The ``columns.TELEMETRY`` row of the window (call after the ``with`` block)."""
        cpu_s = self._cpu_s if self._cpu_s is not None else time.process_time() - self._cpu0
        return summarize_samples(
            self.samples, gpu=self._nvml is not None, energy_start_mj=self._energy0,
            energy_end_mj=self._energy1, torch_peak_alloc_mb=self._torch_peak_mb, cpu_time_s=cpu_s,
            rss_fallback_mb=_maxrss_mb(), rss_window_peak_mb=self._rss_window_peak_mb,
        )
