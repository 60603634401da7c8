"""The memory wall: an analytical bytes model of VGGT's peak GPU memory, per attention method.

Nothing here allocates a tensor of the modelled size: every term is a product of shapes and
element sizes (the merging methods' static partitions are built on CPU to count their src and dst
tokens; they are index tensors of N entries), so a 700 GB similarity matrix can be shown not to
fit without ever existing.

Three parts, added at every moment of the forward and maximised over the moments:

- **the method's temporaries** at one global-attention call: a method's params dataclass may define
  ``seam_peak_bytes(self, shape: SeamShape) -> dict[str, float]``: the bytes of the method's own
  tensors alive at the peak of the call, beyond q, k, v and the attention output (names -> bytes).
  :func:`seam_peak` returns that dict, or None for a method without a model ("not modelled"). The
  methods write it as a replay of their GPU code path on a :class:`Ledger` (every allocation and
  free in program order, Python's rebinding included), with the shared primitives of
  :mod:`harness.methods.merging` replayed here (:func:`sdpa_bytes`, :func:`assign_bytes`,
  :class:`SlotMapBytes`, :func:`shared_merge_bytes`). Terms named ``cached: ...`` are index
  tensors a method keeps in its caches from the first call of a shape on (they are alive at
  every later call).
- **a changed model** (a method that transforms the model, e.g. QuantVGGT's fake-quantized copy):
  its params may define ``model_extra_bytes(self, fw: Forward) -> ModelExtra`` (:func:`model_extra`):
  bytes held through the whole forward (added at every moment), its own high-water moments
  (:class:`Moment`), and whether autocast still caches bf16 weights.
- **the forward around it**: :func:`model_peak_bytes` (what is alive at the global-attention call:
  weights, autocast's cached bf16 weight copies, the inputs and outputs the harness holds, the
  residual stream, the block's activations, the kept layer outputs) and :func:`stage_peaks` (the
  forward's other high-water moments: RoPE, the output projection, the MLP, keeping a layer, the
  DINO patch embedding, the heads).

:func:`memory_wall` puts both together per method and frame count: a DataFrame whose ``peak_gb``
estimates ``torch.cuda.max_memory_allocated`` over a timed forward of ``suites/vggt.yaml --preset
gpu`` (fp32 weights under ``torch.autocast`` bf16, lean VGGT*, heads camera and depth).

Dtypes under CUDA autocast (the AMP op lists; ``torch._C._dispatch_dump_table`` shows an
AutocastCUDA kernel for each op named here): LayerNorm, softmax and sum run in float32; linear,
matmul, SDPA and FlexAttention in bf16. So the residual stream, the normed input and q, k (after the
qk LayerNorm and RoPE) are float32; v (a view of the bf16 qkv output) and the attention output are
bf16, and SDPA makes bf16 copies of q and k. :class:`SeamShape` carries these element sizes. CPU
autocast (the tests') casts SDPA, matmul and FlexAttention alike but leaves softmax and sum in their
input's dtype: where that matters the replays follow ``SeamShape.device`` (:meth:`SeamShape.softmax`).

Not modelled: memory a kernel takes for itself below the dispatcher (workspaces, the contiguous
copy a kernel makes of a strided input), the CUDA allocator's 512-byte rounding and
fragmentation, the index caches of other points still held by the methods' ``lru_cache`` (tens of
MB per frame count), and the DPT heads' per-chunk working set beyond one chunk's two largest
feature maps.

Command line (``python -m reports.memory_wall build`` runs it to build ``docs/results/memory-wall.md``)::

    python -m harness.metrics.memory_model [--frames 100 300 500 1000] [--method NAME ...] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from torch import nn

from harness import registry
from harness.methods.merging import GATHER_CHUNK_ELEMS
from harness.models.vggt.model import build_vggt
from harness.models.vggt.presets import VGGTConfig, get_preset
from harness.suite import load_suite

GB = 1e9
"""Bytes per GB in the wall's columns (decimal; ``budget_gb=80`` is 80e9 bytes, below an 80 GB card's
80 GiB, which also holds the CUDA context)."""
INT64, INT32, BOOL, FLOAT32 = 8, 4, 1, 4
"""Element sizes (bytes) of index tensors (``torch.long``), int32 block lists, masks and float32
accumulators."""
OUTPUT_LATER = "output, allocated after this peak"
"""The (negative) term of a method whose peak comes before its output exists: the wall counts the
output as a model term, so the seam total is the call's peak minus the output."""
WIDE_OUTPUT = "output in float32 (beyond the bf16 output)"
"""The term of a method whose output has q's float32 dtype instead of the bf16 attention output."""
SUITE = "vggt"  # the packaged suites/vggt.yaml, found from any working directory
SUITE_PRESET = "gpu"
FRAMES = (100, 300, 500, 1000)
HEIGHT, WIDTH = 392, 518
BUDGET_GB = 80.0
NOT_MODELLED = "not modelled"


# ----------------------------------------------------------------------------- the shape


@dataclass(frozen=True)
class SeamShape:
    """The shape of one global-attention call, in tokens and bytes.

    frames: S; tokens_per_frame: P (= patch_start + patch_h * patch_w); patch_h, patch_w: the
    patch grid; patch_start: special tokens per frame (camera + registers); heads: H; head_dim: d;
    elem_bytes: bytes per element of the compute dtype (2 for bf16): v, the attention output,
    matmul outputs; layer: the global block's index (0-based) and depth: the number of global
    blocks (methods like AVGGT depend on the layer); batch: B.
    qk_elem_bytes: bytes per element of q and k at the seam (0: ``elem_bytes``; 4 under autocast,
    where the qk LayerNorm returns float32); norm_elem_bytes: of the layer's normed input x_norm
    (0: ``elem_bytes``; 4 under autocast); autocast: SDPA / matmul / FlexAttention cast other
    floating inputs to the compute dtype (a copy each). device: whose chunk budgets of
    :mod:`harness.methods.merging` apply ("cuda" for the wall, "cpu" in the tests).
    """

    frames: int
    tokens_per_frame: int
    patch_h: int
    patch_w: int
    patch_start: int
    heads: int
    head_dim: int
    elem_bytes: int = 2
    layer: int = 0
    depth: int = 24
    batch: int = 1
    qk_elem_bytes: int = 0
    norm_elem_bytes: int = 0
    autocast: bool = False
    device: str = "cuda"

    @property
    def tokens(self) -> int:
        """N = S * P."""
        return self.frames * self.tokens_per_frame

    @property
    def qk_bytes(self) -> int:
        return self.qk_elem_bytes or self.elem_bytes

    @property
    def norm_bytes(self) -> int:
        return self.norm_elem_bytes or self.elem_bytes

    @property
    def rows(self) -> int:
        """B * H: the (batch, head) rows of q, k, v."""
        return self.batch * self.heads

    def head_tensor(self, tokens: int, elem: int) -> float:
        """Bytes of a ``[B, H, tokens, d]`` tensor of ``elem``-byte elements."""
        return float(self.rows) * tokens * self.head_dim * elem

    def cast(self, elem: int) -> int:
        """Element size of an input of ``elem`` bytes once SDPA / matmul has seen it."""
        return self.elem_bytes if self.autocast else elem

    def softmax(self, elem: int) -> int:
        """Element size of softmax's output on an input of ``elem`` bytes: float32 under CUDA
        autocast (softmax is on its float32 list, the input cast first); CPU autocast leaves softmax
        in its input's dtype."""
        return FLOAT32 if self.autocast and self.device == "cuda" else elem

    @classmethod
    def gpu(cls, cfg: VGGTConfig, frames: int, height: int = HEIGHT, width: int = WIDTH, layer: int = 0,
            batch: int = 1) -> SeamShape:
        """The seam of ``cfg`` at ``frames`` frames of height x width px as the gpu preset runs it:
        fp32 weights under bf16 autocast (q, k and x_norm float32 after their LayerNorms)."""
        return Forward(cfg, frames, height, width, batch=batch).seam_shape(layer)


# ----------------------------------------------------------------------------- the ledger


