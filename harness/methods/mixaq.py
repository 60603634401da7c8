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

PTQ base (``ptq``): ``percentile`` is per-tensor activation quantization calibrated by
``act_calib`` with the ``softmax_quant`` quantizer; ``repq`` is the base the paper used,
RepQ-ViT (:mod:`harness.quant.repq`): post-LayerNorm activations calibrated per channel and
folded into the LayerNorm and the next linear (per branch: each branch folds its own LayerNorm
copy and gets its own folded qkv / fc1, since the fold depends on the branch's bit width and
calibration data), log-sqrt2 softmax quantizer with a searched max, and RepQ-ViT's range search
(percentiles 0.999 / 0.9999 / 0.99999, least squared error) for every uniform activation.

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

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.models.weights import check_weights
from harness.params import param
from harness.quant.qat import quantize_from_qat
from harness.quant.qswin import (
    CALIB_MODES,
    IMPORTANCE_MODES,
    SOFTMAX_QUANT,
    QuantSpec,
    RoutingSpec,
    pairs_per_stage,
    quantize_swin,
)
from harness.quant.quantizers import FLOAT_BITS
from harness.registry import register_method

BITS_RANGE = (2, FLOAT_BITS)
"""Allowed bit widths of every Swin quantization knob (mixaq, sparsevit, uniform)."""
BITS_HELP = f" ({FLOAT_BITS}: float, no quantization)"
"""Suffix of the help text of every bits knob."""

PTQ_BASES = ("percentile", "repq")
"""Post-training quantization bases: today's per-tensor quantizers, or RepQ-ViT's."""
ACT_CALIB_CHOICES = ("minmax", "percentile")
"""``act_calib`` values (RepQ-ViT's own search, the quantizers' ``repq``, comes with ``ptq: repq``)."""
ACT_CALIB_DEFAULT, SOFTMAX_QUANT_DEFAULT = "percentile", "uniform"
REPQ_ACT_CALIB, REPQ_SOFTMAX_QUANT = "repq", "log_sqrt2"
"""The activation range search and softmax quantizer of ``ptq: repq``."""


def act_calib_param() -> Any:
    """The ``act_calib`` knob of every Swin quantization method."""
    return param(ACT_CALIB_DEFAULT, "activation range: minmax, or percentile (MSE-best clipping)",
                 choices=ACT_CALIB_CHOICES)


def softmax_quant_param() -> Any:
    """The ``softmax_quant`` knob of every Swin quantization method."""
    return param(SOFTMAX_QUANT_DEFAULT, "attention-probability quantizer: uniform or log2",
                 choices=SOFTMAX_QUANT)


def ptq_param() -> Any:
    """The ``ptq`` knob of the Swin quantization methods (mixaq, uniform)."""
    return param(
        "percentile",
        "PTQ base: percentile (per-tensor activations, act_calib and softmax_quant as set) or repq "
        "(RepQ-ViT: post-LayerNorm activations per channel, folded into LayerNorm and the next linear "
        "per branch; log-sqrt2 softmax; percentiles 0.999/0.9999/0.99999; act_calib, softmax_quant "
        "at defaults)",
        choices=PTQ_BASES,
    )


def check_ptq(ptq: str, act_calib: str, softmax_quant: str) -> None:
    """Refuse ``act_calib`` / ``softmax_quant`` away from their defaults under ``ptq: repq`` (which
    brings its own range search and softmax quantizer), so a row never claims a quantizer it did not
    run."""
    if ptq == "repq" and (act_calib, softmax_quant) != (ACT_CALIB_DEFAULT, SOFTMAX_QUANT_DEFAULT):
        raise ValueError(
            f"ptq='repq' uses RepQ-ViT's range search and log-sqrt2 softmax quantizer: act_calib and "
            f"softmax_quant apply to ptq='percentile' only (got act_calib={act_calib!r}, "
            f"softmax_quant={softmax_quant!r}; leave them at {ACT_CALIB_DEFAULT!r} and "
            f"{SOFTMAX_QUANT_DEFAULT!r})"
        )


def qat_param() -> Any:
    """The ``qat`` knob of the Swin quantization methods (mixaq, uniform, sparsevit)."""
    return param(
        "",
        "quantization-aware-trained state to start from instead of post-training calibration alone: "
        "proxy:NAME (harness train RECIPE writes one; the shipped ones are proxy:qat-*) or a local "
        ".safetensors; its latent weights and LayerNorms are loaded, its learned activation steps "
        "replace the calibrated ones where it trained that quantizer at the same bits; empty: PTQ",
    )


