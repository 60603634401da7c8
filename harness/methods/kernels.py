"""Which implementation the merging primitives use: the torch path or the Triton kernels.

``HARNESS_MERGE_KERNELS`` (read at every call, recorded in ``env.json`` as ``merge_kernels``):

- ``auto`` (default): the Triton kernels of :mod:`harness.methods.triton_merge` for CUDA
  tensors when Triton imports, the torch path otherwise;
- ``torch``: always the torch path (the reference the kernels are tested against);
- ``triton``: always the kernels; an error when Triton is missing, or for CPU tensors unless
  ``TRITON_INTERPRET=1`` (Triton's interpreter, which is how the test suite runs them on CPU).

The kernels cover best-match (similarity + row-wise max, fused) and the merge (segment
mean); every method that matches through :func:`harness.methods.merging.assign` and merges
through :class:`harness.methods.merging.SlotMap` (HTTM, ToMe, FastVGGT) uses them alike.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

import torch

from harness.errors import HarnessError

ENV_VAR = "HARNESS_MERGE_KERNELS"
CHOICES = ("auto", "torch", "triton")


class KernelError(HarnessError, RuntimeError):
    """The requested kernels cannot run here (one paragraph, no traceback needed)."""


def requested() -> str:
    """The value of ``HARNESS_MERGE_KERNELS`` (default ``auto``); an unknown value raises."""
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in CHOICES:
        raise KernelError(f"{ENV_VAR}={mode!r} is not a kernel choice; allowed: {', '.join(CHOICES)}")
    return mode


def interpreter_on() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0")


@functools.lru_cache(maxsize=1)
def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def resolved(device_type: str) -> str:
    """``triton`` or ``torch``: what the primitives use for tensors of ``device_type``."""
    mode = requested()
    if mode == "torch":
        return "torch"
    if mode == "auto":
        return "triton" if device_type == "cuda" and triton_importable() else "torch"
    if not triton_importable():
        raise KernelError(f"{ENV_VAR}=triton but Triton does not import here; install it "
                          f"(`pip install triton`) or set {ENV_VAR}=torch")
    if device_type != "cuda" and not interpreter_on():
        raise KernelError(f"{ENV_VAR}=triton needs CUDA tensors; on {device_type} the kernels run only in "
                          f"Triton's interpreter (TRITON_INTERPRET=1, for tests: very slow). "
                          f"Use {ENV_VAR}=auto or torch here")
    return "triton"


def use_triton(t: torch.Tensor) -> bool:
    """Whether the primitives run the Triton kernels for tensors like ``t``."""
    return resolved(t.device.type) == "triton"


def triton_merge() -> ModuleType:
    """The kernel module (imported on first use, so Triton stays unimported on the torch path)."""
    from harness.methods import triton_merge as module

    return module


__all__ = ["CHOICES", "ENV_VAR", "KernelError", "interpreter_on", "requested", "resolved",
           "triton_importable", "triton_merge", "use_triton"]
