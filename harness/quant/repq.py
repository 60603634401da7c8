"""RepQ-ViT's scale reparameterization of post-LayerNorm activations (Li et al., ICCV 2023).

A post-LayerNorm activation ``y = gamma * n + beta`` ([..., C]) has very different ranges per
channel, so RepQ-ViT first calibrates it per channel (scale ``s_c``, integer zero point ``z_c``)
and then folds the per-channel grids into one per-tensor grid (``D``, ``Z``):

    D = mean_c s_c,   Z = round(mean_c z_c),   r_c = s_c / D,   b_c = (Z - z_c) * D
    LayerNorm:   gamma' = gamma / r,   beta' = beta / r - b        (so y' = y / r - b)
    next linear: W' = W * r (each input column c times r_c),   bias' = bias + Q(W') b

The linear then computes ``Q(W') y' + bias' = Q(W') (y / r) + bias``: in float (no rounding) the
pair computes what it computed before. With quantization, per-tensor codes of y' equal the
per-channel codes of y: ``round(y'_c / D) + Z = round(y_c / s_c) + z_c`` because
``y'_c / D = y_c / s_c + (z_c - Z)`` and ``z_c - Z`` is an integer (up to rounding ties), and both
grids clamp to [0, 2^b - 1]; so ``unfold(Q_tensor(fold(y))) = Q_channel(y)`` with
``unfold(y') = r (y' + b)``.

Sequence (:func:`harness.quant.qswin.quantize_swin` with ``reparam_ln``): initial calibration (the
post-LayerNorm quantizers per channel, the others per tensor), reparameterization (this module:
LayerNorm and the next linear folded from the float weights, the folded weight re-quantized per
output channel, the quantizer set to the per-tensor grid). RepQ-ViT then runs a re-calibration
pass, which initializes only the weight quantizers of the reparameterized layers (its activation
quantizers keep their initial grids); here the folded weights are re-quantized right away, so no
second pass is needed.

Deviations from RepQ-ViT (stated, deliberate): Z is rounded to an integer (RepQ-ViT keeps the
mean, a fractional zero point, which breaks the code equality above), and the bias is
compensated with the re-quantized folded weight Q(W') (RepQ-ViT uses the float W', which leaves
an error ``(W' - Q(W')) b``); weights keep the harness's symmetric per-output-channel quantizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.quant.quantizers import ActQuantizer, quantize_weight


@dataclass(frozen=True)
class ChannelFold:
    """One post-LayerNorm reparameterization. r, b: [C] float64 (``y' = y / r - b``); scale,
    zero_point: the per-tensor grid (D, integer Z) that replaces the per-channel grids."""

    r: torch.Tensor
    b: torch.Tensor
    scale: float
    zero_point: float

    def apply(self, y: torch.Tensor) -> torch.Tensor:
        """The folded activation of y: [..., C] -> y / r - b."""
        return (y.double() / self.r - self.b).to(y.dtype)

    def unapply(self, y_folded: torch.Tensor) -> torch.Tensor:
        """The original activation of a folded one: [..., C] -> r (y' + b)."""
        return (self.r * (y_folded.double() + self.b)).to(y_folded.dtype)


def channel_fold(scale: torch.Tensor, zero_point: torch.Tensor) -> ChannelFold:
    """The fold of per-channel grids ``(q - z_c) * s_c``. scale, zero_point: [C] (integer zero
    points) -> r = s / D, b = (Z - z) D with D = mean(s), Z = round(mean(z))."""
    s, z = scale.double().cpu(), zero_point.double().cpu()
    d = s.mean()
    zt = torch.round(z.mean())
    return ChannelFold(r=s / d, b=(zt - z) * d, scale=float(d), zero_point=float(zt))


def fold_layernorm(norm: nn.LayerNorm, fold: ChannelFold) -> None:
    """Rescale a LayerNorm's affine parameters in place: gamma / r, beta / r - b."""
    if norm.weight is None or norm.bias is None:
        raise ValueError("scale reparameterization needs a LayerNorm with affine weight and bias")
    r, b = fold.r.to(norm.weight.device), fold.b.to(norm.weight.device)
    with torch.no_grad():
        norm.weight.copy_(norm.weight.double() / r)
        norm.bias.copy_(norm.bias.double() / r - b)


def fold_linear(linear: nn.Linear, fold: ChannelFold, w_bits: int) -> nn.Linear:
    """A new Linear computing on folded inputs what ``linear`` computed on the original ones:
    weight W * r (per input column) quantized at ``w_bits`` (per output channel), bias + Q(W') b.
    ``linear`` (float weights) is not modified; the result always has a bias."""
    w = linear.weight
    r, b = fold.r.to(w.device), fold.b.to(w.device)
    out = nn.Linear(linear.in_features, linear.out_features, bias=True, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        w_folded = quantize_weight((w.double() * r).to(w.dtype), w_bits)
        bias = linear.bias.double() if linear.bias is not None else torch.zeros_like(out.bias, dtype=b.dtype)
        out.weight.copy_(w_folded)
        out.bias.copy_(bias + w_folded.double() @ b)
    return out.train(linear.training)


def reparameterize(
    quantizer: ActQuantizer, norm: nn.LayerNorm, linear: nn.Linear, w_bits: int
) -> tuple[nn.Linear, torch.Tensor] | None:
    """Fold a per-channel calibrated post-LayerNorm ``quantizer`` into ``norm`` (in place) and a
    copy of the float ``linear`` (returned, quantized at ``w_bits``); the quantizer keeps the
    per-tensor grid. Returns (folded linear, folded image of 0: [C], the value an input that was 0,
    e.g. a padded token, must take), or None when the quantizer has no per-channel grid (float
    bits, or a branch that saw no calibration data)."""
    if not (quantizer.per_channel and quantizer.needs_calibration and quantizer.calibrated):
        return None
    fold = channel_fold(quantizer.scale, quantizer.zero_point)
    fold_layernorm(norm, fold)
    quantizer.set_per_tensor(fold.scale, fold.zero_point)
    zero_image = (-fold.b).to(device=norm.weight.device, dtype=norm.weight.dtype)
    return fold_linear(linear, fold, w_bits), zero_image
