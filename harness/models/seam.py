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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from harness.measure import markers


def ranges_on() -> bool:
    """Whether named ranges are recorded: during a profiled pass, or with NVTX marks on."""
    return markers.profiling_on() or markers.enabled()


@contextmanager
def named_range(name: str) -> Iterator[None]:
    """A ``torch.profiler.record_function`` range named ``name`` during a profiled pass (it then
    shows in traces and op tables) and an NVTX range of that name with ``--nvtx``
    (:mod:`harness.measure.markers`); nothing otherwise, so timed samples pay no profiler cost."""
    if not ranges_on():
        yield
        return
    with markers.mark(name):
        if markers.profiling_on():
            with torch.profiler.record_function(name):
                yield
        else:
            yield


def name_modules(named: Iterable[tuple[str, torch.nn.Module]]) -> None:
    """Named ranges (:func:`named_range`) around the forwards of modules whose code the harness does
    not own (e.g. timm's Swin stages), through forward hooks that do nothing outside a profiled
    pass or ``--nvtx``."""
    for name, module in named:
        open_ranges: list = []

        def enter(_module, _args, name=name, open_ranges=open_ranges) -> None:
            if ranges_on():
                cm = named_range(name)
                cm.__enter__()
                open_ranges.append(cm)

        def leave(_module, _args, _out, open_ranges=open_ranges) -> None:
            if open_ranges:
                open_ranges.pop().__exit__(None, None, None)

        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave, always_call=True)


class PhaseTimes(dict):
    """What a breakdown pass returns: ``{phase: ms}``, plus ``peak_mb`` (``{phase: MiB}``, the
    CUDA allocator's peak inside each phase; empty on CPU) and ``counters`` (the work counters of
    the same pass, scaled like the times, so that work / time is a rate)."""

    def __init__(self, ms: dict[str, float], peak_mb: dict[str, float] | None = None,
                 counters: dict[str, float] | None = None) -> None:
        super().__init__(ms)
        self.peak_mb = dict(peak_mb or {})
        self.counters = dict(counters or {})


class Recorder:
    """Collects per-layer counters and (in breakdown mode) per-phase times from methods.

    ``count(name, value)`` sums a counter (e.g. ``tokens_q``) over the layers of one
    forward. ``phase(name)`` times a region in milliseconds when ``timed`` is set; it
    synchronizes the device before and after, so only use it in breakdown runs (never
    in the timed region of a normal measurement); on CUDA it also records the allocator's
    peak inside the phase (``peak_mb``). Methods call both unconditionally;
    with ``timed=False`` a phase costs one Python context manager.
    """

    def __init__(self, timed: bool = False, device: torch.device | str | None = None) -> None:
        self.timed = timed
        self.device = torch.device(device) if device is not None else None
        self.counters: dict[str, float] = defaultdict(float)
        self.phases_ms: dict[str, float] = defaultdict(float)
        self.peak_mb: dict[str, float] = {}
        self.values: dict[str, list[float]] = defaultdict(list)

    def breakdown(self, scale: float = 1.0) -> PhaseTimes:
        """The phase times, peaks and counters of this (timed) recorder; ``scale`` multiplies the
        times and counters alike (e.g. ``1 / layers`` for a per-layer breakdown)."""
        return PhaseTimes({k: v * scale for k, v in self.phases_ms.items()}, self.peak_mb,
                          {k: v * scale for k, v in self.counters.items()})

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
        cuda = self.device is not None and self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.phases_ms[name] += (time.perf_counter() - t0) * 1e3
            if cuda:
                peak = torch.cuda.max_memory_allocated(self.device) / 2**20
                self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), peak)


@dataclass(frozen=True, eq=False)
class AttentionLayout:
    """Where the tokens of a global-attention call come from.

    frames: S; tokens_per_frame: P (= patch_start + patch_h * patch_w);
    patch_h, patch_w: the patch grid of every frame; patch_start: index of the first
    patch token inside a frame (5 in VGGT: 1 camera + 4 register tokens);
    layer: index of the global block (0-based); x_norm: the layer's normed input
    ``[B, N, C]`` for methods that match on hidden states (FastVGGT), else None;
    recorder: counters / breakdown sink, or None; depth: the model's number of global blocks
    (for layer schedules; 0 where unknown, e.g. the attention micro-workload).
    """

    frames: int
    tokens_per_frame: int
    patch_h: int
    patch_w: int
    patch_start: int
    layer: int = 0
    x_norm: torch.Tensor | None = None
    recorder: Recorder | None = None
    depth: int = 0

    @property
    def num_tokens(self) -> int:
        """N = S * P."""
        return self.frames * self.tokens_per_frame


class AttentionFn(Protocol):
    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout
    ) -> torch.Tensor:  # pragma: no cover - protocol
        ...


#: ``probe(fn)`` runs one forward of the model on the calibration frames with ``fn`` at the seam
Probe = Callable[[AttentionFn], None]
#: ``run(model)`` runs one forward of ``model`` on the calibration frames (plain attention)
CalibrationRun = Callable[[torch.nn.Module], None]


