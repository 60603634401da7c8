"""The C allocator's policy for CPU runs (``harness run --cpu-allocator``).

torch's CPU tensors come from glibc's malloc. By default glibc serves large blocks with fresh
``mmap`` calls and gives freed memory back to the kernel, so a call that allocates tens of MB
of temporaries (token merging does: merged K/V/Q, gathers, sums) page-faults all of them again
on every call. Measured on this project's 2-core VM (HTTM layer, 8 frames of 1041 tokens, 1
thread): about 19 000 minor faults and 35-60 ms of system time per HTTM call, 600-2 800 faults
and 0-7 ms with ``retain``; plain SDPA's one 34 MB output costs 8 300 faults, none with ``retain``.

- ``system`` (default): glibc's own policy, nothing changed.
- ``retain``: freed memory stays with the process for reuse (mmap threshold and trim threshold 1
  GiB, top pad 256 MiB), like a caching allocator; every method of the run gets it alike. The
  runner trims the heap (``malloc_trim(0)``) before each point, so a point starts from a heap
  without the previous point's free memory and its RSS window measures its own working set.

Only glibc (Linux) has these knobs; elsewhere ``retain`` is refused with a paragraph.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

from harness.errors import HarnessError

MODES = ("system", "retain")
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
RETAIN = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 256 << 20}
_current = "system"


class AllocatorError(HarnessError, RuntimeError):
    """The requested allocator policy cannot be set here."""


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def current() -> str:
    """The policy this process runs with (``system`` until :func:`apply` set another)."""
    return _current


def apply(mode: str) -> None:
    """Set ``mode`` for the rest of the process (``system`` after ``retain`` is refused: glibc
    cannot go back to its dynamic thresholds)."""
    global _current
    if mode not in MODES:
        raise AllocatorError(f"--cpu-allocator {mode!r}; allowed: {', '.join(MODES)}")
    if mode == _current:
        return
    if mode == "system":
        raise AllocatorError("this process already runs with --cpu-allocator retain; glibc cannot return to "
                             "its own policy: start a new process")
    libc = _libc()
    if libc is None:
        raise AllocatorError("--cpu-allocator retain needs glibc's mallopt (Linux); this platform has no "
                             "such knob. Run with --cpu-allocator system (the default)")
    for param, value in RETAIN.items():
        if libc.mallopt(param, value) != 1:
            raise AllocatorError(f"--cpu-allocator retain: glibc refused mallopt({param}, {value}); run with "
                                 "--cpu-allocator system (the default)")
    _current = mode


def trim() -> None:
    """Give the heap's free memory back to the kernel (a no-op without glibc)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


__all__ = ["AllocatorError", "MODES", "apply", "current", "trim"]
