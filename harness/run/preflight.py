"""Checks made before a run writes anything: devices, merge kernels, memory snapshots, the allocator."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from harness.errors import RunError
from harness.measure import cpu_alloc
from harness.measure.memory import SNAPSHOT_MODES
from harness.methods import kernels
from harness.workloads.base import Point


def check_devices(points: Iterable[Point]) -> None:
    """Every CUDA point needs a CUDA GPU here (RunError naming a CPU preset otherwise)."""
    devices = {p.device for p in points}
    if any(d.startswith("cuda") for d in devices):
        if not torch.cuda.is_available():
            raise RunError(
                f"the suite asks for device {sorted(d for d in devices if d.startswith('cuda'))[0]!r} "
                "but torch sees no CUDA GPU here; use a CPU preset (e.g. --preset cpu) or --set device=cpu"
            )


def apply_cpu_allocator(mode: str, executor: str) -> None:
    """Set the C allocator policy for this process before anything is measured or recorded."""
    if mode != "system" and executor != "local":
        raise RunError(f"--cpu-allocator {mode} applies to this process only and does not reach Ray workers; "
                       "drop it or use the local executor")
    try:
        cpu_alloc.apply(mode)
    except cpu_alloc.AllocatorError as e:
        raise RunError(str(e)) from None


def check_kernels(points: Iterable[Point]) -> None:
    """HARNESS_MERGE_KERNELS must name a choice that runs on every device of the suite."""
    try:
        for device_type in sorted({p.device.split(":")[0] for p in points}):
            kernels.resolved(device_type)
    except kernels.KernelError as e:
        raise RunError(str(e)) from None


def check_memory_snapshot(points: Sequence[Point], mode: str | None) -> None:
    """A memory-snapshot mode must be known, and needs at least one CUDA point."""
    if mode is None:
        return
    if mode not in SNAPSHOT_MODES:
        raise RunError(f"--memory-snapshot {mode!r}; allowed: {', '.join(SNAPSHOT_MODES)}")
    if not any(p.device.startswith("cuda") for p in points):
        raise RunError(
            "--memory-snapshot records torch's CUDA allocator, but every point of this suite runs on the "
            "CPU. CPU points report the peak RSS of their timed window (rss_peak_mb); drop "
            "--memory-snapshot, or run a CUDA preset (e.g. --preset gpu)."
        )
