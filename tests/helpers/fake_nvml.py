"""A scripted NVML backend for the telemetry tests (the interface of harness.measure.nvml.NVMLBackend)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any


class FakeNVMLError(Exception):
    """Raised by :class:`FakeNVML` for readings it was told are unsupported."""


class FakeNVML:
    """A scripted NVML for tests.

    readings: reading name (a :class:`NVMLBackend` method, e.g. ``"power_mw"``) -> values
        returned by successive calls; the last value repeats once the script runs out; an
        Exception instance in the script is raised instead. Readings not given raise
        FakeNVMLError (unsupported).
    static: static facts by method name (``"name"``, ``"uuid"``, ``"driver_version"``, ...).
    init_error: raised by ``init()`` (simulates a missing driver).
    uuids: device UUIDs in NVML index order (``handle_by_uuid`` looks them up).
    """

    def __init__(self, readings: Mapping[str, Sequence[Any]] | None = None,
                 static: Mapping[str, Any] | None = None, init_error: Exception | None = None,
                 uuids: Sequence[str] = ("GPU-fake-0",)) -> None:
        self.readings = {k: list(v) for k, v in (readings or {}).items()}
        self.static = dict(static or {})
        self.init_error = init_error
        self.uuids = list(uuids)
        self.calls: dict[str, int] = {}
        self.initialized = False
        self.shut_down = False
        self._lock = threading.Lock()

    def init(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialized = True

    def shutdown(self) -> None:
        self.shut_down = True

    def handle_by_index(self, index: int) -> Any:
        if not 0 <= index < len(self.uuids):
            raise FakeNVMLError(f"no device at index {index}")
        return index

    def handle_by_uuid(self, uuid: str) -> Any:
        if uuid not in self.uuids:
            raise FakeNVMLError(f"no device with UUID {uuid}")
        return self.uuids.index(uuid)

    def _next(self, name: str) -> Any:
        with self._lock:
            i = self.calls.get(name, 0)
            self.calls[name] = i + 1
            script = self.readings.get(name)
        if not script:
            raise FakeNVMLError(f"{name} not supported")
        value = script[min(i, len(script) - 1)]
        if isinstance(value, BaseException):
            raise value
        return value

    def _static(self, name: str) -> Any:
        if name not in self.static:
            raise FakeNVMLError(f"{name} not supported")
        return self.static[name]

    def power_mw(self, h: Any) -> float:
        return self._next("power_mw")

    def compute_pids(self, h: Any) -> list[int]:
        return self._next("compute_pids")

    def energy_mj(self, h: Any) -> float:
        return self._next("energy_mj")

    def sm_clock_mhz(self, h: Any) -> float:
        return self._next("sm_clock_mhz")

    def temperature_c(self, h: Any) -> float:
        return self._next("temperature_c")

    def gpu_util_pct(self, h: Any) -> float:
        return self._next("gpu_util_pct")

    def mem_used_bytes(self, h: Any) -> float:
        return self._next("mem_used_bytes")

    def clock_event_reasons(self, h: Any) -> int:
        return self._next("clock_event_reasons")

    def name(self, h: Any) -> str:
        return self._static("name")

    def uuid(self, h: Any) -> str:
        return self._static("uuid")

    def driver_version(self) -> str:
        return self._static("driver_version")

    def power_limit_mw(self, h: Any) -> float:
        return self._static("power_limit_mw")

    def max_sm_clock_mhz(self, h: Any) -> float:
        return self._static("max_sm_clock_mhz")

    def memory_total_bytes(self, h: Any) -> float:
        return self._static("memory_total_bytes")

    def persistence_mode(self, h: Any) -> bool:
        return self._static("persistence_mode")

    def mig_mode(self, h: Any) -> bool:
        return self._static("mig_mode")
