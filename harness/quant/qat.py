"""Quantization-aware training of the quantized Swin: learned activation steps, straight-through weights.

A trainable copy (:func:`trainable_copy`) is the post-training quantized model of
:func:`harness.quant.qswin.quantize_swin` (same structure, same routing, same BOPs accounting) with:

- **weights**: the float (latent) weights back in every quantized linear / conv, fake-quantized on
  each forward by the harness's weight quantizer (symmetric, per output channel, max-abs scale)
  with a straight-through gradient (:class:`WeightFakeQuant`, a ``torch.nn.utils.parametrize``
  parametrization). OFQ's own weight quantizer (StatsQ, scale 2 mean|W|) is not used: the QAT
  points then quantize weights exactly as the PTQ points they are compared with;
- **activations**: each calibrated uniform activation quantizer becomes an :class:`LSQQuantizer`
  (LSQ, Esser et al. 2020, OFQ's activation quantizer): the step is a parameter initialized from the
  PTQ calibration, trained with LSQ's gradient and gradient scale ``1 / sqrt(numel * qmax)``; the
  integer zero point stays the calibrated one (OFQ learns a bias around the quantizer instead).
  Log (softmax) and per-channel (RepQ-ViT) quantizers are refused: QAT starts from the
  ``percentile`` base with the uniform softmax quantizer.

At initialization a trainable copy computes exactly what the PTQ model computes (tested): rounding
goes through :func:`round_ste` and the gradient scale through :class:`_ScaleGrad`, both exact in
the forward pass.

A trained state becomes a benchmark point through :func:`quantize_from_qat` (the ``qat`` knob of
``uniform``, ``mixaq`` and ``sparsevit``): the point's quantized structure is built as for PTQ, then
the checkpoint's latent weights and LayerNorms are loaded, and each activation quantizer takes its
learned step when the checkpoint trained a quantizer at the same bit width; the others (e.g. the
A2 low branch of a model trained at uniform W4A4) keep their PTQ calibration, and a low branch the
checkpoint never trained takes the high branch's trained LayerNorms.

SAQA (sparsity-aware quantization adaptation, MixA-Q Sec. 3.4) samples the per-pair low-bit ratios
of each step with :func:`saqa_ratios` and sets them with :func:`set_pair_ratios`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from harness.models.checkpoint import read_state_dict, sample_keys
from harness.models.weights import resolve_weights
from harness.quant.qswin import (
    LOW,
    QSwinBlock,
    QuantIO,
    QuantSpec,
    RoutingSpec,
    expand_pairs,
    pairs_per_stage,
    quantize_swin,
)
from harness.quant.quantizers import ActQuantizer, is_float, quantize_weight

QUANTIZER_STATE = ("step", "zero_point", "bits", "trained_steps")
"""The state-dict entries of an :class:`LSQQuantizer`."""
STEP_MIN = 1e-8
"""Learned steps are clamped at this floor in the forward pass (a step must stay positive)."""


class _Passthrough(torch.autograd.Function):
    """forward(x, xq) = xq; backward: the gradient goes to x unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        return xq

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        return grad, None


class _ScaleGrad(torch.autograd.Function):
    """forward(x, g) = x exactly; backward multiplies the gradient by g (LSQ's gradient scale)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: float) -> torch.Tensor:  # noqa: ANN001
        ctx.g = g
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        return grad * ctx.g, None


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) in the forward pass, the identity's gradient in the backward pass."""
    return _Passthrough.apply(x, torch.round(x))


def lsq_fake_quant(x: torch.Tensor, step: torch.Tensor, zero_point: torch.Tensor, bits: int) -> torch.Tensor:
    """LSQ fake quantization ``round(clamp(x / s, -z, 2^b - 1 - z)) * s``: the values of
    :func:`harness.quant.quantizers.fake_quant_uniform` with scale ``s`` (z is an integer); gradients
    as LSQ: for x, straight-through where ``-z < x/s < 2^b - 1 - z``, 0 outside; for s,
    ``round(x/s) - x/s`` inside and the clipping bound outside, times ``1 / sqrt(numel(x) * (2^b - 1))``.
    x: any shape; step, zero_point: 0-dim."""
    qmax = 2**bits - 1
    s = _ScaleGrad.apply(step.clamp_min(STEP_MIN), 1.0 / math.sqrt(max(1, x.numel()) * qmax))
    return round_ste(torch.clamp(x / s, -zero_point, qmax - zero_point)) * s


