"""Uniform post-training fake quantization of a timm Swin: W{w_bits}A{a_bits}.

Literally MixA-Q (:mod:`harness.methods.mixaq`) with every window in the high branch and both
branches at ``a_bits``, calibrated on the whole tensor:

- weights of qkv, proj, fc1, fc2: symmetric per output channel at ``w_bits``;
- activations, per tensor, asymmetric, at ``a_bits``: qkv input, q, k, v, softmax output
  (uniform, or ``softmax_quant="log2"``), proj input, fc1 input, fc2 input;
- patch embedding, patch merging and the classifier at ``embed_bits`` (weights and inputs);
- LayerNorms, biases, the relative-position bias, residual adds and GELU stay float;
- ranges calibrated on float activations of a few images (``act_calib``: minmax or the
  MSE-best of a few percentile clippings);
- ``ptq: repq`` instead: the RepQ-ViT base (post-LayerNorm activations calibrated per channel and
  folded into LayerNorm and the next linear, log-sqrt2 softmax quantizer, RepQ-ViT's percentile
  search; :mod:`harness.quant.repq`).

``apply(model, params, calib_images) -> quantized copy``; the float model is not modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.methods import mixaq
from harness.methods.mixaq import (
    BITS_HELP,
    BITS_RANGE,
    act_calib_param,
    check_ptq,
    check_qat,
    embed_bits_param,
    ptq_param,
    qat_param,
    softmax_quant_param,
)
from harness.params import param
from harness.registry import register_method


@dataclass(frozen=True)
class UniformQuantParams:
    """Uniform quantization knobs (names are what suites sweep)."""

    w_bits: int = param(4, "weight bits, per-channel symmetric" + BITS_HELP, range=BITS_RANGE)
    a_bits: int = param(8, "activation bits of every block activation" + BITS_HELP, range=BITS_RANGE)
    ptq: str = ptq_param()
    act_calib: str = act_calib_param()
    softmax_quant: str = softmax_quant_param()
    embed_bits: int = embed_bits_param()
    qat: str = qat_param()
    ref_a_bits: int = param(
        0,
        "activation bits of the uniform model work_bops_speedup is measured "
        "against (0: a_bits itself, speedup 1)",
        range=(0, 32),
    )

    def __post_init__(self) -> None:
        check_ptq(self.ptq, self.act_calib, self.softmax_quant)  # refused at suite load, with file and line
        check_qat(self.qat, self.ptq, self.softmax_quant)


def apply(model: nn.Module, params: UniformQuantParams, calib_images: torch.Tensor | None, seed: int = 0):
    """A W{w_bits}A{a_bits} fake-quantized copy of a timm Swin. calib_images: [N, 3, H, W]."""
    mix = mixaq.all_high(
        params.w_bits, params.a_bits, params.embed_bits, params.act_calib, params.softmax_quant,
        min_active_windows=0,  # nothing is pruned; 0 keeps quant_info.routing as it always was
        ptq=params.ptq,
        qat=params.qat,
    )
    return mixaq.apply(model, mix, calib_images, seed, ref_a_bits=params.ref_a_bits or params.a_bits)


@register_method("uniform", params=UniformQuantParams, workloads=("swin", "swin-det"),
                 doc="uniform W{w_bits}A{a_bits} post-training fake quantization")
def make_uniform(params: UniformQuantParams) -> Any:
    """MethodSpec.build for ``uniform``."""
    return mixaq.make_transform(apply, params)