class Ledger:
    """Replays the allocations of one call in program order and remembers its peak moment.

    ``alloc(name, bytes)`` returns a handle; ``free(*handles)``; ``bind(var, handle)`` models
    Python's ``var = <new tensor>``: the new tensor exists before the old value of ``var`` dies.
    ``terms(output)``: ``{name: bytes}`` alive at the peak (same names summed), the output handle
    left out; when the output was not yet allocated at the peak, :data:`OUTPUT_LATER` carries
    minus its bytes, so the total is always the call's peak minus its output.
    """

    def __init__(self) -> None:
        self._live: dict[int, tuple[str, float]] = {}
        self._sizes: dict[int, float] = {}
        self._vars: dict[str, int] = {}
        self._next = 0
        self.current = 0.0
        self.peak = 0.0
        self._at_peak: dict[int, tuple[str, float]] = {}

    def alloc(self, name: str, nbytes: float) -> int:
        handle = self._next
        self._next += 1
        self._live[handle] = (name, float(nbytes))
        self._sizes[handle] = float(nbytes)
        self.current += nbytes
        if self.current > self.peak:
            self.peak = self.current
            self._at_peak = dict(self._live)
        return handle

    def free(self, *handles: int | None) -> None:
        for h in handles:
            if h is not None and h in self._live:
                self.current -= self._live.pop(h)[1]

    def bind(self, var: str, handle: int | None) -> int | None:
        """``var = handle`` (None: ``var = None``): the previous value of ``var`` dies."""
        old = self._vars.pop(var, None)
        if handle is not None:
            self._vars[var] = handle
        if old != handle:
            self.free(old)
        return handle

    def unbind(self, *names: str) -> None:
        for var in names:
            self.bind(var, None)

    def has(self, var: str) -> bool:
        return var in self._vars

    def terms(self, output: int | None = None, model_output: float | None = None) -> dict[str, float]:
        """What was alive at the peak, ``{name: bytes}``, the output left out. ``model_output``: the
        bytes the wall counts for the output (bf16); a larger real output adds :data:`WIDE_OUTPUT`."""
        out: dict[str, float] = {}
        for h, (name, nbytes) in self._at_peak.items():
            if h != output and nbytes:
                out[name] = out.get(name, 0.0) + nbytes
        if output is not None and output not in self._at_peak:
            out[OUTPUT_LATER] = -self._sizes[output]
        if output is not None and model_output is not None and self._sizes[output] > model_output:
            out[WIDE_OUTPUT] = self._sizes[output] - model_output
        return out


# ----------------------------------------------------------------------------- primitives


def sdpa_bytes(led: Ledger, s: SeamShape, rows: int, n_q: int, n_k: int, q_elem: int, k_elem: int,
               v_elem: int, *, mask_elems: int = 0, mask_elem: int = BOOL, what: str = "") -> int:
    """A fused ``F.scaled_dot_product_attention`` (flash / memory-efficient: no N x N matrix) on
    ``rows`` (batch, head) rows: autocast's copies of q, k, v in the compute dtype; a mask of
    ``mask_elems`` entries: a boolean one becomes an additive one in q's dtype, a float one of
    ``mask_elem`` bytes is cast like q; the output ``[rows, n_q, d]`` and the float32 logsumexp
    ``[rows, n_q]``. Frees all but the output and returns its handle."""
    d = s.head_dim
    temps = []
    for name, n, elem in (("q", n_q, q_elem), ("k", n_k, k_elem), ("v", n_k, v_elem)):
        if s.cast(elem) != elem:
            temps.append(led.alloc(f"{what}{name} in bf16 (autocast copy)", rows * n * d * s.elem_bytes))
    q_out = s.cast(q_elem)
    if mask_elems and mask_elem == BOOL:
        temps.append(led.alloc(f"{what}additive attention mask", mask_elems * q_out))
    elif mask_elems and s.cast(mask_elem) != mask_elem:
        temps.append(led.alloc(f"{what}attention bias in bf16 (autocast copy)", mask_elems * s.elem_bytes))
    out = led.alloc(f"{what}attention output", rows * n_q * d * q_out)
    temps.append(led.alloc(f"{what}logsumexp (float32)", rows * n_q * FLOAT32))
    led.free(*temps)
    return out