class LSQQuantizer(nn.Module):
    """A uniform per-tensor activation quantizer with a learned step (LSQ).

    State (all in the state dict): ``step`` (parameter), ``zero_point`` (the calibrated integer zero
    point), ``bits`` and ``trained_steps`` (forward passes it ran in training with gradients: 0 for a
    quantizer that was never trained, e.g. the low branch of a uniform QAT model).
    forward(x: any shape) -> same shape and dtype.
    """

    def __init__(self, bits: int, step: float, zero_point: float) -> None:
        super().__init__()
        self.step = nn.Parameter(torch.tensor(float(step)))
        self.register_buffer("zero_point", torch.tensor(float(zero_point)))
        self.register_buffer("bits", torch.tensor(int(bits)))
        self.register_buffer("trained_steps", torch.tensor(0, dtype=torch.int64))

    @classmethod
    def from_ptq(cls, aq: ActQuantizer) -> LSQQuantizer:
        """The learned-step twin of a calibrated per-tensor uniform ActQuantizer (same grid)."""
        if aq.kind != "uniform" or aq.per_channel:
            what = f"a {aq.kind} quantizer" if aq.kind != "uniform" else "a per-channel (RepQ-ViT) quantizer"
            raise ValueError(f"QAT learns uniform per-tensor activation steps, not {what}: train from "
                             "ptq: percentile with softmax_quant: uniform")
        if not aq.calibrated:
            raise ValueError("QAT starts from a calibrated quantizer: this one saw no calibration data")
        return cls(aq.bits, float(aq.scale), float(aq.zero_point))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.trained_steps += 1
        return lsq_fake_quant(x.float(), self.step, self.zero_point, int(self.bits)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"bits={int(self.bits)}, step={float(self.step):.4g}, zero_point={float(self.zero_point):g}"


class WeightFakeQuant(nn.Module):
    """Parametrization: the weight fake-quantized per output channel at ``bits``
    (:func:`quantize_weight`), with the identity's gradient (straight-through)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = int(bits)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _Passthrough.apply(w, quantize_weight(w.detach(), self.bits))


def _quantized_layers(
    float_model: nn.Module, q: nn.Module, spec: QuantSpec
) -> Iterator[tuple[nn.Module, nn.Module, int]]:
    """(float layer, its quantized twin in ``q``, weight bits) for every layer quantize_swin quantized."""
    for fst, qst in zip(float_model.layers, q.layers):
        for fb, qb in zip(fst.blocks, qst.blocks):
            b = qb.block
            for f_lin, q_lin in ((fb.attn.qkv, b.attn.qkv), (fb.attn.proj, b.attn.proj),
                                 (fb.mlp.fc1, b.mlp.fc1), (fb.mlp.fc2, b.mlp.fc2)):
                yield f_lin, q_lin, spec.w_bits
        red = getattr(qst.downsample, "reduction", None)
        if isinstance(red, QuantIO):
            yield fst.downsample.reduction, red.inner, spec.embed_bits
    if isinstance(q.patch_embed.proj, QuantIO):
        yield float_model.patch_embed.proj, q.patch_embed.proj.inner, spec.embed_bits
    if isinstance(getattr(q.head, "fc", None), QuantIO):
        yield float_model.head.fc, q.head.fc.inner, spec.embed_bits


def _replace_quantizers(q: nn.Module) -> None:
    """Every quantizing ActQuantizer of ``q`` -> its LSQQuantizer (in place)."""
    for parent in list(q.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, ActQuantizer) and not is_float(child.bits):
                parent._modules[name] = LSQQuantizer.from_ptq(child)


def trainable_copy(
    float_model: nn.Module,
    spec: QuantSpec,
    routing: RoutingSpec,
    calib_images: torch.Tensor | None,
    *,
    ref_a_bits: int | None = None,
) -> nn.Module:
    """A trainable fake-quantized copy of a timm Swin (``float_model`` is not modified): the PTQ model
    of ``quantize_swin`` with latent float weights (straight-through fake quantization) and learned
    activation steps. Equal to the PTQ model in the forward pass until trained. In eval mode."""
    if spec.reparam_ln:
        raise ValueError("QAT starts from ptq: percentile (RepQ-ViT's folds are post-training only)")
    q = quantize_swin(float_model, spec, routing, calib_images, ref_a_bits=ref_a_bits)
    with torch.no_grad():
        for f_layer, q_layer, _ in _quantized_layers(float_model, q, spec):
            q_layer.weight.copy_(f_layer.weight)
    for _, q_layer, bits in _quantized_layers(float_model, q, spec):
        if not is_float(bits):
            parametrize.register_parametrization(q_layer, "weight", WeightFakeQuant(bits))
    _replace_quantizers(q)
    return q


def freeze(q: nn.Module) -> nn.Module:
    """Bake the fake-quantized weights (parametrizations removed, the quantized values kept), no
    gradients, eval mode: a trained copy as a benchmark point runs it. Returns ``q``."""
    for m in list(q.modules()):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    q.requires_grad_(False)
    return q.eval()


def set_pair_ratios(q: nn.Module, ratios: tuple[float, ...] | list[float]) -> None:
    """Set the low-bit ratio of every block pair of a quantized Swin (model order; sorted ascending
    within a stage, as at build), keeping the prune ratios."""
    depths = [len(st.blocks) for st in q.layers]
    per_block = expand_pairs(tuple(ratios), depths)
    for st, rs in zip(q.layers, per_block):
        st.block_ratios = [(r, p) for r, (_, p) in zip(rs, st.block_ratios)]


def saqa_ratios(gen: torch.Generator, n_pairs: int, max_ratio: float = 0.8, grid: float = 0.1,
                max_tries: int = 10_000) -> tuple[float, ...]:
    """One SAQA draw of per-pair low-bit ratios (MixA-Q's uniform-sum sampling).

    The total S is uniform on [0, max_ratio * n_pairs]; a Dirichlet(1, ..., 1) draw (normalized
    exponentials) splits it among the pairs; a draw with a ratio above ``max_ratio`` is rejected.
    Ratios are then rounded to the ``grid`` (0: no rounding; the search space is {0, 0.1, ..., 0.8}).
    Independent uniform ratios would cluster the total near the middle (Irwin-Hall); this keeps
    the total uniform. Deterministic in ``gen``.
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    for _ in range(max_tries):
        total = float(torch.rand((), generator=gen)) * max_ratio * n_pairs
        e = -torch.log(torch.rand(n_pairs, generator=gen, dtype=torch.float64).clamp_min(1e-300))
        r = total * e / e.sum()
        if bool((r <= max_ratio + 1e-12).all()):
            break
    else:  # pragma: no cover - the acceptance rate is far above 1e-4 for any n_pairs a Swin has
        raise RuntimeError(f"no SAQA draw within {max_tries} tries")
    if grid > 0:
        r = torch.round(r / grid) * grid
    return tuple(min(max_ratio, max(0.0, round(float(v), 6))) for v in r)


def n_pairs(q: nn.Module) -> int:
    """Block pairs of a (quantized) Swin: the length of its per-pair ratio tuple."""
    return sum(pairs_per_stage([len(st.blocks) for st in q.layers]))


# ------------------------------------------------------------------------ a trained state as a point


def lsq_modules(q: nn.Module) -> dict[str, LSQQuantizer]:
    """name -> LSQQuantizer of a trainable copy."""
    return {name: m for name, m in q.named_modules() if isinstance(m, LSQQuantizer)}


def load_qat_state(q: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, int]:
    """Load a trained state into the trainable copy ``q`` of a point (in place).

    Every tensor but the quantizers' must match by name and shape (latent weights, LayerNorms,
    position biases ...). A quantizer takes the checkpoint's step and zero point only when the
    checkpoint trained it (``trained_steps > 0``) at the same bit width; a block whose low branch the
    checkpoint never trained takes its high branch's LayerNorms for the low branch. Returns counts
    ``{"learned": ..., "calibrated": ...}`` of the activation quantizers. ``source`` names the
    checkpoint in errors.
    """
    quantizers = lsq_modules(q)
    q_keys = {f"{n}.{k}" for n in quantizers for k in QUANTIZER_STATE}
    own = {k: v for k, v in q.state_dict().items() if k not in q_keys}
    state = dict(state)
    for key, first in _aliases(own).items():  # a shared tensor is stored once (qat_state)
        if key not in state and first in state:
            state[key] = state[first]
    missing = sorted(k for k in own if k not in state)
    # a quantizer's state is matched by name below, and ignored when the point has no such quantizer
    unexpected = sorted(k for k in state if k not in own and k.rsplit(".", 1)[-1] not in QUANTIZER_STATE)
    shape = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shape:
        found = (("missing", missing), ("unexpected", unexpected), ("other shapes", shape))
        parts = [f"{label} {sample_keys(keys)}" for label, keys in found if keys]
        raise ValueError(f"QAT checkpoint {source} does not fit this point's model: {'; '.join(parts)}. "
                         "It was trained for another architecture (model, embed_bits or a layer quantized "
                         "at float bits)")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k].to(v.dtype))
        counts = {"learned": 0, "calibrated": 0}
        for name, m in quantizers.items():
            trained = int(state.get(f"{name}.trained_steps", torch.tensor(0)))
            same_bits = f"{name}.bits" in state and int(state[f"{name}.bits"]) == int(m.bits)
            if trained > 0 and same_bits:
                m.step.copy_(state[f"{name}.step"].to(m.step.dtype))
                m.zero_point.copy_(state[f"{name}.zero_point"].to(m.zero_point.dtype))
                m.trained_steps.copy_(state[f"{name}.trained_steps"])
                counts["learned"] += 1
            else:
                counts["calibrated"] += 1
        for name, blk in q.named_modules():
            if isinstance(blk, QSwinBlock) and not _branch_trained(state, f"{name}.aq.{LOW}."):
                blk.norm1[LOW].load_state_dict(blk.norm1[0].state_dict())
                blk.norm2[LOW].load_state_dict(blk.norm2[0].state_dict())
    return counts


