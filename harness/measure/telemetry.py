"""Telemetry for one measured window: NVML on GPU, RSS and CPU time on the host.

    with TelemetrySampler("cuda:0") as tel:
        m = timer.measure(fn, "cuda:0")
    row.update(tel.summary())           # exactly the columns.TELEMETRY columns

On a CUDA device a background thread samples NVML (nvidia-ml-py, ``import pynvml``) at
``rate_hz``: power, SM/memory clocks, temperature, utilization, device memory used and the
clock-event (throttle) reason bits; the total-energy counter is read at the window edges.
The host side (``/proc/self/statm`` RSS, process CPU time) is sampled on every device.

Energy comes from the counter delta (``energy_source = "counter"``); when the counter is
unsupported, fails, or did not advance (its granularity is ~20-100 ms), from trapezoid-
integrated power over the samples (``"integrated_power"``). Treat absolute joules as
approximate: on Ampere+ ``nvmlDeviceGetPowerUsage`` is a 1 s average, and on A100/H100 the
sensor samples only part of the time. Use windows of a second or more.

Missing NVML (no library, no driver, init error) never raises: the GPU columns stay None and
one warning is logged per process. The NVML access is a small injectable backend
(:class:`NVMLBackend`): :class:`PynvmlBackend` is the real one; the tests replay scripted readings
through a fake of the same interface (``tests/fake_nvml.py``).
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
from typing import Any, Protocol

from harness.measure import env as E
from harness.measure.devices import parse_device
from harness.store import columns as C

log = logging.getLogger(__name__)

MIB = 2**20
SW_POWER_CAP = 0x4
HW_SLOWDOWN = 0x8
SW_THERMAL = 0x20
HW_THERMAL = 0x40
HW_POWER_BRAKE = 0x80
THROTTLE_MASK = SW_POWER_CAP | HW_SLOWDOWN | SW_THERMAL | HW_THERMAL | HW_POWER_BRAKE

ENERGY_COUNTER = "counter"
ENERGY_INTEGRATED = "integrated_power"

GPU_STATIC_KEYS = (
    E.GPU_NAME, "gpu_uuid", E.GPU_DRIVER, "gpu_capability", "gpu_memory_total_mb", "gpu_power_limit_w",
    "gpu_max_sm_clock_mhz", "gpu_persistence_mode", "gpu_mig_mode",
)

_nvml_warned = False  # one "NVML unavailable" line per process


class NVMLBackend(Protocol):
    """What the sampler needs from NVML. Every reading may raise (unsupported, lost GPU)."""

    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def handle_by_index(self, index: int) -> Any: ...
    def handle_by_uuid(self, uuid: str) -> Any: ...
    # readings, sampled during the window
    def power_mw(self, h: Any) -> float: ...
    def energy_mj(self, h: Any) -> float: ...
    def sm_clock_mhz(self, h: Any) -> float: ...
    def temperature_c(self, h: Any) -> float: ...
    def gpu_util_pct(self, h: Any) -> float: ...
    def mem_used_bytes(self, h: Any) -> float: ...
    def clock_event_reasons(self, h: Any) -> int: ...
    # static facts, for the environment fingerprint
    def name(self, h: Any) -> str: ...
    def uuid(self, h: Any) -> str: ...
    def driver_version(self) -> str: ...
    def power_limit_mw(self, h: Any) -> float: ...
    def max_sm_clock_mhz(self, h: Any) -> float: ...
    def memory_total_bytes(self, h: Any) -> float: ...
    def persistence_mode(self, h: Any) -> bool: ...
    def mig_mode(self, h: Any) -> bool: ...


class PynvmlBackend:
    """The real backend over ``pynvml`` (install ``nvidia-ml-py``, not the deprecated ``pynvml``)."""

    def __init__(self) -> None:
        self._nv: Any = None

    def init(self) -> None:
        import pynvml  # ImportError when nvidia-ml-py is missing

        pynvml.nvmlInit()  # NVMLError when the library or driver is missing
        self._nv = pynvml

    def shutdown(self) -> None:
        if self._nv is not None:
            self._nv.nvmlShutdown()
            self._nv = None

    def handle_by_index(self, index: int) -> Any:
        return self._nv.nvmlDeviceGetHandleByIndex(index)

    def handle_by_uuid(self, uuid: str) -> Any:
        return self._nv.nvmlDeviceGetHandleByUUID(uuid)

    def power_mw(self, h: Any) -> float:
        return float(self._nv.nvmlDeviceGetPowerUsage(h))

    def energy_mj(self, h: Any) -> float:
        return float(self._nv.nvmlDeviceGetTotalEnergyConsumption(h))

    def sm_clock_mhz(self, h: Any) -> float:
        return float(self._nv.nvmlDeviceGetClockInfo(h, self._nv.NVML_CLOCK_SM))

    def temperature_c(self, h: Any) -> float:
        return float(self._nv.nvmlDeviceGetTemperature(h, self._nv.NVML_TEMPERATURE_GPU))

    def gpu_util_pct(self, h: Any) -> float:
        return float(self._nv.nvmlDeviceGetUtilizationRates(h).gpu)

    def mem_used_bytes(self, h: Any) -> float:
        return float(self._nv.nvmlDeviceGetMemoryInfo(h).used)

    def clock_event_reasons(self, h: Any) -> int:
        nv = self._nv
        new = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if new is not None:
            try:
                return int(new(h))
            except nv.NVMLError_FunctionNotFound:  # driver older than the binding
                pass
        return int(nv.nvmlDeviceGetCurrentClocksThrottleReasons(h))

    def name(self, h: Any) -> str:
        return str(self._nv.nvmlDeviceGetName(h))

    def uuid(self, h: Any) -> str:
        return str(self._nv.nvmlDeviceGetUUID(h))

    def driver_version(self) -> str:
        return str(self._nv.nvmlSystemGetDriverVersion())

    def power_limit_mw(self, h: Any) -> float:
        return float(self._nv.nvmlDeviceGetEnforcedPowerLimit(h))

    def max_sm_clock_mhz(self, h: Any) -> float:
        return float(self._nv.nvmlDeviceGetMaxClockInfo(h, self._nv.NVML_CLOCK_SM))

    def memory_total_bytes(self, h: Any) -> float:
        return float(self._nv.nvmlDeviceGetMemoryInfo(h).total)

    def persistence_mode(self, h: Any) -> bool:
        return bool(self._nv.nvmlDeviceGetPersistenceMode(h))

    def mig_mode(self, h: Any) -> bool:
        return bool(self._nv.nvmlDeviceGetMigMode(h)[0])


def _torch_uuid(index: int) -> str | None:
    """The NVML-style UUID (``GPU-...``/``MIG-...``) torch reports for a visible device."""
    try:
        import torch

        raw = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    except Exception:
        return None
    if raw is None:
        return None
    s = str(raw)
    return s if s.startswith(("GPU-", "MIG-")) else f"GPU-{s}"


def resolve_handle(backend: NVMLBackend, torch_index: int, torch_uuid: str | None = None,
                   visible_devices: str | None = None) -> Any:
    """The NVML handle of torch's ``cuda:torch_index``.

    By UUID when torch reports one; else through ``CUDA_VISIBLE_DEVICES`` (an NVML index or a
    UUID at that position); else NVML index = torch index (correct when nothing is hidden and
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; NVML enumerates in PCI order).
    """
    if torch_uuid:
        try:
            return backend.handle_by_uuid(torch_uuid)
        except Exception:
            pass
    entries = [e.strip() for e in (visible_devices or "").split(",") if e.strip()]
    if torch_index < len(entries):
        entry = entries[torch_index]
        if entry.isdigit():
            return backend.handle_by_index(int(entry))
        try:
            return backend.handle_by_uuid(entry)
        except Exception:
            pass
    return backend.handle_by_index(torch_index)


def _warn_nvml_once(reason: str) -> None:
    global _nvml_warned
    if not _nvml_warned:
        _nvml_warned = True
        log.warning("NVML unavailable (%s): GPU telemetry columns will be empty", reason)


def _open_nvml(backend: NVMLBackend | None, torch_index: int) -> tuple[NVMLBackend, Any] | None:
    """(initialized backend, handle) or None (with one warning per process) when NVML is unusable."""
    be = backend if backend is not None else PynvmlBackend()
    try:
        be.init()
    except Exception as e:  # ImportError, NVMLError_LibraryNotFound, driver errors
        _warn_nvml_once(f"{type(e).__name__}: {e}")
        return None
    try:
        handle = resolve_handle(be, torch_index, _torch_uuid(torch_index),
                                os.environ.get("CUDA_VISIBLE_DEVICES"))
    except Exception as e:
        _warn_nvml_once(f"no NVML handle for cuda:{torch_index}: {type(e).__name__}: {e}")
        _safe(be.shutdown)
        return None
    return be, handle


def _safe(read: Callable[[], Any]) -> Any:
    """The reading, or None when it raises (unsupported, transient NVML error)."""
    try:
        return read()
    except Exception as e:
        log.debug("telemetry reading failed: %s: %s", type(e).__name__, e)
        return None


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
            self._nvml = _open_nvml(self._backend, self._dev.index)
            if self._nvml is not None:
                be, h = self._nvml
                self._energy0 = _safe(lambda: be.energy_mj(h))
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
            self._torch_peak_mb = _safe(lambda: _cuda_window_end(self._dev))
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample_now()
        self._cpu_s = time.process_time() - self._cpu0
        self._rss_window_peak_mb = _peak_rss_mb() if self._hwm_reset else None
        if self._nvml is not None:
            be, h = self._nvml
            self._energy1 = _safe(lambda: be.energy_mj(h))
            _safe(be.shutdown)

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
            power_mw = _safe(lambda: be.power_mw(h))
            mem_b = _safe(lambda: be.mem_used_bytes(h))
            fields.update(
                power_w=None if power_mw is None else power_mw / 1e3,
                sm_clock_mhz=_safe(lambda: be.sm_clock_mhz(h)),
                temp_c=_safe(lambda: be.temperature_c(h)),
                gpu_util_pct=_safe(lambda: be.gpu_util_pct(h)),
                mem_used_mb=None if mem_b is None else mem_b / MIB,
                reasons=_safe(lambda: be.clock_event_reasons(h)),
            )
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


# ---------------------------------------------------------------------------------------------
# static facts


def gpu_static_info(device: Any = "cuda", backend: NVMLBackend | None = None) -> dict[str, Any]:
    """GPU facts for the environment fingerprint: the ``GPU_STATIC_KEYS``, None where unknown.

    Name, UUID, capability and total memory come from torch when NVML is unavailable; the
    driver, power limit (W), max SM clock, persistence and MIG mode need NVML. A CPU device
    (or no CUDA) gives all None. Never raises.
    """
    info: dict[str, Any] = dict.fromkeys(GPU_STATIC_KEYS)
    try:
        dev = parse_device(device)
    except (ValueError, RuntimeError):
        return info
    if dev.type != "cuda":
        return info
    import torch

    props = _safe(lambda: torch.cuda.get_device_properties(dev))
    if props is not None:
        info[E.GPU_NAME] = props.name
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        info["gpu_memory_total_mb"] = props.total_memory / MIB
    info["gpu_uuid"] = _torch_uuid(dev.index)
    nvml = _open_nvml(backend, dev.index)
    if nvml is None:
        return info
    be, h = nvml
    limit_mw = _safe(lambda: be.power_limit_mw(h))
    mem_total = _safe(lambda: be.memory_total_bytes(h))
    nvml_info = {
        E.GPU_NAME: _safe(lambda: be.name(h)),
        "gpu_uuid": _safe(lambda: be.uuid(h)),
        E.GPU_DRIVER: _safe(be.driver_version),
        "gpu_memory_total_mb": None if mem_total is None else mem_total / MIB,
        "gpu_power_limit_w": None if limit_mw is None else limit_mw / 1e3,
        "gpu_max_sm_clock_mhz": _safe(lambda: be.max_sm_clock_mhz(h)),
        "gpu_persistence_mode": _safe(lambda: be.persistence_mode(h)),
        "gpu_mig_mode": _safe(lambda: be.mig_mode(h)),
    }
    info.update({k: v for k, v in nvml_info.items() if v is not None})
    _safe(be.shutdown)
    return info
