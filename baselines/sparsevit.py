"""SparseViT-style window pruning on a uniform W{w_bits}A{a_bits} Swin (the pruning baseline MixA-Q is
compared against at equal BOPs).

Pruned windows skip their block pair entirely; the kept ones run in the high-bit branch of
MixA-Q's two-branch block, so this is MixA-Q's machinery with every kept window high
(:func:`harness.methods.mixaq.all_high`). With ``target_bops_speedup`` the per-pair prune ratios
are solved so that the pruned model's BOPs speedup over uniform W{w}A{a} matches a MixA-Q point's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.methods.mixaq import (
    BITS_HELP,
    BITS_RANGE,
    act_calib_param,
    all_high,
    apply,
    check_ptq,
    check_qat,
    embed_bits_param,
    make_transform,
    ptq_param,
    qat_param,
    softmax_quant_param,
)
from harness.metrics import work as W
from harness.params import param
from harness.quant.qswin import IMPORTANCE_MODES, expand_pairs, pairs_per_stage, window_counts
from harness.registry import register_method

#: relative BOPs error within which the most uniform prune-ratio solution wins
PAIRING_REL_TOL = 0.005


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
    ptq: str = ptq_param()
    act_calib: str = act_calib_param()
    softmax_quant: str = softmax_quant_param()
    embed_bits: int = embed_bits_param()
    qat: str = qat_param()

    def __post_init__(self) -> None:
        check_ptq(self.ptq, self.act_calib, self.softmax_quant)  # refused at suite load, with file and line
        check_qat(self.qat, self.ptq, self.softmax_quant)


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
        ptq=params.ptq,
        qat=params.qat,
    )
    return apply(model, mix, calib_images, seed)


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


@register_method("sparsevit", params=SparseViTParams, workloads=("swin", "swin-det"),
                 doc="SparseViT-style window pruning on the uniform W{w_bits}A{a_bits} base")
def make_sparsevit(params: SparseViTParams) -> Any:
    """MethodSpec.build for ``sparsevit``."""
    return make_transform(apply_sparsevit, params)
