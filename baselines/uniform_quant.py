"""Uniform post-training fake quantization of a timm Swin: W{w_bits}A{a_bits}.

The same machinery as MixA-Q (``harness.quant.qswin``) with every window in the high branch:

- weights of qkv, proj, fc1, fc2: symmetric per output channel at ``w_bits``;
- activations, per tensor, asymmetric, at ``a_bits``: qkv input, q, k, v, softmax output
  (uniform, or ``softmax_quant="log2"``), proj input, fc1 input, fc2 input;
- patch embedding, patch merging and the classifier at ``embed_bits`` (weights and inputs);
- LayerNorms, biases, the relative-position bias, residual adds and GELU stay float;
- ranges calibrated on float activations of a few images (``act_calib``: minmax or the
  MSE-best of a few percentile clippings).

``apply(model, params, calib_images) -> quantized copy``; the float model is not modified.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.params import param
from harness.quant.qswin import SOFTMAX_QUANT, QuantSpec, RoutingSpec, pairs_per_stage, quantize_swin
from harness.quant.quantizers import ACT_CALIB_METHODS

BITS_RANGE = (2, 32)


@dataclass(frozen=True)
class UniformQuantParams:
    """Uniform quantization knobs (names are what suites sweep)."""

    w_bits: int = param(4, "weight bits, per-channel symmetric (32: float)", range=BITS_RANGE)
    a_bits: int = param(8, "activation bits of every block activation (32: float)", range=BITS_RANGE)
    act_calib: str = param(
        "percentile", "activation range: minmax, or percentile (MSE-best clipping)", choices=ACT_CALIB_METHODS
    )
    softmax_quant: str = param(
        "uniform", "attention-probability quantizer: uniform or log2", choices=SOFTMAX_QUANT
    )
    embed_bits: int = param(
        8, "bits of patch embedding, patch merging and head, W and A (32: float)", range=BITS_RANGE
    )
    ref_a_bits: int = param(
        0,
        "activation bits of the uniform model work_bops_speedup is measured "
        "against (0: a_bits itself, speedup 1)",
        range=(0, 32),
    )


def apply(model: nn.Module, params: UniformQuantParams, calib_images: torch.Tensor | None, seed: int = 0):
    """A W{w_bits}A{a_bits} fake-quantized copy of a timm Swin. calib_images: [N, 3, H, W]."""
    n_pairs = sum(pairs_per_stage([len(s.blocks) for s in model.layers]))
    spec = QuantSpec(
        w_bits=params.w_bits,
        a_bits_high=params.a_bits,
        a_bits_low=params.a_bits,
        embed_bits=params.embed_bits,
        softmax_quant=params.softmax_quant,
        act_calib=params.act_calib,
        calib="whole",
    )
    routing = RoutingSpec((0.0,) * n_pairs, (0.0,) * n_pairs, "l2", seed)
    return quantize_swin(model, spec, routing, calib_images, ref_a_bits=params.ref_a_bits or params.a_bits)


def make_uniform(params: UniformQuantParams) -> Any:
    """MethodSpec.build: the transform ``(model, calib_images, seed=0) -> quantized copy``."""
    return functools.partial(_transform, params)


def _transform(
    params: UniformQuantParams, model: nn.Module, calib_images: torch.Tensor | None, seed: int = 0
):
    return apply(model, params, calib_images, seed)
