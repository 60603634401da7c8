"""NVML access: a small injectable backend, the handle of torch's device, and the GPU's static facts.

:class:`PynvmlBackend` is the real backend (``import pynvml`` from nvidia-ml-py); the tests replay
scripted readings through a fake of :class:`NVMLBackend`. Missing NVML never raises: callers get
None and one warning is logged per process. Used by :mod:`harness.measure.telemetry` (sampled
readings) and :mod:`harness.measure.env` (the fingerprint's GPU facts).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

from harness.measure.devices import parse_device

log = logging.getLogger(__name__)

MIB = 2**20
SW_POWER_CAP = 0x4
HW_SLOWDOWN = 0x8
SW_THERMAL = 0x20
HW_THERMAL = 0x40
HW_POWER_BRAKE = 0x80
THROTTLE_MASK = SW_POWER_CAP | HW_SLOWDOWN | SW_THERMAL | HW_THERMAL | HW_POWER_BRAKE

# env.json keys of the GPU facts (harness.measure.env re-exports the two that reports read)
GPU_NAME = "gpu_name"
GPU_DRIVER = "gpu_driver"
GPU_STATIC_KEYS = (
    GPU_NAME, "gpu_uuid", GPU_DRIVER, "gpu_capability", "gpu_memory_total_mb", "gpu_power_limit_w",
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
    def compute_pids(self, h: Any) -> list[int]: ...


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

    def compute_pids(self, h: Any) -> list[int]:
        return [int(p.pid) for p in self._nv.nvmlDeviceGetComputeRunningProcesses(h)]


def other_processes(pids: list[int], own_pid: int | None = None) -> int:
    """How many of a device's compute processes are not this one. Inside a container NVML lists
    the host's PIDs, so when this process's PID is not among them one entry is taken to be it
    (the caller holds a context on the device)."""
    own = os.getpid() if own_pid is None else own_pid
    unique = set(pids)
    return len(unique - {own}) if own in unique else max(0, len(unique) - 1)


def torch_uuid(index: int) -> str | None:
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


def warn_nvml_once(reason: str) -> None:
    global _nvml_warned
    if not _nvml_warned:
        _nvml_warned = True
        log.warning("NVML unavailable (%s): GPU telemetry columns will be empty", reason)


def open_nvml(backend: NVMLBackend | None, torch_index: int) -> tuple[NVMLBackend, Any] | None:
    """(initialized backend, handle) or None (with one warning per process) when NVML is unusable."""
    be = backend if backend is not None else PynvmlBackend()
    try:
        be.init()
    except Exception as e:  # ImportError, NVMLError_LibraryNotFound, driver errors
        warn_nvml_once(f"{type(e).__name__}: {e}")
        return None
    try:
        handle = resolve_handle(be, torch_index, torch_uuid(torch_index),
                                os.environ.get("CUDA_VISIBLE_DEVICES"))
    except Exception as e:
        warn_nvml_once(f"no NVML handle for cuda:{torch_index}: {type(e).__name__}: {e}")
        safe_reading(be.shutdown)
        return None
    return be, handle


def safe_reading(read: Callable[[], Any]) -> Any:
    """The reading, or None when it raises (unsupported, transient NVML error)."""
    try:
        return read()
    except Exception as e:
        log.debug("telemetry reading failed: %s: %s", type(e).__name__, e)
        return None



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

    props = safe_reading(lambda: torch.cuda.get_device_properties(dev))
    if props is not None:
        info[GPU_NAME] = props.name
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        info["gpu_memory_total_mb"] = props.total_memory / MIB
    info["gpu_uuid"] = torch_uuid(dev.index)
    nvml = open_nvml(backend, dev.index)
    if nvml is None:
        return info
    be, h = nvml
    limit_mw = safe_reading(lambda: be.power_limit_mw(h))
    mem_total = safe_reading(lambda: be.memory_total_bytes(h))
    nvml_info = {
        GPU_NAME: safe_reading(lambda: be.name(h)),
        "gpu_uuid": safe_reading(lambda: be.uuid(h)),
        GPU_DRIVER: safe_reading(be.driver_version),
        "gpu_memory_total_mb": None if mem_total is None else mem_total / MIB,
        "gpu_power_limit_w": None if limit_mw is None else limit_mw / 1e3,
        "gpu_max_sm_clock_mhz": safe_reading(lambda: be.max_sm_clock_mhz(h)),
        "gpu_persistence_mode": safe_reading(lambda: be.persistence_mode(h)),
        "gpu_mig_mode": safe_reading(lambda: be.mig_mode(h)),
    }
    info.update({k: v for k, v in nvml_info.items() if v is not None})
    safe_reading(be.shutdown)
    return info