@dataclass(frozen=True)
class GradCalibration:
    """One forward with gradients on a calibration scene (what a :class:`GradProbe` returns).

    losses: name -> scalar tensor attached to the graph: ``"camera"`` (the camera-position error
        ``e_cam``) and ``"points"`` (the inlier point-cloud error ``e_pc``), both against the scene's
        ground truth after a stop-gradient Sim(3) alignment (:mod:`harness.metrics.aligned_errors`);
    qkv: global layer -> that layer's fused qkv weight ``[3C, C]``, the only parameters that require
        grad during the probe (rows: the queries of heads 0..H-1, ``d = C / H`` rows each, then the
        keys, then the values), for ``torch.autograd.grad``;
    heads: H; stats: scalars about the calibration (``inlier_frac``).
    """

    losses: dict[str, torch.Tensor]
    qkv: dict[int, torch.Tensor]
    heads: int
    stats: dict[str, float]


class GradProbe(Protocol):
    """``probe(fn, frames=None, scene=0)``: one forward of the model, with gradients, on calibration
    scene ``scene`` (``frames`` frames; None: the point's), with ``fn`` at every global seam, and the
    ground-truth errors of its camera and depth predictions."""

    def __call__(self, fn: AttentionFn, frames: int | None = None,
                 scene: int = 0) -> GradCalibration:  # pragma: no cover - protocol
        ...


@dataclass(frozen=True)
class VGGTMethod:
    """What a ``vggt`` method's build function returns when it needs more than an ``attention_fn``
    (a bare ``attention_fn`` stays the common case).

    attention_fn: applied at every global-attention seam of the timed forward (default: plain).
    calibrate(probe): optional; run once per point, before timing and outside it (its wall time
        is the ``setup_calib_s`` column). The method calls ``probe(fn)`` as often as it needs;
        each call runs one forward of the model on the calibration frames (a synthetic scene of
        the point's size that the point never evaluates on) with ``fn`` at the seam, so ``fn``
        sees every global layer's real q, k, v and layout and must return what an
        ``attention_fn`` returns. What it learns is kept in the method's own closure.
    model_transform(model, run): optional; returns a changed copy of the model (it must not
        modify ``model``, which other points share); ``run(m)`` runs one forward of ``m`` on the
        calibration frames, e.g. to collect activation ranges through forward hooks. The copy is
        what the point times and evaluates; the reference is the unchanged model. Scope
        ``model`` only: the attention scope times the attention core, which no linear layer
        touches.
    calibrate_grad(probe): optional, like ``calibrate`` but each ``probe(fn, frames, scene)`` runs
        the forward with gradients and returns a :class:`GradCalibration` (losses against the
        calibration scene's ground truth and the qkv weights to differentiate them by), for
        gradient-based sensitivities such as HeSS's Fisher trace. Also untimed, also counted in the
        calibration columns.
    work_counters(model, frames, tokens_per_frame): optional; extra work counters of one forward
        of the (transformed) model, e.g. ``{"bops": ..., "bops_fp": ...}``; each becomes a
        ``work_<name>`` column of the point.
    """

    attention_fn: AttentionFn | None = None
    calibrate: Callable[[Probe], None] | None = None
    calibrate_grad: Callable[[GradProbe], None] | None = None
    model_transform: Callable[[torch.nn.Module, CalibrationRun], torch.nn.Module] | None = None
    work_counters: Callable[[torch.nn.Module, int, int], dict[str, float]] | None = None


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
        rec.count("attn_bytes", attention_bytes(q, n_q, n_k))
        with rec.phase("attention"), (named_range("phase:attention") if ranges_on() else nullcontext()):
            return F.scaled_dot_product_attention(q, k, v)
    if ranges_on():  # profiles and NVTX read plain attention in the methods' vocabulary
        with named_range("phase:attention"):
            return F.scaled_dot_product_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def attention_flops(batch: int, heads: int, n_q: int, n_k: int, head_dim: int) -> float:
    """FLOPs of the two attention matmuls (q k^T and p v), 2 FLOPs per multiply-add."""
    return 2.0 * 2.0 * batch * heads * n_q * n_k * head_dim


def token_bytes(rows: int, tokens: int, width: int, bytes_per_elem: int) -> float:
    """Bytes of ``rows x tokens`` vectors of ``width`` elements of ``bytes_per_elem`` each (the
    unit of the bytes model in :mod:`harness.measure.efficiency`)."""
    return float(rows) * tokens * width * bytes_per_elem


def attention_bytes(q: torch.Tensor, n_q: int, n_k: int) -> float:
    """Minimum traffic of one attention call on q [B, H, *, d]: read ``n_q`` queries, ``n_k``
    keys and ``n_k`` values, write ``n_q`` outputs (what a fused kernel moves), per head."""
    B, H, _, d = q.shape
    return token_bytes(B * H, 2 * n_q + 2 * n_k, d, elem_bytes(q))


def elem_bytes(x: torch.Tensor) -> int:
    """Bytes per element ``x``'s floating-point ops compute in: autocast's dtype when autocast is
    on for its device (a float32 tensor then travels as bfloat16 / float16), else its own."""
    kind = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind).itemsize
    return x.element_size()


def check_tokens(method: str, q: torch.Tensor, layout: AttentionLayout) -> None:
    """Raise a clear error when the layout's S x P tokens are not q's N ([B, H, N, d])."""
    if layout.num_tokens != q.shape[2]:
        raise ValueError(f"{method}: layout has {layout.num_tokens} tokens but q has N={q.shape[2]}")
