"""The profiled pass: one ``torch.profiler`` run of a point's measured callable, after and
outside its timed samples (like the breakdown pass), written as a Chrome/Perfetto trace and as
rows of an operator table.

Method phases (``phase:match``, ``phase:aggregate``, ``phase:attention``) appear as named ranges
(:func:`harness.models.seam.named_range`), and every operator row says the phase it ran in.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.measure import markers

PHASE_PREFIX = "phase:"
#: columns of ``ops.parquet`` (times in microseconds, as torch.profiler reports them)
OP_COLUMNS = ("point_hash", "profiled_at", "phase", "name", "calls", "self_cpu_us", "cpu_us",
              "self_device_us", "device_us", "flops")


@dataclass(frozen=True)
class ProfileSchedule:
    """torch.profiler's schedule: skipped, warm-up and recorded calls of the measured callable."""

    wait: int = 1
    warmup: int = 1
    active: int = 2

    @property
    def calls(self) -> int:
        return self.wait + self.warmup + self.active


def profile_callable(fn: Callable[[], Any], device: str, trace_path: Path, point_hash: str,
                     schedule: ProfileSchedule = ProfileSchedule()) -> list[dict[str, Any]]:
    """Profile ``schedule.calls`` calls of ``fn``; write the gzipped trace to ``trace_path`` and
    return one row per (phase, operator) over the recorded calls (see :data:`OP_COLUMNS`), all
    stamped with the same ``profiled_at`` (a later profile of the point supersedes them)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler import schedule as make_schedule

    activities = [ProfilerActivity.CPU]
    if str(device).startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    with markers.profiling():
        with profile(activities=activities, record_shapes=True, with_flops=True, profile_memory=True,
                     schedule=make_schedule(wait=schedule.wait, warmup=schedule.warmup,
                                            active=schedule.active)) as prof:
            for _ in range(schedule.calls):
                fn()
                if str(device).startswith("cuda"):
                    torch.cuda.synchronize()
                prof.step()
    _write_trace(prof, trace_path)
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
    return [{"point_hash": point_hash, "profiled_at": stamp, **r} for r in op_rows(prof.events(), point_hash)]


def _write_trace(prof: Any, trace_path: Path) -> None:
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(raw))
        part = trace_path.with_name(trace_path.name + ".tmp")
        with open(raw, "rb") as src, gzip.open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(part, trace_path)


def _phase_of(event: Any) -> str:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(PHASE_PREFIX):
            return parent.name[len(PHASE_PREFIX):]
        parent = parent.cpu_parent
    return ""


def op_rows(events: Any, point_hash: str) -> list[dict[str, Any]]:
    """Aggregate profiler events by (phase, operator name); phase ranges themselves are skipped.
    ``phase`` is the innermost enclosing method phase ("" outside every phase)."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        if e.name.startswith(PHASE_PREFIX) or e.name.startswith("ProfilerStep"):
            continue
        key = (_phase_of(e), e.name)
        row = acc.setdefault(key, {"point_hash": point_hash, "phase": key[0], "name": key[1], "calls": 0,
                                   "self_cpu_us": 0.0, "cpu_us": 0.0, "self_device_us": 0.0, "device_us": 0.0,
                                   "flops": 0.0})
        row["calls"] += 1
        row["self_cpu_us"] += float(e.self_cpu_time_total)
        row["cpu_us"] += float(e.cpu_time_total)
        row["self_device_us"] += float(getattr(e, "self_device_time_total", 0.0) or 0.0)
        row["device_us"] += float(getattr(e, "device_time_total", 0.0) or 0.0)
        row["flops"] += float(getattr(e, "flops", 0) or 0)
    return sorted(acc.values(), key=lambda r: -r["self_cpu_us"])