def check_qat(qat: str, ptq: str, softmax_quant: str) -> None:
    """Refuse a QAT state on another PTQ base than the one QAT trains from, or a missing file (at
    suite load, with file and line)."""
    if not qat:
        return
    if ptq != "percentile" or softmax_quant != SOFTMAX_QUANT_DEFAULT:
        raise ValueError(
            f"qat={qat!r} trains from ptq='percentile' with softmax_quant='uniform' (learned uniform steps); "
            f"got ptq={ptq!r}, softmax_quant={softmax_quant!r}"
        )
    problems = check_weights(qat)
    if problems:
        raise ValueError("qat: " + problems[0])


def embed_bits_param() -> Any:
    """The ``embed_bits`` knob of every Swin quantization method."""
    return param(8, "bits of patch embedding, patch merging and head (W and A)" + BITS_HELP, range=BITS_RANGE)


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
    ptq: str = ptq_param()
    act_calib: str = act_calib_param()
    softmax_quant: str = softmax_quant_param()
    embed_bits: int = embed_bits_param()
    qat: str = qat_param()

    def __post_init__(self) -> None:
        # cross-field: a suite setting this is refused at load, with file and line
        if self.a_bits_low > self.a_bits_high:
            raise ValueError(f"a_bits_low={self.a_bits_low} must not exceed a_bits_high={self.a_bits_high}")
        check_ptq(self.ptq, self.act_calib, self.softmax_quant)
        check_qat(self.qat, self.ptq, self.softmax_quant)


def quant_spec(params: MixAQParams) -> QuantSpec:
    """The QuantSpec of the knobs: ``ptq: repq`` maps to the post-LayerNorm reparameterization,
    RepQ-ViT's range search and the log-sqrt2 softmax quantizer."""
    repq = params.ptq == "repq"
    return QuantSpec(
        w_bits=params.w_bits,
        a_bits_high=params.a_bits_high,
        a_bits_low=params.a_bits_low,
        embed_bits=params.embed_bits,
        softmax_quant=REPQ_SOFTMAX_QUANT if repq else params.softmax_quant,
        act_calib=REPQ_ACT_CALIB if repq else params.act_calib,
        calib=params.calib,
        reparam_ln=repq,
    )


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
    spec = quant_spec(params)
    routing = RoutingSpec(
        pair_ratios=per_pair(model, params.pair_ratios, params.ratio, "pair_ratios"),
        pair_prune=per_pair(model, params.pair_prune_ratios, params.prune_ratio, "pair_prune_ratios"),
        importance=params.importance,
        seed=seed,
        min_active=params.min_active_windows,
    )
    if params.qat:
        return quantize_from_qat(model, spec, routing, calib_images, params.qat, ref_a_bits=ref_a_bits)
    return quantize_swin(model, spec, routing, calib_images, ref_a_bits=ref_a_bits)


def all_high(
    w_bits: int, a_bits: int, embed_bits: int, act_calib: str, softmax_quant: str, **pruning: Any
) -> MixAQParams:
    """Uniform W{w_bits}A{a_bits} as MixA-Q: every (kept) window in the high branch, both branches at
    ``a_bits``, calibrated on the whole tensor. ``pruning``: further MixAQParams fields (pruning for
    sparsevit, ``ptq`` for uniform)."""
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


def sensitivity_probe(params: MixAQParams) -> MixAQParams:
    """The configuration the importance-vs-sensitivity diagnostic quantizes with: ``params``' bits
    (and QAT weights) with every window high, l2 order, whole-tensor calibration (both branches
    calibrated), nothing pruned; it depends on the bits, not on the ratios."""
    return dataclasses.replace(params, ratio=0.0, pair_ratios=(), prune_ratio=0.0, pair_prune_ratios=(),
                               importance="l2", calib="whole")


def make_transform(fn: Any, params: Any) -> Any:
    """The transform ``(model, calib_images, seed=0) -> quantized copy`` of ``fn(model, params,
    calib_images, seed)``: what MethodSpec.build returns for mixaq, sparsevit and uniform."""
    return functools.partial(_transform, fn, params)


@register_method("mixaq", params=MixAQParams, workloads=("swin", "swin-det"),
                 doc="MixA-Q: low-importance windows at a_bits_low in a two-branch block")
def make_mixaq(params: MixAQParams) -> Any:
    """MethodSpec.build for ``mixaq``."""
    return make_transform(apply, params)


def _transform(fn: Any, params: Any, model: nn.Module, calib_images: torch.Tensor | None, seed: int = 0):
    return fn(model, params, calib_images, seed)