def quantize_from_qat(
    model: nn.Module,
    spec: QuantSpec,
    routing: RoutingSpec,
    calib_images: torch.Tensor | None,
    weights: str,
    *,
    ref_a_bits: int | None = None,
) -> nn.Module:
    """A point's quantized copy of the timm Swin ``model`` from the trained state ``weights``
    (``proxy:NAME`` or a local file): :func:`trainable_copy` (PTQ-calibrated on ``calib_images``),
    :func:`load_qat_state`, :func:`freeze`. ``model`` stays the float reference. The counts of
    learned and calibrated quantizers are kept as ``q.qat_counts``."""
    found = resolve_weights(weights)
    q = trainable_copy(model, spec, routing, calib_images, ref_a_bits=ref_a_bits)
    q.qat_counts = load_qat_state(q, read_state_dict(found.path), found.label)
    return freeze(q)


def _aliases(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """key -> the first key of the same tensor, for every key after the first of a shared tensor
    (a module held by two parents: QSwinBlock's qkv / fc1 / high-branch norms and the timm block's)."""
    first: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out: dict[str, str] = {}
    for k, v in state.items():
        ident = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if ident in first:
            out[k] = first[ident]
        else:
            first[ident] = k
    return out


def qat_state(q: nn.Module) -> dict[str, torch.Tensor]:
    """The state of a trainable copy to save: ``q.state_dict()`` with each shared tensor once (under
    its first name); :func:`load_qat_state` restores the other names."""
    sd = q.state_dict()
    dup = _aliases(sd)
    return {k: v for k, v in sd.items() if k not in dup}


def _branch_trained(state: dict[str, torch.Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix) and k.endswith(".trained_steps") and int(v) > 0 for k, v in state.items())


__all__ = [
    "LSQQuantizer",
    "WeightFakeQuant",
    "freeze",
    "load_qat_state",
    "lsq_fake_quant",
    "n_pairs",
    "qat_state",
    "quantize_from_qat",
    "round_ste",
    "saqa_ratios",
    "set_pair_ratios",
    "trainable_copy",
]
