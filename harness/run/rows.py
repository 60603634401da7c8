"""A point's row: its identity and config columns, and how a failure or a non-finite value reads there."""

from __future__ import annotations

import datetime as _dt
import math
import traceback
from typing import Any

import torch

from harness.store import columns as C
from harness.workloads.base import Point

MEASURED_TIMING = (C.LAT_MEDIAN, C.LAT_MEAN, C.LAT_IQR, C.LAT_P10, C.LAT_P90, C.LAT_MIN, C.LAT_MAX,
                    C.HOST_MEDIAN)


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (the ``started_at`` and manifest stamps)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is running out of memory, on the accelerator or on the CPU: a torch
    ``OutOfMemoryError``, a ``MemoryError``, or a ``RuntimeError`` worded as an allocation failure
    (e.g. "[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory")."""
    oom_messages = (
        "out of memory",  # CUDA (and other accelerators)
        "can't allocate memory",  # torch's DefaultCPUAllocator
        "cannot allocate memory",  # ENOMEM (errno 12) in an allocator's or the OS's words
        "not enough memory",  # torch's CPU allocator on Windows, oneDNN / MKL
        "failed to allocate memory",
    )
    if isinstance(e, MemoryError):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(e, oom_type):
        return True
    return isinstance(e, RuntimeError) and any(m in str(e).lower() for m in oom_messages)


def error_text(e: BaseException) -> str:
    """``Type: message (file:line in function)`` with the innermost traceback frame."""
    msg = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ").rstrip()
    if len(msg) > 1:
        text += " ..."
    tb = traceback.extract_tb(e.__traceback__)
    if tb:
        last = tb[-1]
        text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text


def nonfinite_tensors(out: Any, path: str = "output") -> str | None:
    """Name of the first output tensor holding NaN/Inf, or None."""
    if isinstance(out, torch.Tensor):
        if out.is_floating_point() or out.is_complex():
            if not bool(torch.isfinite(out).all()):
                return path
        return None
    if isinstance(out, dict):
        for k, v in out.items():
            bad = nonfinite_tensors(v, f"{path}[{k!r}]")
            if bad:
                return bad
    elif isinstance(out, (list, tuple)):
        for i, v in enumerate(out):
            bad = nonfinite_tensors(v, f"{path}[{i}]")
            if bad:
                return bad
    return None


def nonfinite_metrics(row: dict[str, Any]) -> list[str]:
    """The measured timing and metric columns of ``row`` that hold NaN or infinity."""
    bad = []
    for k, v in row.items():
        if k in MEASURED_TIMING or k.startswith(C.METRIC_PREFIXES):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
                bad.append(k)
    return bad


def base_row(run_id: str, suite_name: str, point: Point, status: str = C.OK,
             error: str | None = None) -> dict[str, Any]:
    """The identity and config columns of a point's row (the rest is measured)."""
    row: dict[str, Any] = {
        C.RUN_ID: run_id,
        C.SUITE: suite_name,
        C.HASH: point.hash,
        C.WORKLOAD: point.workload,
        C.METHOD: point.method,
        C.PRESET: point.preset,
        C.STATUS: status,
        C.ERROR: error,
        C.STARTED_AT: now_iso(),
    }
    row.update(point.params)
    return row
