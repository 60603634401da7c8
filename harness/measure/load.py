"""The machine's load while a point runs (Linux ``/proc``): was anything else running?

The window is the whole point (model build or reuse, warm-up, timed samples, evaluation): a timed
window alone is often too short for ``/proc/stat``'s 10 ms ticks. Columns (``HOST_LOAD``):
``load_avg_1m`` (the 1-minute load average when the point started), ``cpu_other_frac`` (the share
of the machine's CPU capacity that *other* processes used during the point: busy time of all CPUs
from ``/proc/stat`` minus this process's own CPU time, over the CPUs' total time) and
``cpu_steal_frac`` (the share a hypervisor gave to other guests). A
window shorter than ``MIN_WINDOW_CPU_S`` of total CPU time (``/proc/stat`` counts in 10 ms
ticks) leaves the shares empty. Elsewhere than Linux every column is empty.

A point is **measured under load** when other processes used more than
:data:`UNDER_LOAD_OTHER_FRAC` of the CPU while it was timed, or the hypervisor stole more than
:data:`UNDER_LOAD_STEAL_FRAC`, or (on a GPU, :mod:`harness.measure.telemetry`'s
``gpu_other_procs``) another process held a compute context on its device while it was timed: its
timings compete with that work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.store import columns as C

UNDER_LOAD_OTHER_FRAC = 0.20
UNDER_LOAD_STEAL_FRAC = 0.05
MIN_WINDOW_CPU_S = 0.2  # of all CPUs' time together: 0.1 s on 2 CPUs
PROC_STAT = Path("/proc/stat")
PROC_LOADAVG = Path("/proc/loadavg")


@dataclass(frozen=True)
class CpuTimes:
    """The ``cpu`` line of ``/proc/stat`` in seconds: busy (user, nice, system, irq, softirq),
    steal, and the total of every state."""

    busy_s: float
    steal_s: float
    total_s: float


def read_cpu_times(path: Path = PROC_STAT) -> CpuTimes | None:
    """All CPUs' times since boot, or None where ``/proc/stat`` cannot be read."""
    try:
        with open(path) as f:
            fields = f.readline().split()
        ticks = [float(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
        hz = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
    if fields[0] != "cpu" or len(ticks) < 8:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = ticks
    busy = user + nice + system + irq + softirq
    return CpuTimes(busy / hz, steal / hz, (busy + idle + iowait + steal) / hz)


def read_load_avg(path: Path = PROC_LOADAVG) -> float | None:
    """The 1-minute load average, or None."""
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class LoadWindow:
    """The host load over one window: :meth:`start`, then :meth:`columns` with the CPU time this
    process spent in the window."""

    def __init__(self, stat: Path = PROC_STAT, loadavg: Path = PROC_LOADAVG) -> None:
        self._stat, self._loadavg = stat, loadavg
        self._load: float | None = None
        self._t0: CpuTimes | None = None

    def start(self) -> None:
        self._load = read_load_avg(self._loadavg)
        self._t0 = read_cpu_times(self._stat)

    def columns(self, own_cpu_s: float | None) -> dict[str, Any]:
        """Exactly the ``HOST_LOAD`` columns of the window that started at :meth:`start`."""
        out: dict[str, Any] = {C.LOAD_AVG_1M: self._load, C.CPU_OTHER_FRAC: None, C.CPU_STEAL_FRAC: None}
        t1 = read_cpu_times(self._stat)
        if self._t0 is None or t1 is None or own_cpu_s is None:
            return out
        total = t1.total_s - self._t0.total_s
        if total < MIN_WINDOW_CPU_S:
            return out
        other = (t1.busy_s - self._t0.busy_s) - own_cpu_s
        out[C.CPU_OTHER_FRAC] = min(1.0, max(0.0, other / total))
        out[C.CPU_STEAL_FRAC] = min(1.0, max(0.0, (t1.steal_s - self._t0.steal_s) / total))
        return out


def under_load(row: dict[str, Any]) -> bool:
    """Whether a row's point was measured under load (see the module docstring; on a GPU, any
    other compute process on the device while it was timed). Never for a point whose instructions
    were counted: a count does not depend on what else ran."""
    if isinstance(row.get(C.INSTRUCTIONS), (int, float)) and row[C.INSTRUCTIONS] == row[C.INSTRUCTIONS]:
        return False
    other, steal, gpu = row.get(C.CPU_OTHER_FRAC), row.get(C.CPU_STEAL_FRAC), row.get(C.GPU_OTHER_PROCS)
    return bool((isinstance(other, (int, float)) and other > UNDER_LOAD_OTHER_FRAC)
                or (isinstance(steal, (int, float)) and steal > UNDER_LOAD_STEAL_FRAC)
                or (isinstance(gpu, (int, float)) and gpu > 0))
