"""Live tensor bytes on any device, op by op: :class:`LiveBytes`, a dispatch mode.

The CUDA allocator's ``max_memory_allocated`` answers "how much did this code hold at once" on a
GPU only. :class:`LiveBytes` answers it for code running on CPU tensors (the tests of the bytes
model in :mod:`harness.metrics.memory_model` check its formulas against it)::

    with LiveBytes() as live:
        out = attention_fn(q, k, v, layout)
    live.peak      # bytes: the most that tensors created inside the block held at once
    live.current   # bytes still held when the block ended (e.g. ``out``, caches)

What it counts: every storage that an operator creates while the mode is active, from the
moment it is created until it dies (a ``weakref.finalize`` on the storage). Storages are keyed by
``untyped_storage()._cdata``, so views share their base's bytes and an in-place op or an ``out=``
argument allocates nothing. Tensors that existed before the block (inputs, weights) are never
counted, nor are views of them.

What it cannot see: memory a kernel allocates for itself below the dispatcher (workspaces, the
contiguous copy a CPU kernel makes internally): only operator outputs are visible. Under
``torch.inference_mode`` composite operators reach the mode whole (e.g. SDPA as one op, without its
flash kernel's logsumexp output), so measure under ``torch.no_grad`` to see what they allocate. The CUDA
allocator's peak also rounds every block up to 512 bytes; this counts exact ``nbytes``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """A dispatch mode that counts the bytes of the storages created inside it (see the module
    docstring). ``current``: bytes alive now; ``peak``: the most alive at once since entering (or
    since :meth:`reset_peak`); ``at_peak``: with ``record=True``, ``{op name: bytes}`` of the
    storages alive at the peak, summed per creating operator (for reading what made a peak)."""

    def __init__(self, record: bool = False) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self.record = record
        self.at_peak: dict[str, int] = {}
        self._live: dict[int, tuple[str, int]] = {}  # storage key -> (creating op, bytes)
        self._paused = 0

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Storages created inside are not counted (e.g. a stand-in for a kernel that keeps its
        intermediates in registers computes its result here)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def reset_peak(self) -> None:
        """Start a new peak window from the bytes alive now."""
        self.peak = self.current
        self.at_peak = self._by_op() if self.record else {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self._paused:
            return func(*args, **kwargs)
        before = {_key(t) for t in _tensors((args, kwargs))}
        out = func(*args, **kwargs)
        for t in _tensors(out):
            key = _key(t)
            if key not in before and key not in self._live:
                self._add(t.untyped_storage(), key, str(func.overloadpacket.__name__))
        return out

    def _add(self, storage: torch.UntypedStorage, key: int, op: str) -> None:
        nbytes = storage.nbytes()
        self._live[key] = (op, nbytes)
        self.current += nbytes
        weakref.finalize(storage, self._drop(key))
        if self.current > self.peak:
            self.peak = self.current
            if self.record:
                self.at_peak = self._by_op()

    def _drop(self, key: int) -> Callable[[], None]:
        def drop() -> None:
            entry = self._live.pop(key, None)
            if entry is not None:
                self.current -= entry[1]

        return drop

    def _by_op(self) -> dict[str, int]:
        sums: dict[str, int] = {}
        for op, nbytes in self._live.values():
            sums[op] = sums.get(op, 0) + nbytes
        return sums


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


__all__ = ["LiveBytes"]
