"""A pytest-benchmark timer that is correct on GPUs.

pytest-benchmark reads a host clock; CUDA launches are asynchronous, so without a
synchronize the clock measures kernel *launches*. ``nox -s microbench`` passes
``--benchmark-timer=harness.measure.benchtimer.synchronized_perf_counter``: it synchronizes the
current CUDA device before reading ``time.perf_counter`` whenever CUDA is initialized, and
is plain ``perf_counter`` on CPU.
"""

from __future__ import annotations

import time

import torch


def synchronized_perf_counter() -> float:
    """Seconds from ``time.perf_counter`` after draining queued CUDA work (if any)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()
