"""NVTX ranges and the CUDA profiler's capture window, for Nsight Systems (``harness run --nvtx``).

When enabled, a run marks:

- ``point <method> <hash>`` around everything a point does, and inside it ``timed`` (warm-up and
  samples), ``sample <i>`` around each timed sample, ``evaluate``, ``breakdown`` and ``profile``;
- the method phases (``phase:match``, ``phase:aggregate``, ``phase:attention``) and the model
  parts (``patch_embed``, ``frame_block.<i>``, ``global_block.<i>``, the heads, Swin stages and
  branches): the names of the torch.profiler ranges (:func:`harness.models.seam.named_range`);
- on CUDA, ``cudaProfilerStart`` just before the first timed sample of each point and
  ``cudaProfilerStop`` just after its last, so
  ``nsys profile --capture-range=cudaProfilerApi --capture-range-end=repeat harness run ... --nvtx``
  records the timed samples and nothing else (no model build, warm-up, evaluation).

Ranges are pushed and popped outside the clock readings of a sample. Disabled (the default),
each mark is one flag check. NVTX ranges cost nothing without an attached tool and are
recorded on CPU-only runs too (Nsight Systems traces CPU processes); the capture window needs
a CUDA device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_ON = [False]
_PROFILING = [False]  # a torch.profiler pass is running (harness.measure.profiling)


class TorchBackend:
    """The real calls: ``torch.cuda.nvtx`` and ``torch.cuda.profiler`` (tests substitute a fake)."""

    def push(self, name: str) -> None:
        import torch

        torch.cuda.nvtx.range_push(name)

    def pop(self) -> None:
        import torch

        torch.cuda.nvtx.range_pop()

    def start(self) -> None:
        import torch

        torch.cuda.profiler.start()

    def stop(self) -> None:
        import torch

        torch.cuda.profiler.stop()


BACKEND: Any = TorchBackend()


def enabled() -> bool:
    """Whether NVTX marks are on (``--nvtx``)."""
    return _ON[0]


def profiling_on() -> bool:
    """Whether a profiled pass is running (named ranges then become torch.profiler ranges)."""
    return _PROFILING[0]


@contextmanager
def profiling() -> Iterator[None]:
    """Mark the enclosed block as a profiled pass (named ranges show in its trace and op table)."""
    before = _PROFILING[0]
    _PROFILING[0] = True
    try:
        yield
    finally:
        _PROFILING[0] = before


@contextmanager
def enable(on: bool = True) -> Iterator[None]:
    """Marks on (or off) for the enclosed block; the previous state is restored after it."""
    before = _ON[0]
    _ON[0] = bool(on)
    try:
        yield
    finally:
        _ON[0] = before


def push(name: str) -> None:
    if _ON[0]:
        BACKEND.push(name)


def pop() -> None:
    if _ON[0]:
        BACKEND.pop()


@contextmanager
def mark(name: str) -> Iterator[None]:
    """An NVTX range named ``name`` when marks are on; nothing otherwise."""
    if not _ON[0]:
        yield
        return
    BACKEND.push(name)
    try:
        yield
    finally:
        BACKEND.pop()


def capture_start(device: Any) -> None:
    """``cudaProfilerStart`` on a CUDA device when marks are on (the timed window begins)."""
    if _ON[0] and _is_cuda(device):
        BACKEND.start()


def capture_stop(device: Any) -> None:
    """``cudaProfilerStop`` on a CUDA device when marks are on (the timed window ends)."""
    if _ON[0] and _is_cuda(device):
        BACKEND.stop()


def _is_cuda(device: Any) -> bool:
    return str(getattr(device, "type", device)).startswith("cuda")
