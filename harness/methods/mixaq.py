"""MixA-Q: mixed-precision activation quantization of Swin windows (Wang et al., ICCV 2025).

The model transform (the quantization seam) is ``apply(model, params, calib_images, seed=0)
-> quantized copy``; the float model is left untouched (it is the fidelity reference).

Algorithm (per stage, per image; see ``harness.quant.qswin`` for the mechanics):

1. importance: L2 norm per window of the per-token mean |x| of the stage input (after patch
   merging), once per stage; a second ordering for shifted blocks (map rolled by -M/2 then
   padded). ``importance="random"`` / ``"reversed"`` replace it by a seeded permutation / the
   reversed order (the paper's worst case);
2. per block pair, a ratio r of each image's windows (the least important) goes to the low
   branch (``a_bits_low``), the rest to the high branch (``a_bits_high``); with ``prune_ratio``
   p > 0 the p least important windows skip the block (SparseViT-style, identity);
3. the two-branch block: windows gathered per branch, a LayerNorm copy per branch, shared
   (fake-quantized) weights, per-branch activation quantizers calibrated ``routed`` (on the
   windows routed to the branch) or ``whole`` (on the whole tensor at that bit width).

``sparsevit`` is the pruning-only baseline on the uniform ``a_bits`` base (window pruning as
in SparseViT, not its latency-constrained search): compare it with MixA-Q at equal BOPs. With
``target_bops_speedup`` > 0 its per-pair prune ratios are solved from the analytic BOPs
(:func:`prune_ratios_for_speedup`) so that its BOPs speedup over uniform W{w}A{a} matches the
target as closely as the window counts allow: give it the ``work_bops_speedup`` of the MixA-Q
point to compare with. A prune ratio p keeps floor(nW(1-p)) windows, but never fewer than
``min_active_windows`` (default 1): at 224 px stage 4 has a single window, which any p > 0
would otherwise prune, turning the whole last stage into the identity.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.metrics import work as W
from harness.params import param
from harness.quant.qswin import (
    CALIB_MODES,
    IMPORTANCE_MODES,
    SOFTMAX_QUANT,
    QuantSpec,
    RoutingSpec,
    expand_pairs,
    pairs_per_stage,
    quantize_swin,
    window_counts,
)
from harness.quant.quantizers import ACT_CALIB_METHODS, FLOAT_BITS

BITS_RANGE = (2, FLOAT_BITS)
"""Allowed bit widths of every Swin quantization knob (mixaq, sparsevit, uniform)."""
BITS_HELP = f" ({FLOAT_BITS}: float, no quantization)"
"""Suffix of the help text of every bits knob."""


def act_calib_param() -> Any:
    """The ``act_calib`` knob of every Swin quantization method."""
    return param("percentile", "activation range: minmax, or percentile (MSE-best clipping)",
                 choices=ACT_CALIB_METHODS)


def softmax_quant_param() -> Any:
    """The ``softmax_quant`` knob of every Swin quantization method."""
    return param("uniform", "attention-probability quantizer: uniform or log2", choices=SOFTMAX_QUANT)


def embed_bits_param() -> Any:
    """The ``embed_bits`` knob of every Swin quantization method."""
    return param(8, "bits of patch embedding, patch merging and head (W and A)" + BITS_HELP, range=BITS_RANGE)


PAIRING_REL_TOL = 0.005
"""Relative BOPs error within which :func:`prune_ratios_for_speedup` prefers uniform prune ratios."""


@dataclass(frozen=True)
class MixAQParams:
    """MixA-Q knobs (names are what suites sweep)."""

    w_bits: int = param(4, "weight bits, both branches, per-channel symmetric" + BITS_HELP, range=BITS_RANGE)
    a_bits_high: int = param(
        8, "activation bits of the high-importance branch" + BITS_HELP, range=BITS_RANGE
    )
    a_bits_low: int = param(
        4, "activation bits of the low-importance branch (<= a_bits_high)", range=BITS_RANGE
    )
    ratio: float = param(
        0.0, "fraction of each image's windows sent to the low branch, every block pair", range=(0.0, 1.0)
    )
    pair_ratios: tuple[float, ...] = param(
        (),
        "one low ratio per block pair in model order (Swin-T: 6), sorted ascending within a stage; "
        "empty: `ratio` everywhere",
    )
    importance: str = param(
        "l2", "window importance: l2 (per-stage L2 of mean |x|), random, reversed", choices=IMPORTANCE_MODES
    )
    calib: str = param(
        "routed",
        "branch calibration: routed (windows routed to the branch) or whole "
        "(whole tensor at the branch's bits)",
        choices=CALIB_MODES,
    )
    prune_ratio: float = param(
        0.0, "fraction of windows pruned (skip the block), every block pair", range=(0.0, 1.0)
    )
    pair_prune_ratios: tuple[float, ...] = param((), "one prune ratio per block pair; empty: `prune_ratio`")
    min_active_windows: int = param(
        1, "windows a block keeps whatever the prune ratio (1: a single-window stage is never pruned; "
        "0: plain floor(nW(1-p)))", range=(0, 1_000_000),
    )
    act_calib: str = act_calib_param()
    softmax_quant: str = softmax_quant_param()
    embed_bits: int = embed_bits_param()

    def __post_init__(self) -> None:
        # cross-field: a suite setting this is refused at load, with file and line
        if self.a_bits_low > self.a_bits_high:
            raise ValueError(f"a_bits_low={self.a_bits_low} must not exceed a_bits_high={self.a_bits_high}")


@dataclass(frozen=True)
class SparseViTParams:
    """Window pruning on the uniform W{w_bits}A{a_bits} base (SparseViT-style baseline)."""

    w_bits: int = param(4, "weight bits" + BITS_HELP, range=BITS_RANGE)
    a_bits: int = param(8, "activation bits of every kept window" + BITS_HELP, range=BITS_RANGE)
    prune_ratio: float = param(
        0.0, "fraction of each image's windows pruned, every block pair", range=(0.0, 1.0)
    )
    pair_prune_ratios: tuple[float, ...] = param((), "one prune ratio per block pair; empty: `prune_ratio`")
    target_bops_speedup: float = param(
        0.0, "> 0: solve the per-pair prune ratios for this BOPs speedup over uniform W{w_bits}A{a_bits} "
        "(overrides prune_ratio / pair_prune_ratios; e.g. a MixA-Q point's work_bops_speedup)",
        range=(0.0, 1000.0),
    )
    min_active_windows: int = param(
        1, "windows a block keeps whatever the prune ratio (1: a single-window stage is never pruned; "
        "0: plain floor(nW(1-p)))", range=(0, 1_000_000),
    )
    importance: str = param(
        "l2", "which windows are kept: l2 (most important), random, reversed", choices=IMPORTANCE_MODES
    )
    act_calib: str = act_calib_param()
    softmax_quant: str = softmax_quant_param()
    embed_bits: int = embed_bits_param()


def as_ratios(value: Any, name: str) -> tuple[float, ...]:
    """A per-pair tuple from a tuple, list or comma-separated string ("" / () -> ())."""
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}={value!r}: expected a list of numbers, one per block pair") from e


def per_pair(model: nn.Module, values: Any, default: float, name: str) -> tuple[float, ...]:
    """Per-pair values for ``model``: ``values`` when given (checked against the pair count), else
    ``default`` for every pair."""
    per_stage = pairs_per_stage([len(s.blocks) for s in model.layers])
    n_pairs = sum(per_stage)
    vals = as_ratios(values, name)
    if not vals:
        return (float(default),) * n_pairs
    if len(vals) != n_pairs:
        raise ValueError(f"{name} has {len(vals)} values; this model has {n_pairs} block pairs {per_stage}")
    return vals


def apply(
    model: nn.Module,
    params: MixAQParams,
    calib_images: torch.Tensor | None,
    seed: int = 0,
    *,
    ref_a_bits: int | None = None,
) -> nn.Module:
    """A MixA-Q quantized copy of a timm Swin. calib_images: [N, 3, H, W] on the model's device.
    ref_a_bits: activation bits of the uniform model BOPs speedup is measured against (default
    ``a_bits_high``)."""
    spec = QuantSpec(
        w_bits=params.w_bits,
        a_bits_high=params.a_bits_high,
        a_bits_low=params.a_bits_low,
        embed_bits=params.embed_bits,
        softmax_quant=params.softmax_quant,
        act_calib=params.act_calib,
        calib=params.calib,
    )
    routing = RoutingSpec(
        pair_ratios=per_pair(model, params.pair_ratios, params.ratio, "pair_ratios"),
        pair_prune=per_pair(model, params.pair_prune_ratios, params.prune_ratio, "pair_prune_ratios"),
        importance=params.importance,
        seed=seed,
        min_active=params.min_active_windows,
    )
    return quantize_swin(model, spec, routing, calib_images, ref_a_bits=ref_a_bits)


def apply_sparsevit(
    model: nn.Module, params: SparseViTParams, calib_images: torch.Tensor | None, seed: int = 0
) -> nn.Module:
    """Window pruning on a uniform W{w}A{a} quantized copy (every kept window high)."""
    pair_prune = params.pair_prune_ratios
    if params.target_bops_speedup > 0:
        pair_prune = prune_ratios_for_speedup(
            W.SwinGeometry.from_model(model), [len(st.blocks) for st in model.layers],
            params.target_bops_speedup, params.w_bits, params.a_bits, params.embed_bits,
            min_active=params.min_active_windows,
        )
    mix = all_high(
        params.w_bits, params.a_bits, params.embed_bits, params.act_calib, params.softmax_quant,
        importance=params.importance,
        prune_ratio=params.prune_ratio,
        pair_prune_ratios=pair_prune,
        min_active_windows=params.min_active_windows,
    )
    return apply(model, mix, calib_images, seed)


def all_high(
    w_bits: int, a_bits: int, embed_bits: int, act_calib: str, softmax_quant: str, **pruning: Any
) -> MixAQParams:
    """Uniform W{w_bits}A{a_bits} as MixA-Q: every (kept) window in the high branch, both branches at
    ``a_bits``, calibrated on the whole tensor. ``pruning``: further MixAQParams fields (sparsevit)."""
    return MixAQParams(
        w_bits=w_bits,
        a_bits_high=a_bits,
        a_bits_low=a_bits,
        ratio=0.0,
        calib="whole",
        act_calib=act_calib,
        softmax_quant=softmax_quant,
        embed_bits=embed_bits,
        **pruning,
    )


def pruned_bops(
    geom: W.SwinGeometry,
    depths: list[int],
    pair_prune: tuple[float, ...],
    w_bits: int,
    a_bits: int,
    embed_bits: int,
    act_act_convention: str = "linear",
    min_active: int = 1,
) -> float:
    """BOPs per image of uniform W{w}A{a} with the given per-pair prune ratios. A block's BOPs
    scale with its active windows (windows of equal cost; with padded windows this is the mean)."""
    full = [W.block_bops(blk, a_bits, w_bits, act_act_convention) for blk in geom.blocks]
    return _pruned_bops(geom, depths, pair_prune, full, geom.other_macs * embed_bits * embed_bits, min_active)


def _pruned_bops(
    geom: W.SwinGeometry, depths: list[int], pair_prune: tuple[float, ...], full: list[float], fixed: float,
    min_active: int,
) -> float:
    prunes = [p for stage in expand_pairs(pair_prune, depths) for p in stage]
    total = fixed
    for blk, p, f in zip(geom.blocks, prunes, full):
        n_active = blk.n_windows - window_counts(blk.n_windows, 0.0, p, min_active)[2]
        total += f * n_active / blk.n_windows
    return total


def prune_ratios_for_speedup(
    geom: W.SwinGeometry,
    depths: list[int],
    target_speedup: float,
    w_bits: int,
    a_bits: int,
    embed_bits: int,
    act_act_convention: str = "linear",
    min_active: int = 1,
) -> tuple[float, ...]:
    """Per-pair prune ratios whose BOPs speedup over uniform W{w}A{a} is closest to ``target_speedup``.

    Search: one prune fraction k/n0 for every pair (n0: windows of stage 1, the finest grid),
    then the stage-1 pairs re-tuned to j/n0 to absorb the remainder (each stage-1 window is a
    small BOPs step). Among the solutions within ``PAIRING_REL_TOL`` of the target BOPs the most
    uniform one (j closest to k) wins; when none is that close, the closest. Window counts are
    floors, so the match is exact only up to one stage-1 window of one block pair.
    """
    full = [W.block_bops(blk, a_bits, w_bits, act_act_convention) for blk in geom.blocks]
    fixed = geom.other_macs * embed_bits * embed_bits
    target = (fixed + sum(full)) / target_speedup
    per_stage = pairs_per_stage(depths)
    n0 = geom.blocks[0].n_windows
    cands = []
    for k in range(n0 + 1):
        for j in range(n0 + 1):
            ratios = (j / n0,) * per_stage[0] + (k / n0,) * sum(per_stage[1:])
            err = abs(_pruned_bops(geom, depths, ratios, full, fixed, min_active) - target) / target
            cands.append((err, abs(j - k), ratios))
    close = [c for c in cands if c[0] <= PAIRING_REL_TOL]
    if close:
        return min(close, key=lambda c: (c[1], c[0]))[2]
    return min(cands, key=lambda c: (c[0], c[1]))[2]


def make_transform(fn: Any, params: Any) -> Any:
    """The transform ``(model, calib_images, seed=0) -> quantized copy`` of ``fn(model, params,
    calib_images, seed)``: what MethodSpec.build returns for mixaq, sparsevit and uniform."""
    return functools.partial(_transform, fn, params)


def make_mixaq(params: MixAQParams) -> Any:
    """MethodSpec.build for ``mixaq``."""
    return make_transform(apply, params)


def make_sparsevit(params: SparseViTParams) -> Any:
    """MethodSpec.build for ``sparsevit``."""
    return make_transform(apply_sparsevit, params)


def _transform(fn: Any, params: Any, model: nn.Module, calib_images: torch.Tensor | None, seed: int = 0):
    return fn(model, params, calib_images, seed)