def chunks(total: int, step: int) -> list[tuple[int, int]]:
    """``(start, size)`` of the chunks of ``range(total)`` by ``step`` that a replay needs: the first,
    the second and the last. Every chunk between repeats the second's allocations and frees exactly
    (same sizes, same tensors alive), so its peak is the second's."""
    n = -(-total // step) if total > 0 else 0
    return [(i * step, min(step, total - i * step)) for i in sorted({0, 1, n - 1}) if 0 <= i < n]


@dataclass(frozen=True)
class MatchSetShape:
    """One match set of a static partition: ``nb`` blocks of ``ns`` src and ``nc`` candidates,
    ``r`` src merged per block (:class:`harness.methods.merging.MatchSet`)."""

    nb: int
    ns: int
    nc: int
    r: int


def partition_sets(part: Any) -> list[MatchSetShape]:
    """The match-set shapes of a :class:`harness.methods.merging.Partition`."""
    return [MatchSetShape(m.src.shape[0], m.src.shape[1], m.cand.shape[1], m.r) for m in part.sets]


def cached_bytes(*objects: Any) -> float:
    """Bytes of the tensors of static index objects (partitions, block layouts): what a method's
    caches hold on the device once a shape was seen (``cand_src``, built on first use, included)."""
    total = 0.0
    for obj in objects:
        for value in vars(obj).values():
            total += _tensor_bytes(value)
        for ms in getattr(obj, "sets", ()):
            total += sum(_tensor_bytes(t) for t in (ms.src, ms.cand, ms.cand_slot, ms.unm_base))
            total += float(ms.cand.numel() + ms.src.numel()) * INT64  # cand_src
        for bc in getattr(obj, "classes", ()):
            total += _tensor_bytes(bc.tokens) + _tensor_bytes(bc.anchors)
    return total


def _tensor_bytes(value: Any) -> float:
    if hasattr(value, "element_size") and hasattr(value, "numel"):
        return float(value.numel() * value.element_size())
    return 0.0


def assign_bytes(led: Ledger, s: SeamShape, rows: int, sets: Sequence[MatchSetShape], dim: int,
                 metric_elem: int, *, gather_copies: int = 1, dense: bool = False, fresh: bool = False,
                 what: str = "") -> int:
    """:func:`harness.methods.merging.assign` on the Triton path: the slot map ``[rows, N]`` int64,
    per match set the best-match index, the gathered metric of a chunk of blocks (``[rows, blocks *
    (nc + ns), dim]``, chunked by ``GATHER_CHUNK_ELEMS[s.device]``; the previous chunk's stays
    alive while the next is gathered), the kernel's float32 score and int64 index (no similarity
    is stored), and :func:`src_slots_bytes`. ``gather_copies``: 2 when the gather is an
    index_select plus a reshape copy (HTTM's head groups of more than one head). ``dense``: the
    torch path of ``best_match`` without its similarity chunking instead of the kernel
    (:func:`dense_best_match_bytes`). ``fresh``: a partition built in the same call, whose match
    sets make their ``cand_src`` (int64 ``[nb, nc + ns]``, kept with the partition) on this first
    use, after the set's best-match index. Returns the slot map's handle; every other tensor but the
    fresh ``cand_src`` is freed."""
    R, N = rows, s.tokens
    slot_of = led.alloc(f"{what}slot map (int64)", R * N * INT64)
    budget = GATHER_CHUNK_ELEMS[s.device]
    for ms in sets:
        if ms.ns == 0 or ms.r == 0:
            continue
        need_score = ms.r < ms.ns
        led.bind("index", led.alloc(f"{what}best-match index (int64)", R * ms.nb * ms.ns * INT64))
        if fresh:
            led.alloc(f"{what}merge candidates and src (int64)", ms.nb * (ms.nc + ms.ns) * INT64)
        led.unbind("score")
        n = ms.nc + ms.ns
        step = max(1, budget // max(1, R * n * dim))
        for _, bc in chunks(ms.nb, step):
            size = R * bc * n * dim * metric_elem
            first = led.alloc(f"{what}gathered metric", size)
            if gather_copies > 1:
                led.bind("x", led.alloc(f"{what}gathered metric", size))
                led.free(first)
            else:
                led.bind("x", first)
            if dense:
                s_c, i_c = dense_best_match_bytes(led, s, R * bc, ms.ns, ms.nc, dim, metric_elem, what)
            else:
                s_c, i_c = _triton_best_match(led, R * bc, ms.ns, metric_elem, what)
            led.bind("s_c", s_c if need_score else None)
            if not need_score:
                led.free(s_c)
            led.bind("i_c", i_c)
            if need_score and not led.has("score"):
                led.bind("score", led.alloc(f"{what}best-match score", R * ms.nb * ms.ns * metric_elem))
        slot, merged = src_slots_bytes(led, R, ms, metric_elem, what)
        led.bind("slot", slot)
        led.bind("merged", merged)
    led.unbind("index", "score", "x", "s_c", "i_c", "slot", "merged")
    return slot_of


def _triton_best_match(led: Ledger, rows: int, ns: int, src_elem: int, what: str) -> tuple[int, int]:
    """:func:`harness.methods.triton_merge.best_match`: float32 score and int64 index ``[rows, ns]``
    (the score cast to the src dtype when that is not float32)."""
    score = led.alloc(f"{what}best-match score", rows * ns * FLOAT32)
    index = led.alloc(f"{what}best-match index (int64)", rows * ns * INT64)
    if src_elem != FLOAT32:
        cast = led.alloc(f"{what}best-match score", rows * ns * src_elem)
        led.free(score)
        score = cast
    return score, index


def dense_best_match_bytes(led: Ledger, s: SeamShape, rows: int, ns: int, nc: int, dim: int, src_elem: int,
                           what: str = "") -> tuple[int, int]:
    """:func:`harness.methods.merging.best_match`'s torch path in one shot (no chunk budget), as
    upstream FastVGGT computes its scores: the normalized candidates (``F.normalize``: norm, clamp,
    division; float32 under autocast), autocast's bf16 copies of src and candidates for ``bmm``, the
    **similarity** ``[rows, ns, nc]`` in the matmul's dtype (bf16 under autocast, else the metric's),
    and its row maxima (score in the similarity's dtype, int64 index)."""
    norm_elem = FLOAT32 if s.autocast else src_elem
    norm = led.alloc(f"{what}candidate norms", rows * nc * norm_elem)
    clamp = led.alloc(f"{what}candidate norms", rows * nc * norm_elem)
    led.free(norm)
    cand = led.alloc(f"{what}normalized candidates", rows * nc * dim * max(src_elem, norm_elem))
    led.free(clamp)
    casts = [led.alloc(f"{what}{name} in bf16 (autocast copy)", rows * n * dim * s.elem_bytes)
             for name, n, elem in (("src", ns, src_elem), ("candidates", nc, max(src_elem, norm_elem)))
             if s.cast(elem) != elem]
    sim_elem = s.cast(src_elem)
    sim = led.alloc(f"{what}similarity (src x dst)", rows * ns * nc * sim_elem)
    led.free(*casts)
    score = led.alloc(f"{what}best-match score", rows * ns * sim_elem)
    index = led.alloc(f"{what}best-match index (int64)", rows * ns * INT64)
    led.free(sim, cand)
    return score, index


def src_slots_bytes(led: Ledger, rows: int, ms: MatchSetShape, score_elem: int,
                    what: str = "") -> tuple[int, int]:
    """:func:`harness.methods.merging.src_slots`: targets (int64), and when only the top r of a
    block merge (r < ns), the stable argsort of the scores (sort values + int64 order), the ranks,
    the merged mask and the new slots. Returns (slot, merged) handles."""
    R, nb, ns = rows, ms.nb, ms.ns
    cells = R * nb * ns
    target = led.alloc(f"{what}merge targets (int64)", cells * INT64)
    if ms.r >= ns:
        return target, led.alloc(f"{what}merged mask", cells * BOOL)
    values = led.alloc(f"{what}sorted scores", cells * score_elem)
    order = led.alloc(f"{what}score order (int64)", cells * INT64)
    led.free(values)
    rank = led.alloc(f"{what}score ranks (int64)", cells * INT64)
    arange = led.alloc(f"{what}score ranks (int64)", ns * INT64)
    expanded = led.alloc(f"{what}score ranks (int64)", cells * INT64) if R * nb > 1 else None
    led.free(arange, expanded)
    merged = led.alloc(f"{what}merged mask", cells * BOOL)
    shifted = led.alloc(f"{what}unmerged slots (int64)", cells * INT64)
    own = led.alloc(f"{what}unmerged slots (int64)", cells * INT64)
    led.free(shifted)
    slot = led.alloc(f"{what}src slots (int64)", cells * INT64)
    led.free(target, order, rank, own)
    return slot, merged


class SlotMapBytes:
    """:class:`harness.methods.merging.SlotMap` on the Triton path: ``[B, G, N]`` decisions into M
    slots; its member counts (float32 ``[B, G, M]``) and unmerge index (int64 ``[B * H * N]``) are
    cached on first use, as the real object caches them."""

    def __init__(self, led: Ledger, s: SeamShape, groups: int, slots: int, slot_of: int | None = None,
                 what: str = "") -> None:
        self.led, self.s, self.G, self.M, self.what = led, s, groups, slots, what
        self.slot_of = slot_of
        self.counts_h: int | None = None
        self.flat: dict[tuple[int, int], int] = {}

    def counts(self) -> int:
        if self.counts_h is None:
            led, B, G, N, M = self.led, self.s.batch, self.G, self.s.tokens, self.M
            rows = led.alloc(f"{self.what}slot counts", B * G * INT64)
            flat = led.alloc(f"{self.what}slot counts", B * G * N * INT64)
            bins = led.alloc(f"{self.what}slot counts", B * G * M * INT64)
            self.counts_h = led.alloc(f"{self.what}slot counts", B * G * M * FLOAT32)
            led.free(bins, flat, rows)
        return self.counts_h

    def merge(self, elem: int, name: str) -> int:
        """``segment_mean``: float32 sums ``[B, H, M, d]``, divided in place by the counts, then
        cast to the input's dtype (a copy unless it is float32). Returns the merged tensor."""
        led, s, M = self.led, self.s, self.M
        self.counts()
        sums = led.alloc(name if elem == FLOAT32 else f"{self.what}merge sums (float32)",
                         s.head_tensor(M, FLOAT32))
        clamp = led.alloc(f"{self.what}slot counts", s.batch * self.G * M * FLOAT32)
        inv = led.alloc(f"{self.what}slot counts", s.batch * self.G * M * FLOAT32)
        led.free(clamp)
        if elem == FLOAT32:
            led.free(inv)
            return sums
        out = led.alloc(name, s.head_tensor(M, elem))
        led.free(sums, inv)
        return out

    def reuse(self, what: str = "cached: ") -> None:
        """The counts and unmerge index an earlier call with this same map built (a method that keeps
        its slot map across calls): allocated here as terms named ``what`` + their usual names,
        not rebuilt by :meth:`merge` / :meth:`unmerge`."""
        led, s = self.led, self.s
        self.counts_h = led.alloc(f"{what}slot counts", s.batch * self.G * self.M * FLOAT32)
        self.flat[(s.heads, self.M)] = led.alloc(f"{what}unmerge index (int64)", s.rows * s.tokens * INT64)

    def flat_index(self, rows_per_head: int | None = None) -> int:
        M = self.M if rows_per_head is None else rows_per_head
        if (self.s.heads, M) not in self.flat:
            led, s = self.led, self.s
            ar = led.alloc(f"{self.what}unmerge index (int64)", s.rows * INT64)
            rows = led.alloc(f"{self.what}unmerge index (int64)", s.rows * INT64)
            led.free(ar)
            index = led.alloc(f"{self.what}unmerge index (int64)", s.rows * s.tokens * INT64)
            self.flat[(s.heads, M)] = index
            led.free(rows)
        return self.flat[(self.s.heads, M)]

    def unmerge(self, slots_used: int, elem: int) -> int:
        """Copy each slot's row back to its tokens: the output ``[B, H, N, d]``."""
        self.flat_index(slots_used)
        return self.led.alloc("attention output", self.s.head_tensor(self.s.tokens, elem))

    def release(self) -> None:
        self.led.free(self.counts_h, *self.flat.values())
        self.counts_h, self.flat = None, {}


def shared_merge_bytes(led: Ledger, s: SeamShape, sm: SlotMapBytes, prop_attn: bool = False) -> int:
    """:func:`harness.methods.merging.shared_merge_attention`: q, k, v merged into M slots, SDPA on
    them (with ToMe's proportional-attention bias when ``prop_attn``), the output copied back.
    Returns the output's handle (the merged tensors are freed)."""
    M, q_e, v_e = sm.M, s.qk_bytes, s.elem_bytes
    q_m = sm.merge(q_e, "merged q")
    k_m = sm.merge(q_e, "merged k")
    v_m = sm.merge(v_e, "merged v")
    bias = None
    if prop_attn:
        cells = s.batch * sm.G * M
        clamp = led.alloc("proportional-attention bias", cells * FLOAT32)
        log = led.alloc("proportional-attention bias", cells * FLOAT32)
        led.free(clamp)
        if q_e != FLOAT32:
            cast = led.alloc("proportional-attention bias", cells * q_e)
            led.free(log)
            log = cast
        # expand over each group's heads, then reshape to [B, H, 1, M]: a (stride-0) view unless
        # there are several groups of several heads
        copied = 1 < sm.G < s.heads
        bias = led.alloc("proportional-attention bias", s.rows * M * q_e) if copied else None
        led.bind("log_size", log)
    o_m = sdpa_bytes(led, s, s.rows, M, M, q_e, q_e, v_e, mask_elems=s.rows * M if prop_attn else 0,
                     mask_elem=q_e, what="merged ")
    out = sm.unmerge(M, s.cast(q_e))
    led.free(q_m, k_m, v_m, o_m, bias)
    led.unbind("log_size")
    return out


def outlier_filter_bytes(led: Ledger, s: SeamShape, q_mean: int, sm: SlotMapBytes, frac: float,
                         chunk_elems: int) -> tuple[SlotMapBytes, int]:
    """:func:`harness.methods.httm.filter_outliers` (``chunk_elems``: its ``DEV_CHUNK_ELEMS``): the
    queries' deviations from their slot means (chunks of ``[rows, N, d]``, then ``[B, G, N]``), the
    top-k, the flagged mask and the new slot map (int64 ``[B, G, N]`` and its temporaries), the
    flagged rows, the new merged queries ``[B, H, M + extra, d]`` (float32 sums) and the new counts.
    How many queries each head group flags is data-dependent: modelled as the budget spread evenly
    (``extra = ceil(budget / G)``; all in one group would give ``min(N, budget)``). Returns the new
    slot map and merged queries."""
    B, H, N, d, G, M = s.batch, s.heads, s.tokens, s.head_dim, sm.G, sm.M
    hg, qb = H // G, s.qk_bytes
    budget = min(G * N, int(frac * G * N + 0.5))
    if budget == 0:
        return sm, q_mean
    sm.flat_index()
    dev = led.alloc("outlier deviations", B * H * N * qb)
    step = max(1, chunk_elems // (N * d))
    for _, rows_c in chunks(B * H, step):
        led.bind("diff", led.alloc("outlier deviations", rows_c * N * d * qb))
    led.unbind("diff")
    dev_elem = FLOAT32 if s.autocast else qb  # sum runs in float32 under autocast
    summed = led.alloc("outlier deviations", B * G * N * dev_elem)
    led.free(dev)
    top = led.alloc("outlier top-k", B * budget * dev_elem)
    idx = led.alloc("outlier top-k", B * budget * INT64)
    flagged = led.alloc("outlier flags", B * G * N * BOOL)
    led.free(led.alloc("outlier flags", B * budget * BOOL), led.alloc("outlier flags", B * G * INT64 + INT64))
    extra = min(N, -(-budget // G))
    cells = B * G * N * INT64
    t1 = led.alloc("outlier slot map", cells)
    t2 = led.alloc("outlier slot map", cells)
    led.free(t1)
    t3 = led.alloc("outlier slot map", cells)
    led.free(t2)
    new_slot = led.alloc("q slot map with outliers (int64)", cells)
    led.free(t3)
    K = budget
    nz = led.alloc("outlier rows", K * 3 * INT64)
    a, b = led.alloc("outlier rows", K * INT64), led.alloc("outlier rows", K * INT64)
    c = led.alloc("outlier rows", K * INT64)
    led.free(a, b)
    ar = led.alloc("outlier rows", hg * INT64)
    bh = led.alloc("outlier rows", K * hg * INT64)
    led.free(c, ar)
    acc = FLOAT32 if qb == 2 else qb
    t, u = led.alloc("outlier rows", K * hg * INT64), led.alloc("outlier rows", K * hg * INT64)
    w = led.alloc("outlier rows", K * hg * INT64)
    led.free(t, u)
    rows = led.alloc("outlier rows", K * hg * d * qb)
    led.free(w)
    if acc != qb:
        rows, r0h = led.alloc("outlier rows", K * hg * d * acc), rows
        led.free(r0h)
    M2 = M + extra
    sums = led.alloc("merged q" if acc == qb else "outlier sums (float32)", B * H * M2 * d * acc)
    counts = led.alloc("slot counts", B * H * M * FLOAT32) if hg > 1 else None
    if acc != qb:
        led.free(led.alloc("outlier sums (float32)", B * H * M * d * acc))
    for _ in range(2):  # index_add_ and index_copy_: slot lookups and flat row numbers
        x1 = led.alloc("outlier rows", K * INT64)
        x2 = led.alloc("outlier rows", K * hg * INT64)
        led.free(x1)
        x3 = led.alloc("outlier rows", K * hg * INT64)
        x4 = led.alloc("outlier rows", K * hg * INT64)
        led.free(x2, x3, x4)
    sm2 = SlotMapBytes(led, s, G, M2, new_slot, sm.what)
    sm2.counts()
    clamp = led.alloc("slot counts", B * G * M2 * FLOAT32)
    inv = led.alloc("slot counts", B * G * M2 * FLOAT32)
    led.free(clamp)
    q_m = sums
    if acc != qb:
        q_m = led.alloc("merged q", B * H * M2 * d * qb)
        led.free(sums)
    led.free(summed, top, idx, flagged, nz, bh, rows, counts, inv)
    return sm2, q_m


def pooled_bytes(led: Ledger, s: SeamShape, blocks: int, size: int, elem: int) -> tuple[int, int]:
    """Block-sparse attention's ``_pooled`` on ``[B, H, blocks, size, d]``: the mask weights, the
    masked copy of all blocks, its sum (float32 under autocast) and the division. Returns the
    pooled ``[B, H, blocks, d]`` and its element size."""
    sum_elem = FLOAT32 if s.autocast else elem
    w = led.alloc("block pooling", blocks * size * elem)
    masked = led.alloc("block pooling", s.head_tensor(blocks * size, elem))
    summed = led.alloc("block pooling", s.rows * blocks * s.head_dim * sum_elem)
    led.free(masked)
    count = led.alloc("block pooling", blocks * sum_elem)
    pooled = led.alloc("pooled blocks", s.rows * blocks * s.head_dim * max(sum_elem, elem))
    led.free(summed, count, w)
    return pooled, max(sum_elem, elem)


def flex_block_mask_bytes(led: Ledger, rows: int, q_blocks: int, kv_blocks: int) -> tuple[int, int]:
    """``BlockMask.from_kv_blocks`` (torch.nn.attention.flex_attention) from int32 kv lists of
    ``rows`` (batch, head) rows: ``_transpose_ordered`` builds the dense int32 block map (padded by
    a column, through vmap: the lt mask, the where, a clone), then argsorts its transpose (int32
    values freed, int64 order) and keeps the transposed lists as int32. Returns the handles the mask
    keeps (q_num_blocks, q_indices)."""
    E = rows * q_blocks * kv_blocks
    padded = led.alloc("flex block mask", rows * q_blocks * (kv_blocks + 1) * INT32)
    small = led.alloc("flex block mask", (q_blocks + kv_blocks) * INT32 + rows * (INT32 + INT64) + 16)
    lt = led.alloc("flex block mask", E * BOOL)
    where = led.alloc("flex block mask", E * INT32)
    dense = led.alloc("flex block mask", E * INT32)
    led.free(padded, small, lt, where)
    num = led.alloc("flex block mask", rows * kv_blocks * INT64)
    values = led.alloc("flex block mask", E * INT32)
    order = led.alloc("flex block mask", E * INT64)
    led.free(values)
    q_num = led.alloc("flex block mask (kept)", rows * kv_blocks * INT32)
    q_idx = led.alloc("flex block mask (kept)", E * INT32)
    led.free(order, num, dense)
    return q_num, q_idx


def flex_patch_attention_bytes(led: Ledger, s: SeamShape, n: int, n_special: int, q_blocks: int,
                               k_blocks: int, special_blocks: int, bq: int, bk: int, budget: int) -> int:
    """Block-sparse attention's FlexAttention path (``_flex_patch_attention``, CUDA): the padded
    queries and the padded patch + special keys / values, the kept-block map (bool ``[B, H, nq, nk +
    nsb]``), the key validity, the kv block lists (int8 flags, their int64 argsort, int32 lists),
    the block mask's transposed lists (:func:`flex_block_mask_bytes`), then the compiled kernel:
    autocast's bf16 copies of q and k, its output and logsumexp. Returns the output's handle (the
    padded patch output; everything else freed)."""
    qb, e, rows = s.qk_bytes, s.elem_bytes, s.rows
    Lk = (k_blocks + special_blocks) * bk
    q_pad = led.alloc("padded q", s.head_tensor(q_blocks * bq, qb))
    padded = []
    for name, elem in (("k", qb), ("v", e)):
        a = led.alloc(f"padded {name}", s.head_tensor(k_blocks * bk, elem))
        b = led.alloc(f"padded {name}", s.head_tensor(special_blocks * bk, elem))
        padded.append(led.alloc(f"padded {name}", s.head_tensor(Lk, elem)))
        led.free(a, b)
    E = rows * q_blocks * (k_blocks + special_blocks)
    ar = led.alloc("kept-block map", budget * INT64)
    used = led.alloc("kept-block map", rows * q_blocks * budget * BOOL)
    led.free(ar)
    kept = led.alloc("kept-block map", E * BOOL)
    led.free(used)
    pos = led.alloc("key validity", Lk * INT64)
    tmp = [led.alloc("key validity", Lk * BOOL), led.alloc("key validity", Lk * BOOL)]
    shifted = led.alloc("key validity", Lk * INT64)
    tmp.append(led.alloc("key validity", Lk * BOOL))
    led.free(shifted)
    real_key = led.alloc("key validity", Lk * BOOL)
    led.free(*tmp)
    num = led.alloc("kv block lists", rows * q_blocks * INT32)
    flags = led.alloc("kv block lists", E * BOOL)
    i8 = led.alloc("kv block lists", E * BOOL)
    led.free(flags)
    values = led.alloc("kv block lists", E * BOOL)
    order = led.alloc("kv block lists", E * INT64)
    led.free(values, i8)
    lists = led.alloc("kv block lists", E * INT32)
    led.free(order)
    q_num, q_idx = flex_block_mask_bytes(led, rows, q_blocks, k_blocks + special_blocks)
    casts = [led.alloc(f"{name} in bf16 (autocast copy)", s.head_tensor(length, e))
             for name, length in (("q", q_blocks * bq), ("k", Lk)) if s.cast(qb) != qb]
    out = led.alloc("patch attention output", s.head_tensor(q_blocks * bq, s.cast(qb)))
    led.free(led.alloc("logsumexp (float32)", rows * q_blocks * bq * FLOAT32), *casts)
    led.free(q_pad, *padded, kept, pos, real_key, num, lists, q_num, q_idx)
    return out


def gather_patch_attention_bytes(led: Ledger, s: SeamShape, q_blocks: int, bq: int, bk: int, budget: int,
                                 n_special: int, chunk_elems: int) -> int:
    """Block-sparse attention's gathered-blocks path (``_gather_patch_attention``): per chunk of
    query blocks (``chunk_elems`` gathered key elements), the gathered key / value blocks with the
    special tokens appended, the key mask, the query chunk and SDPA on them (the previous chunk's
    tensors alive while the next are built); the output blocks ``[B, H, nq, bq, d]``, in SDPA's
    dtype, made after the first chunk's SDPA. Returns the output blocks' handle."""
    B, H, d, qb, e = s.batch, s.heads, s.head_dim, s.qk_bytes, s.elem_bytes
    L = budget * bk + n_special
    ar = led.alloc("kept-block map", budget * INT64)
    used = led.alloc("kept-block map", B * H * q_blocks * budget * BOOL)
    led.free(ar)
    chunk = max(1, chunk_elems // max(1, B * H * L * d))
    ob = None  # made after the first chunk's SDPA, in its dtype
    small = led.alloc("gathered blocks", (B + H) * INT64)
    for _, c in chunks(q_blocks, chunk):
        rows = B * H * c
        for name, elem in (("k", qb), ("v", e)):
            led.bind(name, led.alloc(f"gathered {name} blocks", rows * budget * bk * d * elem))
        t = led.alloc("key mask", rows * budget * bk * BOOL)
        led.bind("allow", led.alloc("key mask", rows * budget * bk * BOOL))
        led.free(t)
        if n_special:
            for name, elem in (("k", qb), ("v", e)):
                spec = led.alloc(f"gathered {name} blocks", rows * n_special * d * elem)
                led.bind(name, led.alloc(f"gathered {name} blocks", rows * L * d * elem))
                led.free(spec)
            ones = led.alloc("key mask", rows * n_special * BOOL)
            led.bind("allow", led.alloc("key mask", rows * L * BOOL))
            led.free(ones)
        copied = B * H > 1 and c < q_blocks  # a slice of the blocks along dim 2: contiguous only then
        led.bind("qc", led.alloc("query blocks", rows * bq * d * qb) if copied else None)
        o = sdpa_bytes(led, s, rows, bq, L, qb, qb, e, mask_elems=rows * L, what="block ")
        if ob is None:
            ob = led.alloc("patch attention output", s.head_tensor(q_blocks * bq, s.cast(qb)))
        led.free(o)
    led.unbind("k", "v", "allow", "qc")
    led.free(used, small)
    return ob


def block_sparse_bytes(s: SeamShape, q_block: int, k_block: int, cdf: float, dense_special: bool,
                       backend: str, budget_of: Callable[[int], int], per_head_caps: bool = False,
                       *, gather_chunk_elems: int) -> dict[str, float]:
    """:func:`baselines.blocksparse.sparse_block_attention` (block-sparse attention, and HeSS on the
    same core): the patch q, k, v and special k, v gathered, q, k, v cut into zero-padded blocks,
    the pooled estimate ``[B, H, nq, nk]`` (the matmul's logits, their scaled copy and softmax's
    output, float32 under CUDA autocast, alive to the end), its top-k (int64 ``[B, H, nq, budget]``,
    ``budget_of(nk)`` key blocks), the cdf cut when ``cdf > 0``, the per-head caps' minimum when
    ``per_head_caps``; then the kept-block attention
    (:func:`flex_patch_attention_bytes` for 'flex', and 'auto' on CUDA: the kept-block map and the
    block mask's int32 lists, ``[B, H, nq, nk]`` each, and their argsorts;
    :func:`gather_patch_attention_bytes` for 'gather'), the output (in the attention's dtype: bf16
    under autocast) and the special rows' dense SDPA over all N keys. Returns the terms beyond q, k,
    v and the bf16 output."""
    N, qb, e, d = s.tokens, s.qk_bytes, s.elem_bytes, s.head_dim
    ns = s.frames * s.patch_start if dense_special else 0
    n = N - ns
    led = Ledger()
    led.alloc("cached: token split", N * INT64)
    for t, el in (("q", qb), ("k", qb), ("v", e)):
        led.alloc(f"patch {t}", s.head_tensor(n, el))
    for t, el in (("k", qb), ("v", e)):
        led.alloc(f"special {t}", s.head_tensor(ns, el))
    nq, nk = -(-n // q_block), -(-n // k_block)
    for blocks, size, elem in ((nq, q_block, qb), (nk, k_block, qb), (nk, k_block, e)):
        led.alloc("padded blocks", s.head_tensor(blocks * size, elem))
        ar = led.alloc("block validity", blocks * size * INT64)
        led.alloc("block validity", blocks * size * BOOL)
        led.free(ar)
    budget = budget_of(nk)
    pq, p_elem = pooled_bytes(led, s, nq, q_block, qb)
    pk, _ = pooled_bytes(led, s, nk, k_block, qb)
    casts = [led.alloc("pooled blocks", s.rows * nb * d * e) for nb in (nq, nk) if s.cast(p_elem) != p_elem]
    cells, mm_elem = s.rows * nq * nk, s.cast(p_elem)
    mm = led.alloc("block logits", cells * mm_elem)
    led.free(pq, pk, *casts)
    led.alloc("block logits", cells * mm_elem)
    led.free(mm)
    est_elem = s.softmax(mm_elem)
    cast = led.alloc("block estimate", cells * est_elem) if est_elem != mm_elem else None
    led.alloc("block estimate", cells * est_elem)
    led.free(cast)
    _top_blocks_bytes(led, s.rows * nq, budget, est_elem, cdf, per_head_caps)
    if backend == "flex" or (backend == "auto" and s.device == "cuda"):
        flex_patch_attention_bytes(led, s, n, ns, nq, nk, -(-ns // k_block), q_block, k_block, budget)
    else:
        gather_patch_attention_bytes(led, s, nq, q_block, k_block, budget, ns, gather_chunk_elems)
    out = led.alloc("attention output", s.head_tensor(N, s.cast(qb)))
    if ns:
        q_s = led.alloc("special q", s.head_tensor(ns, qb))
        led.free(sdpa_bytes(led, s, s.rows, ns, N, qb, qb, e, what="special rows' "), q_s)
    return led.terms(out, output_bytes(s))


def _top_blocks_bytes(led: Ledger, rows: int, budget: int, score_elem: int, cdf: float,
                      per_head: bool) -> None:
    """``select_blocks``: top-k values (freed) and int64 indices ``[rows, budget]``, the int64 counts
    ``[rows]`` (with ``cdf > 0``: the cumulative mass, its shift, the cut and its sum, clamped); the
    per-head caps' minimum replaces the counts."""
    top = led.alloc("top blocks", rows * budget * score_elem)
    led.alloc("top blocks (int64)", rows * budget * INT64)
    if cdf <= 0:
        led.bind("count", led.alloc("top blocks (int64)", rows * INT64))
    else:
        cum = led.alloc("top blocks", rows * budget * score_elem)
        before = led.alloc("top blocks", rows * budget * score_elem)
        led.free(cum)
        cut = led.alloc("top blocks", rows * budget * BOOL)
        summed = led.alloc("top blocks (int64)", rows * INT64)
        led.bind("count", led.alloc("top blocks (int64)", rows * INT64))
        led.free(before, cut, summed)
    led.free(top)
    if per_head:
        led.bind("count", led.alloc("top blocks (int64)", rows * INT64))


def plain_bytes(s: SeamShape) -> dict[str, float]:
    """Plain attention (:func:`harness.models.seam.sdpa_attention`): a fused kernel, no N x N matrix;
    under autocast, bf16 copies of q and k; and the float32 logsumexp ``[B, H, N]``."""
    led = Ledger()
    out = sdpa_bytes(led, s, s.rows, s.tokens, s.tokens, s.qk_bytes, s.qk_bytes, s.elem_bytes)
    return led.terms(out, output_bytes(s))


def output_bytes(s: SeamShape) -> float:
    """The attention output the wall counts in the model: ``[B, H, N, d]`` in the compute dtype."""
    return s.head_tensor(s.tokens, s.elem_bytes)


@dataclass(frozen=True)
class Moment:
    """A high-water moment of a method's changed forward: ``forward``, the bytes the forward holds then
    besides its persistent terms and the method's held ones (kept layer outputs, the block's
    tensors), and ``terms``, the method's own temporaries then (name -> bytes)."""

    forward: float
    terms: dict[str, float]


@dataclass(frozen=True)
class ModelExtra:
    """What a method that changes the model adds to the forward's memory: its params may define
    ``model_extra_bytes(self, fw: Forward) -> ModelExtra`` (:func:`model_extra`).

    held: {name: bytes} alive through the whole forward (e.g. a changed copy of the model, beside the
        original the harness keeps for the reference), added at every moment;
    moments: {name: :class:`Moment`}: further high-water moments of the changed forward;
    weight_cache: False when the changed model's parameters do not require grad: autocast then keeps
        no bf16 copies of its weights (:attr:`Forward.caches_weights`), at every moment.
    """

    held: dict[str, float] = field(default_factory=dict)
    moments: dict[str, Moment] = field(default_factory=dict)
    weight_cache: bool = True


def model_extra(method_params: Any, fw: Forward) -> ModelExtra:
    """The model-level terms of a method at forward ``fw`` (its params' ``model_extra_bytes``; an
    inherited one counts: it describes the changed model, whatever runs at the seam), or none."""
    hook = getattr(method_params, "model_extra_bytes", None)
    return hook(fw) if hook is not None else ModelExtra()


def has_model(method_params: Any) -> bool:
    """Whether the params' class defines ``seam_peak_bytes`` in its own body: an inherited one does not
    count (a subclass's own knobs, e.g. quantized layers, may change what is allocated)."""
    return "seam_peak_bytes" in vars(type(method_params))


def seam_peak(method_params: Any, shape: SeamShape) -> dict[str, float] | None:
    """The method's temporaries at the peak of one global-attention call (its params' own
    ``seam_peak_bytes``), or None when its params class has no model (:func:`has_model`)."""
    if not has_model(method_params):
        return None
    return {k: float(v) for k, v in method_params.seam_peak_bytes(shape).items()}


def seam_total(terms: dict[str, float]) -> float:
    return float(sum(terms.values()))


def largest(terms: dict[str, float]) -> str:
    """The name of the largest temporary ("-" when there is none)."""
    positive = {k: v for k, v in terms.items() if v > 0}
    return max(positive, key=lambda k: (positive[k], k)) if positive else "-"


# ----------------------------------------------------------------------------- the forward


@dataclass(frozen=True)
class Linears:
    """Parameter counts of the model (from a meta-device build: no memory) and of the layers
    autocast casts (Linear and Conv2d of the aggregator, in execution order)."""

    params: int
    buffers: int
    dino: int  # DINO patch embedding: conv + every block's linears
    block: tuple[int, int, int, int]  # one frame/global block's qkv, proj, fc1, fc2 (weights + biases)


@functools.lru_cache(maxsize=8)
def linears(cfg: VGGTConfig, lean: bool = True) -> Linears:
    """Count ``cfg``'s parameters on the meta device (the harness builds without the track head)."""
    model = build_vggt(cfg, device="meta", lean=lean)
    agg = model.aggregator

    def size(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    dino = sum(size(m) for m in agg.patch_embed.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    blk = agg.frame_blocks[0]
    block = (size(blk.attn.qkv), size(blk.attn.proj), size(blk.mlp.fc1), size(blk.mlp.fc2))
    return Linears(params=size(model), buffers=sum(b.numel() * b.element_size() for b in model.buffers()),
                   dino=dino, block=block)


@dataclass(frozen=True)
class Forward:
    """The forward's sizes. ``U = B * S * P * C``: elements of one token tensor. Element sizes:
    ``w`` weights, ``r`` residual stream and LayerNorm outputs, ``e`` linear / attention outputs,
    ``qk`` q and k at the seam. With ``autocast`` (the gpu preset): w = r = qk = 4, e = 2; without,
    all are ``elem`` (a model run in one dtype, as the CPU tests run it). ``device``: lean mode keeps
    its layer outputs in bf16 on CUDA only. ``weight_cache``: see :attr:`caches_weights`."""

    cfg: VGGTConfig
    frames: int
    height: int
    width: int
    lean: bool = True
    autocast: bool = True
    batch: int = 1
    elem: int = 2
    device: str = "cuda"
    weight_cache: bool = True

    @property
    def tokens(self) -> int:
        return self.batch * self.frames * self.cfg.tokens_per_frame(self.height, self.width)

    @property
    def caches_weights(self) -> bool:
        """Whether autocast keeps bf16 copies of the weights: it caches the casts of parameters that
        require grad only (``weight_cache=False``: a model whose parameters do not, e.g. QuantVGGT's
        copy, casts each weight on every call and caches nothing)."""
        return self.autocast and self.weight_cache

    @property
    def U(self) -> float:
        return float(self.tokens) * self.cfg.embed_dim

    @property
    def e(self) -> int:
        return self.elem

    @property
    def w(self) -> int:
        return FLOAT32 if self.autocast else self.elem

    @property
    def r(self) -> int:
        return FLOAT32 if self.autocast else self.elem

    @property
    def qk(self) -> int:
        return self.r if self.cfg.qk_norm else self.e

    @property
    def hidden(self) -> float:
        """The MLP's width in units of C."""
        return int(self.cfg.embed_dim * self.cfg.mlp_ratio) / self.cfg.embed_dim

    @property
    def lin(self) -> Linears:
        return linears(self.cfg, self.lean)

    def kept(self, layer: int) -> float:
        """Layer outputs ``[B, S, P, 2C]`` kept before global block ``layer`` finishes: lean, only the
        layers the heads read (in bf16 on CUDA); otherwise all, in the residual dtype (official VGGT)."""
        if self.lean:
            need = set(self.cfg.intermediate_layer_idx) | {self.cfg.depth - 1}
            elem = 2 if self.device == "cuda" else self.r
            return sum(1 for i in need if i < layer) * 2 * self.U * elem
        return layer * 2 * self.U * self.r

    def cache(self, layer: int, upto: int) -> float:
        """Autocast's cached bf16 copies of the aggregator's Linear / Conv2d parameters (cleared when
        the forward's autocast region ends): DINO, frame blocks 0..layer, global blocks before
        ``layer`` and the first ``upto`` linears (qkv, proj, fc1, fc2) of global block ``layer``;
        ``layer = depth``: all of them."""
        if not self.caches_weights:
            return 0.0
        lin, depth = self.lin, self.cfg.depth
        blocks = 2 * depth if layer >= depth else 2 * layer + 1
        partial = sum(lin.block[:upto]) if layer < depth else 0
        return float(lin.dino + blocks * sum(lin.block) + partial) * self.e

    def frame_cache(self, layer: int, upto: int) -> float:
        """Autocast's weight cache at frame block ``layer`` (its first ``upto`` linears)."""
        if not self.caches_weights:
            return 0.0
        lin = self.lin
        return float(lin.dino + 2 * layer * sum(lin.block) + sum(lin.block[:upto])) * self.e

    def seam_shape(self, layer: int) -> SeamShape:
        """The global-attention call of ``layer`` in this forward's dtypes."""
        c, p = self.cfg, self.cfg.patch_size
        return SeamShape(frames=self.frames, tokens_per_frame=c.tokens_per_frame(self.height, self.width),
                         patch_h=self.height // p, patch_w=self.width // p, patch_start=c.patch_start_idx,
                         heads=c.num_heads, head_dim=c.head_dim, elem_bytes=self.e, layer=layer,
                         depth=c.depth,
                         batch=self.batch, qk_elem_bytes=self.qk, norm_elem_bytes=self.r,
                         autocast=self.autocast, device=self.device)

    def persistent(self) -> dict[str, float]:
        """What the whole timed forward holds: weights, the input frames, the RoPE positions and the
        two outputs the harness keeps alive (the reference, and the previous timed sample's)."""
        S, H, W = self.batch * self.frames, self.height, self.width
        return {
            "weights": float(self.lin.params) * self.w + self.lin.buffers,
            "input frames (float32)": float(S) * 3 * H * W * FLOAT32,
            "RoPE positions (int64)": float(self.tokens) * 2 * INT64,
            "outputs held by the harness (2 x depth + confidence)": 2.0 * 2 * S * H * W * FLOAT32,
        }

    def at_call(self, layer: int) -> dict[str, float]:
        """What global block ``layer`` holds at its attention call (besides :meth:`persistent`)."""
        U = self.U
        return {
            "autocast weight cache (bf16)": self.cache(layer, 1),
            "kept layer outputs": self.kept(layer),
            "previous layer output": U * self.r,
            "residual stream": U * self.r,
            "normed input": U * self.r,
            "qkv": 3 * U * self.e,
            "q": U * self.qk,
            "k": U * self.qk,
            "attention output": U * self.e,
        }

    def block_moments(self, layer: int, out_elem: int = 0) -> dict[str, float]:
        """The other high-water moments of global block ``layer`` (bytes, persistent terms included);
        ``out_elem``: the attention output's element size (default ``e``). See :func:`stage_peaks`."""
        U, r, e, qk = self.U, self.r, self.e, self.qk
        o = out_elem or e
        around = sum(self.persistent().values()) + self.kept(layer)
        cos_sin = 2 * U / self.cfg.num_heads / 2 * qk
        held = 3 * r + 3 * e + 2 * qk  # previous output, block input, x_norm, qkv, q, k
        rope_k = 3 * r + 3 * e + qk + qk + 2 * qk
        proj = held + max(o + o, o + (e if o != e else 0) + e)
        keep_copy = 2 * e if self.lean and self.device == "cuda" else 0
        frame_call = (sum(self.at_call(layer).values()) - U * r - self.cache(layer, 1)
                      + self.frame_cache(layer, 1))
        return {
            "frame attention (plain SDPA)": around - self.kept(layer) + frame_call
            + seam_total(plain_bytes(self.seam_shape(layer))),
            "qk LayerNorm + RoPE of k": around + self.cache(layer, 1) + rope_k * U + cos_sin,
            "output projection": around + self.cache(layer, 2) + proj * U,
            "MLP": around + self.cache(layer, 3) + self.mlp_around() + 2 * self.hidden * e * U,  # fc1, GELU
            "keep layer output": around + self.cache(layer, 4) + (4 * r + keep_copy) * U,
        }

    def mlp_around(self) -> float:
        """Bytes of a block's tensors alive while its MLP runs, besides the MLP's own: the previous
        layer's output, the block's input, the residual after attention, norm2's output (the MLP's
        input) and the attention branch's output (a local of the block until it returns): ``(4 r + e)
        U``."""
        return (4 * self.r + self.e) * self.U

    def dino(self) -> float:
        """DINO on all frames at once (persistent terms included): its MLP moment (its tokens are
        cls + 4 registers + patches = P, as the aggregator's) while the normalized frames are alive,
        with its own weight cache only."""
        S, H, W = self.batch * self.frames, self.height, self.width
        frames = float(S) * 3 * H * W * FLOAT32
        cache = float(self.lin.dino) * self.e if self.caches_weights else 0.0
        mlp = 3 * self.r + self.e + 2 * self.hidden * self.e  # input, after attention, norm2; proj; fc1, GELU
        held = {k: v for k, v in self.persistent().items()
                if k != "RoPE positions (int64)"}  # made after DINO
        return sum(held.values()) + frames + cache + mlp * self.U

    def heads(self) -> float:
        """The depth head (DPT, float32, frames in chunks; persistent terms included): every kept
        output, the per-chunk depth and confidence maps and their concatenation (2 x 2 maps of S x
        H x W floats), and one chunk's fused features at full resolution (``dpt_features / 2``
        channels) with the next conv's output (a quarter of that)."""
        c = self.cfg
        S, H, W = self.batch * self.frames, self.height, self.width
        maps = 2.0 * 2 * S * H * W * FLOAT32
        chunk = min(c.frames_chunk_size, self.frames) * self.batch
        feats = chunk * (c.dpt_features // 2) * H * W * FLOAT32 * 1.25
        return sum(self.persistent().values()) + self.kept(c.depth) + self.cache(c.depth, 0) + maps + feats


def model_peak_bytes(cfg: VGGTConfig, frames: int, height: int, width: int, *, lean: bool = True,
                     layer: int | None = None, autocast: bool = True, batch: int = 1, elem: int = 2,
                     device: str = "cuda") -> dict[str, float]:
    """The forward's memory outside the method's temporaries at the global-attention call of
    ``layer`` (default: the last, where the most layer outputs are kept), in bytes:

    - ``weights``: every parameter, float32 (the harness loads fp32 and runs autocast bf16);
    - ``autocast weight cache (bf16)``: the bf16 copies autocast keeps of every Linear / Conv2d it
      has cast in this forward (DINO, the frame blocks up to ``layer``, the global blocks before it,
      this block's qkv);
    - ``input frames (float32)``, ``RoPE positions (int64)``, ``outputs held by the harness``: the
      timed call's input, and the reference output and the previous sample's output (depth and
      confidence maps, float32) that the workload and the timer keep alive;
    - ``kept layer outputs``: lean (VGGT*), the finished layers the heads read (4, 11, 17, 23), bf16;
      non-lean (the official VGGT), every finished layer in float32;
    - ``previous layer output`` (the frame block's input, which the aggregator still holds),
      ``residual stream`` (the global block's input, float32), ``normed input`` (x_norm, float32),
      ``qkv`` (bf16; alive while v, a view of it, is), ``q``, ``k`` (float32 after the qk LayerNorm
      and RoPE) and the ``attention output`` (bf16).

    Without ``autocast`` every activation and weight has ``elem`` bytes (the CPU tests' float32).
    """
    fw = Forward(cfg, frames, height, width, lean, autocast, batch, elem, device)
    return fw.persistent() | fw.at_call(cfg.depth - 1 if layer is None else layer)


def stage_peaks(cfg: VGGTConfig, frames: int, height: int, width: int, *, lean: bool = True,
                autocast: bool = True, batch: int = 1, elem: int = 2, device: str = "cuda",
                weight_cache: bool = True) -> dict[str, float]:
    """The forward's other high-water moments (bytes, persistent terms included), each at the layer
    where it is largest (the last: the most kept outputs and cached weights). Activations, in units
    of one token tensor ``U`` times an element size:

    - ``frame attention (plain SDPA)``: frame block ``layer``'s attention call (frame blocks always
      run plain SDPA, so no method's peak is below it): the global call's terms but one residual
      (the frame block's input is the previous output);
    - ``qk LayerNorm + RoPE of k``: the previous output, residual, x_norm, qkv, the rotated q and
      the normed k, plus RoPE's temporaries on k (the rotated half and x*cos, rotate_half(x), its
      product with sin: 2U in q's dtype) and its cos / sin lookups;
    - ``output projection``: the attention output and its transposed copy, then the copy, its bf16
      cast for ``proj`` (when the output is float32) and proj's output, with the previous output,
      residual, x_norm, qkv, q and k still alive (the larger of the two moments);
    - ``MLP``: the previous output, the block's input, the residual after attention, the attention
      branch's output (a local of the block until it returns), norm2's output, fc1's output (4C
      wide) and GELU's output;
    - ``keep layer output``: the block's input and output and their concatenation (2C wide), in
      lean mode on CUDA also its bf16 copy;
    - ``DINO patch embedding`` and ``heads``: :meth:`Forward.dino`, :meth:`Forward.heads`.

    A frame block's other moments are its global block's minus one residual. The global-attention
    call itself is :func:`model_peak_bytes` plus the method's terms. ``weight_cache``:
    :attr:`Forward.caches_weights`."""
    fw = Forward(cfg, frames, height, width, lean, autocast, batch, elem, device, weight_cache)
    out = fw.block_moments(cfg.depth - 1)
    out["DINO patch embedding"] = fw.dino()
    out["heads"] = fw.heads()
    return out


# ----------------------------------------------------------------------------- the wall


def memory_wall(methods: dict[str, Any], frames: Sequence[int], cfg: VGGTConfig, height: int, width: int,
                lean: bool = True, budget_gb: float = BUDGET_GB) -> pd.DataFrame:
    """Peak GPU memory per method (rows: label -> method params instance) and frame count.

    Columns: method, frames, tokens (N = S * P), model_gb (the forward outside the method at the
    global-attention call of the peak layer, :func:`model_peak_bytes`, with what the method's model
    changes hold), model_extra_gb (those held terms alone, :func:`model_extra`), seam_gb (the
    method's temporaries at that call, :func:`seam_peak`), largest and largest_gb (its largest
    temporary; at a moment of the method's own, :attr:`ModelExtra.moments`, that moment's), peak_gb
    (the largest of model + seam, the forward's other moments, :func:`stage_peaks`, and the method's
    own moments), peak_at (which moment), fits (peak_gb <= budget_gb). A method without a model has
    NaN numbers, ``largest`` = :data:`NOT_MODELLED` and fits = None. Units: decimal GB.
    """
    rows = []
    for S in frames:
        stages = stage_peaks(cfg, S, height, width, lean=lean)
        for label, params in methods.items():
            rows.append(_wall_row(label, params, cfg, S, height, width, lean, stages, budget_gb))
    return pd.DataFrame(rows, columns=["method", "frames", "tokens", "model_gb", "model_extra_gb", "seam_gb",
                                       "largest", "largest_gb", "peak_gb", "peak_at", "fits"])


def _wall_row(label: str, params: Any, cfg: VGGTConfig, S: int, height: int, width: int, lean: bool,
              stages: dict[str, float], budget_gb: float) -> dict[str, Any]:
    tokens = S * cfg.tokens_per_frame(height, width)
    row: dict[str, Any] = {"method": label, "frames": S, "tokens": tokens}
    if not has_model(params):
        return row | {"model_gb": math.nan, "model_extra_gb": math.nan, "seam_gb": math.nan,
                      "largest": NOT_MODELLED, "largest_gb": math.nan, "peak_gb": math.nan, "peak_at": "",
                      "fits": None}
    extra = model_extra(params, Forward(cfg, S, height, width, lean))
    fw = Forward(cfg, S, height, width, lean, weight_cache=extra.weight_cache)
    held = sum(extra.held.values())
    if not extra.weight_cache:
        stages = stage_peaks(cfg, S, height, width, lean=lean, weight_cache=False)
    base = sum(fw.persistent().values()) + held
    best: tuple[float, str, float, dict[str, float]] | None = None
    for layer in range(cfg.depth):
        model = base + sum(fw.at_call(layer).values())
        terms = seam_peak(params, SeamShape.gpu(cfg, S, height, width, layer)) or {}
        total = model + seam_total(terms)
        if best is None or total > best[0]:
            best = (total, f"global attention, layer {layer}", model, terms)
        if terms.get(WIDE_OUTPUT):  # a float32 output also widens the projection's copy
            proj = fw.block_moments(layer, out_elem=FLOAT32)["output projection"] + held
            if proj > best[0]:
                best = (proj, f"output projection, layer {layer}", model, terms)
    assert best is not None
    peak, at, model, terms = best
    shown = terms
    for name, nbytes in stages.items():
        if nbytes + held > peak:
            peak, at = nbytes + held, name
    for name, moment in extra.moments.items():
        total = base + moment.forward + seam_total(moment.terms)
        if total > peak:
            peak, at, shown = total, name, moment.terms
    name = largest(shown)
    return row | {"model_gb": model / GB, "model_extra_gb": held / GB, "seam_gb": seam_total(terms) / GB,
                  "largest": name, "largest_gb": shown.get(name, 0.0) / GB, "peak_gb": peak / GB,
                  "peak_at": at, "fits": bool(peak / GB <= budget_gb)}


# ----------------------------------------------------------------------------- the methods


@dataclass(frozen=True)
class DenseSimilarity:
    """A variant row of the wall: FastVGGT with its src x dst cosine similarity materialized in one
    float32 matrix (what upstream FastVGGT's matching does in one matmul, and what the harness's
    torch path of :func:`harness.methods.merging.best_match` would do without its chunking), instead
    of the harness's fused Triton kernel. Same partition and merge as ``base`` otherwise."""

    base: Any

    def seam_peak_bytes(self, shape: SeamShape) -> dict[str, float]:
        return self.base.seam_peak_bytes(shape, dense_similarity=True)


KNOB_VARIANTS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "litevggt": (("litevggt (lv_fp8)", {"lv_fp8": True}),),
}
"""Variant rows of the wall: method -> (label, knobs changed from its row's settings): a run
configuration the gpu preset does not sweep whose memory differs (LiteVGGT's FP8 model copy)."""


def gpu_methods(names: Sequence[str] | None = None, suite: str = SUITE,
                preset: str = SUITE_PRESET) -> dict[str, Any]:
    """Row label -> method params: each method of ``suite``'s ``preset`` with its settings there,
    then every other registered ``vggt`` method (or just ``names``) with its defaults, and after
    them their variants: ``fastvggt (dense similarity)`` after FastVGGT, :data:`KNOB_VARIANTS`."""
    registry.load_builtins()
    from_suite: dict[str, Any] = {}
    for point in load_suite(suite, preset=preset).points():
        from_suite.setdefault(point.method, point.method_params)
    wanted = list(names) if names else list(from_suite) + [m for m in registry.method_names("vggt")
                                                           if m not in from_suite]
    out: dict[str, Any] = {}
    for name in wanted:
        params = from_suite.get(name)
        if params is None:
            params = registry.get_method("vggt", name).params()
        out[name] = params
        if name == "fastvggt":
            out["fastvggt (dense similarity)"] = DenseSimilarity(params)
        for label, knobs in KNOB_VARIANTS.get(name, ()):
            if any(getattr(params, k) != v for k, v in knobs.items()):
                out[label] = replace(params, **knobs)
    return out


def wall_records(frames: Sequence[int] = FRAMES, names: Sequence[str] | None = None, preset: str = "vggt-1b",
                 lean: bool = True, budget_gb: float = BUDGET_GB) -> list[dict[str, Any]]:
    """The wall of :func:`gpu_methods` at ``frames`` as JSON-ready records (what the page is built from)."""
    df = memory_wall(gpu_methods(names), frames, get_preset(preset), HEIGHT, WIDTH, lean, budget_gb)
    records = df.to_dict(orient="records")
    for rec in records:
        for k, v in rec.items():
            if isinstance(v, float) and math.isnan(v):
                rec[k] = None
    return records


def wall_data(frames: Sequence[int] = FRAMES, names: Sequence[str] | None = None, preset: str = "vggt-1b",
              lean: bool = True, budget_gb: float = BUDGET_GB) -> dict[str, Any]:
    """What ``--json`` prints: the settings and :func:`wall_records`."""
    return {"height": HEIGHT, "width": WIDTH, "budget_gb": budget_gb, "preset": preset, "lean": lean,
            "rows": wall_records(frames, names, preset, lean, budget_gb)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.metrics.memory_model``: print the wall (a table, or ``--json`` records)."""
    ap = argparse.ArgumentParser(prog="python -m harness.metrics.memory_model",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=list(FRAMES))
    ap.add_argument("--method", action="append", help="a registered vggt method (default: all)")
    ap.add_argument("--preset", default="vggt-1b", help="model shape (default vggt-1b)")
    ap.add_argument("--official", action="store_true",
                    help="non-lean: keep every layer output (official VGGT)")
    ap.add_argument("--budget-gb", type=float, default=BUDGET_GB)
    ap.add_argument("--json", action="store_true", help="JSON records instead of a table")
    args = ap.parse_args(argv)
    data = wall_data(args.frames, args.method, args.preset, not args.official, args.budget_gb)
    if args.json:
        json.dump(data, sys.stdout, indent=1)
        print()
    else:
        print(pd.DataFrame(data["rows"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
