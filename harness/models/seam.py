"""The global-attention seam: the one function through which token merging plugs into VGGT.

VGGT's global-attention module computes q, k, v (after qk-norm and 2-D RoPE) and hands
them to an ``attention_fn(q, k, v, layout) -> out``. Plain attention, ToMe, FastVGGT-style
merging and HTTM are all such functions; none of them reaches into the model.

Shapes: q, k, v are ``[B, H, N, d]`` with N = S * P (frames times tokens per frame, in
frame-major order); ``out`` has the shape of q (full length N, before the head concat
and the output projection).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

_PROFILING = [False]  # set by harness.profiling while a profiled pass runs


def is_profiling() -> bool:
    """Whether a profiled pass is running (named ranges are recorded only then)."""
    return _PROFILING[0]


@contextmanager
def named_range(name: str) -> Iterator[None]:
    """A ``torch.profiler.record_function`` range named ``name`` during a profiled pass (it then
    shows in traces and op tables); nothing otherwise, so timed samples pay no profiler cost."""
    if not _PROFILING[0]:
        yield
        return
    with torch.profiler.record_function(name):
        yield


class Recorder:
    """Collects per-layer counters and (in breakdown mode) per-phase times from methods.

    ``count(name, value)`` sums a counter (e.g. ``tokens_q``) over the layers of one
    forward. ``phase(name)`` times a region in milliseconds when ``timed`` is set; it
    synchronizes the device before and after, so only use it in breakdown runs (never
    in the timed region of a normal measurement). Methods call both unconditionally;
    with ``timed=False`` a phase costs one Python context manager.
    """

    def __init__(self, timed: bool = False, device: torch.device | str | None = None) -> None:
        self.timed = timed
        self.device = torch.device(device) if device is not None else None
        self.counters: dict[str, float] = defaultdict(float)
        self.phases_ms: dict[str, float] = defaultdict(float)
        self.values: dict[str, list[float]] = defaultdict(list)

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def count(self, name: str, value: float) -> None:
        """Add ``value`` to the counter ``name``."""
        self.counters[name] += float(value)

    def observe(self, name: str, value: float) -> None:
        """Record one observation (e.g. a per-layer merge-quality proxy); summarized by the caller."""
        self.values[name].append(float(value))

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed region into ``phases_ms[name]`` when ``timed`` (device-synchronized)."""
        if not self.timed:
            yield
            return
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.phases_ms[name] += (time.perf_counter() - t0) * 1e3


@dataclass(frozen=True, eq=False)
class AttentionLayout:
    """Where the tokens of a global-attention call come from.

    frames: S; tokens_per_frame: P (= patch_start + patch_h * patch_w);
    patch_h, patch_w: the patch grid of every frame; patch_start: index of the first
    patch token inside a frame (5 in VGGT: 1 camera + 4 register tokens);
    layer: index of the global block (0-based); x_norm: the layer's normed input
    ``[B, N, C]`` for methods that match on hidden states (FastVGGT), else None;
    recorder: counters / breakdown sink, or None.
    """

    frames: int
    tokens_per_frame: int
    patch_h: int
    patch_w: int
    patch_start: int
    layer: int = 0
    x_norm: torch.Tensor | None = None
    recorder: Recorder | None = None

    @property
    def num_tokens(self) -> int:
        """N = S * P."""
        return self.frames * self.tokens_per_frame


class AttentionFn(Protocol):
    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout
    ) -> torch.Tensor:  # pragma: no cover - protocol
        ...


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout | None = None
) -> torch.Tensor:
    """Plain attention: softmax(q k^T / sqrt(d)) v over the full sequence.

    q, k, v: [B, H, N, d] -> [B, H, N, d].
    """
    rec = layout.recorder if layout is not None else None
    if rec is not None:
        n_q, n_k = q.shape[-2], k.shape[-2]
        rec.count("tokens_q", n_q * q.shape[1])
        rec.count("tokens_kv", n_k * k.shape[1])
        rec.count("attn_flops", attention_flops(q.shape[0], q.shape[1], n_q, n_k, q.shape[-1]))
        with rec.phase("attention"):
            return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def attention_flops(batch: int, heads: int, n_q: int, n_k: int, head_dim: int) -> float:
    """FLOPs of the two attention matmuls (q k^T and p v), 2 FLOPs per multiply-add."""
    return 2.0 * 2.0 * batch * heads * n_q * n_k * head_dim

