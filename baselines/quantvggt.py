"""QuantVGGT-style post-training fake quantization of VGGT's aggregator (Feng et al., "Quantized
Visual Geometry Grounded Transformer", arXiv 2509.21302, ICLR 2026), written from the paper's
description and the public reference code (wlfeng0509/QuantVGGT), read for facts only.

What is quantized (as in the reference): every ``nn.Linear`` of the aggregator's frame and global
blocks (``attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``). The patch embedding (DINO or conv),
the camera / depth / point / track heads, LayerNorms, LayerScale, RoPE and the attention matmuls
(q k^T, p v) stay float.

Each quantized linear ``y = x W^T + b`` becomes (docs/methods/quantvggt.md)

    y = Q_a((x R) / s) . Q_w(clip(W R * s))^T + b

- ``R = D H / sqrt(n)``: a random Hadamard rotation of the input channels, one per layer (D: random
  signs; "pre-global Hadamard rotation"), applied to x online by a fast Walsh-Hadamard transform;
- ``s``: channel-wise smoothing in the rotated basis ("post-local channel smoothing"), initialised
  SmoothQuant-style ``s_j = max|(xR)_j|^alpha / max_o |(WR)_oj|^(1 - alpha)`` from calibration
  activations;
- ``Q_w``: symmetric per-output-channel weights; ``Q_a``: symmetric per-token dynamic activations
  (the scale of every token is computed on the fly), both on the grid ``[-2^(b-1), 2^(b-1) - 1]``
  with ``scale = absmax / (2^(b-1) - 1)``;
- optionally (the reference's main configuration) a block-wise reconstruction that learns ``s``,
  per-output-channel weight clipping (LWC) and per-layer activation clipping (LAC) so that each
  quantized block reproduces its float output on the calibration frames.

Calibration frames are chosen by noise-filtered diverse sampling at frame granularity: frames whose
deep-layer input statistics are IQR outliers are dropped, the rest are clustered on their
correlation with the first frame and a few frames per cluster kept.

Fake quantization: values are rounded onto the integer grid and mapped back to float, so this
measures accuracy and bit operations (``work_bops``), not integer-kernel speed. Bit widths of 16
and above mean "no quantization" (the reference's convention); the rotation and smoothing are exact
reparameterizations, so a W16A16 model equals the original within float tolerance.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.methods.httm import HTTMParams, make_httm
from harness.metrics.memory_model import (
    FLOAT32,
    Forward,
    Ledger,
    ModelExtra,
    Moment,
    SeamShape,
    plain_bytes,
)
from harness.models.seam import CalibrationRun, VGGTMethod
from harness.params import param
from harness.registry import register_method

OFF_BITS = 16
"""Bit widths at or above this mean "no quantization" (the reference's convention)."""
FLOAT_BITS = 32
"""Bits a float operand counts for in BOPs (fp32 = 32 x 32)."""
BITS_CHOICES = (4, 6, 8, 16)
QUANT_LINEARS = (("attn", "qkv"), ("attn", "proj"), ("mlp", "fc1"), ("mlp", "fc2"))
"""The linear layers of one aggregator block that are quantized (parent, attribute)."""

SCALE_MIN = 1e-5
"""Lower bound of weight scales' absmax and of smoothing factors (as the reference)."""
CLIP_INIT_LOGIT = 4.0
"""Initial clipping logits of LWC / LAC: sigmoid(4) = 0.982 of the range (as the reference)."""
CLIP_LR_FACTOR = 10.0
"""Clipping logits learn at this multiple of ``qv_lr`` (as the reference)."""
LR_FLOOR = 1e-3
"""The cosine schedule ends at ``qv_lr * LR_FLOOR`` (as the reference)."""
IQR_FENCE = 1.5
"""Tukey fences: a frame is an outlier outside [Q1 - 1.5 IQR, Q3 + 1.5 IQR]."""
MIN_FILTER_FRAMES = 4
"""The noise filter needs at least this many candidate frames (the reference skips smaller groups)."""
KMEANS_ITERS = 100


@dataclass(frozen=True)
class QuantVGGTParams:
    """QuantVGGT knobs (names are what suites sweep). Defaults: the reference's W4A4 configuration."""

    qv_w_bits: int = param(4, "weight bits, symmetric per output channel (16: float)", choices=BITS_CHOICES)
    qv_a_bits: int = param(4, "activation bits, symmetric per token, dynamic (16: float)",
                           choices=BITS_CHOICES)
    qv_rotate: bool = param(True, "random Hadamard rotation of every quantized linear's input")
    qv_smooth: bool = param(True, "channel-wise smoothing after the rotation")
    qv_alpha: float = param(0.5, "smoothing strength: s = max|x|^alpha / max|w|^(1 - alpha)",
                            range=(0.0, 1.0))
    qv_calib_epochs: int = param(
        15, "block-wise reconstruction epochs over the calibration scene (one optimizer step each) "
        "learning smoothing and clipping; 0: the SmoothQuant-style initialisation only",
        range=(0, None))
    qv_lr: float = param(1e-3, "learning rate of the smoothing factors (clipping logits: 10x)",
                         range=(0.0, None))
    qv_lwc: bool = param(True, "learnable weight clipping per output channel (needs qv_calib_epochs > 0)")
    qv_lac: bool = param(True, "learnable activation clipping per layer (needs qv_calib_epochs > 0)")
    qv_filter: bool = param(True, "drop calibration frames whose deep-layer input statistics are IQR "
                            "outliers (noise filter)")
    qv_filter_layers: int = param(4, "deepest frame/global block pairs the noise filter reads "
                                  "(reference: 4 of 24)", range=(1, None))
    qv_clusters: int = param(5, "k-means clusters of the calibration frames' correlation with frame 0",
                             range=(1, None))
    qv_per_cluster: int = param(4, "calibration frames kept per cluster", range=(1, None))
    qv_seed: int = param(0, "seed of the Hadamard signs and of the per-cluster sampling", range=(0, None))

    def __post_init__(self) -> None:
        if self.qv_a_bits < self.qv_w_bits:
            raise ValueError(f"qv_a_bits={self.qv_a_bits} < qv_w_bits={self.qv_w_bits}: QuantVGGT runs "
                             "W4A4, W6A6, W4A8, W8A8 (activations never narrower than weights)")
        if (self.qv_lwc or self.qv_lac) and self.qv_calib_epochs == 0:
            raise ValueError("qv_lwc / qv_lac are learned clipping: they need qv_calib_epochs > 0 "
                             "(or set both to false)")
        if self.qv_calib_epochs > 0 and not (self.qv_smooth or self.qv_lwc or self.qv_lac):
            raise ValueError("qv_calib_epochs > 0 learns nothing without qv_smooth, qv_lwc or qv_lac; "
                             "set qv_calib_epochs: 0")

    @property
    def quantizes(self) -> bool:
        """Whether weights or activations are actually quantized."""
        return self.qv_w_bits < OFF_BITS or self.qv_a_bits < OFF_BITS

    @property
    def learns_clipping(self) -> bool:
        """Whether the folded layers keep learned activation clipping (LAC) logits."""
        return self.qv_lac and self.qv_calib_epochs > 0 and self.quantizes

    def seam_peak_bytes(self, shape: SeamShape) -> dict[str, float]:
        """Plain attention's temporaries: QuantVGGT changes the linear layers, not the seam."""
        return plain_bytes(shape)

    def model_extra_bytes(self, fw: Forward) -> ModelExtra:
        """What the fake-quantized model adds to the forward ``fw`` (the memory wall's model terms).

        held: the point's transformed **copy** of the model, beside the original that the workload
        keeps for the reference: every weight again in its float dtype (fake quantization stores
        ``Q_w(W R s)`` as float, so W4 saves nothing here), and each quantized linear's buffers: the
        Hadamard signs and smoothing factors (float32 ``[C_in]``) and the LAC logits (2 floats; the
        per-channel weight scales and LWC logits are folded away; the block reconstruction frees its
        gradients and optimizer state). Moments:
        the last global block's MLP while ``fc1`` and ``fc2`` run fake-quantized
        (:func:`fake_quant_linear_bytes`; fc2, with the 4C-wide input, is the largest linear). The
        copy's parameters do not require grad, so autocast keeps no bf16 weight cache (each call
        casts its weight and drops it)."""
        fw = dataclasses.replace(fw, weight_cache=False)
        cfg = fw.cfg
        C, hidden = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)
        layers = 2 * cfg.depth  # frame and global blocks
        inputs = layers * (3 * C + hidden)  # qkv, proj, fc1 take C channels, fc2 takes the MLP's width
        copy = "quantized copy: "
        held = {f"{copy}weights (float, fake-quantized)": float(fw.lin.params) * fw.w + fw.lin.buffers}
        if self.qv_rotate:
            held[f"{copy}Hadamard signs (float32)"] = float(inputs) * FLOAT32
        if self.qv_smooth:
            held[f"{copy}smoothing factors (float32)"] = float(inputs) * FLOAT32
        clip_logits = float(layers * len(QUANT_LINEARS)) * 2 * FLOAT32
        if self.learns_clipping:
            held[f"{copy}activation clipping logits"] = clip_logits
        around = fw.kept(cfg.depth - 1) + fw.mlp_around()
        gelu = fw.tokens * hidden * fw.e
        fc1, fc2 = Ledger(), Ledger()
        *_, fc1_size, fc2_size = fw.lin.block  # weights + biases
        fake_quant_linear_bytes(fc1, fw, C, hidden, fc1_size - C * hidden, fw.r, self, "fc1 ")
        fc2.alloc("GELU output (fc2's input)", gelu)
        fake_quant_linear_bytes(fc2, fw, hidden, C, fc2_size - hidden * C, fw.e, self, "fc2 ")
        moments = {f"MLP fc1, fake-quantized, layer {cfg.depth - 1}": Moment(around, fc1.terms()),
                   f"MLP fc2, fake-quantized, layer {cfg.depth - 1}": Moment(around, fc2.terms())}
        return ModelExtra(held=held, moments=moments, weight_cache=False)


# ----------------------------------------------------------------------------- quantizers


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity gradient (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def quantize_weight_sym(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel fake quantization. w: [C_out, C_in] -> same shape.

    ``scale_o = max(absmax_o, 1e-5) / (2^(b-1) - 1)``, ``q = clamp(round(w / scale), -2^(b-1),
    2^(b-1) - 1)``. Differentiable (STE rounding; the scale follows w). ``bits >= 16``: w itself.
    """
    if bits >= OFF_BITS:
        return w
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(SCALE_MIN) / qmax
    return torch.clamp(round_ste(w / scale), -qmax - 1, qmax) * scale


def quantize_tokens_sym(x: torch.Tensor, bits: int, clip_lo: torch.Tensor | float = 1.0,
                        clip_hi: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Symmetric per-token dynamic fake quantization. x: [..., C] -> same shape.

    Per token: ``hi = max(x, 0) * clip_hi``, ``lo = min(x, 0) * clip_lo``, ``scale = max(hi, -lo) /
    (2^(b-1) - 1)`` (1 for an all-zero token), ``q = clamp(round(x / scale), -2^(b-1), 2^(b-1) - 1)``.
    clip_lo, clip_hi: range factors in (0, 1] (LAC). ``bits >= 16``: x itself.
    """
    if bits >= OFF_BITS:
        return x
    qmax = 2 ** (bits - 1) - 1
    hi = x.amax(dim=-1, keepdim=True).clamp_min(0) * clip_hi
    lo = x.amin(dim=-1, keepdim=True).clamp_max(0) * clip_lo
    amax = torch.maximum(hi, -lo)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return torch.clamp(round_ste(x / scale), -qmax - 1, qmax) * scale


# ----------------------------------------------------------------------------- rotation and smoothing


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalized fast Walsh-Hadamard transform along the last dim: x [..., n] -> x H_n, with
    H_n the Sylvester Hadamard matrix ([[H, H], [H, -H]]); n must be a power of two."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"the Hadamard rotation needs a power-of-two width, got {n}")
    shape, h = x.shape, 1
    while h < n:
        y = x.reshape(-1, n // (2 * h), 2, h)
        x = torch.stack((y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]), dim=2)
        h *= 2
    return x.reshape(shape)


def random_signs(n: int, generator: torch.Generator) -> torch.Tensor:
    """n random +-1 (float32): the diagonal D of the randomized Hadamard rotation."""
    return torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1


def rotate(x: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """x R with R = diag(signs) H / sqrt(n) (orthonormal). x: [..., n], signs: [n]."""
    return fwht(x * signs) / math.sqrt(x.shape[-1])


def rotation_matrix(signs: torch.Tensor) -> torch.Tensor:
    """The explicit R = diag(signs) H / sqrt(n), [n, n] (for checks; layers use :func:`rotate`)."""
    return rotate(torch.eye(signs.numel(), dtype=signs.dtype), signs)


def smoothing_factors(act_absmax: torch.Tensor, w_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant-style factors ``s_j = a_j^alpha / w_j^(1 - alpha)``, at least 1e-5.

    act_absmax: [C_in] max |x_j| over calibration tokens; w_absmax: [C_in] max_o |W_oj|.
    """
    return (act_absmax.clamp_min(SCALE_MIN).pow(alpha)
            / w_absmax.clamp_min(SCALE_MIN).pow(1 - alpha)).clamp_min(SCALE_MIN)


class QVLinear(nn.Module):
    """A fake-quantized linear: ``y = Q_a((x R) / s) . Q_w(clip(W R * s))^T + b``.

    Built from an ``nn.Linear``; holds ``W R`` in float32 until :meth:`fold` replaces ``weight`` by
    ``Q_w(clip(W R * s))`` in the original dtype. Before folding the weight is quantized on every
    forward (differentiably, for the reconstruction). x: [..., C_in] -> [..., C_out].
    signs: [C_in] Hadamard signs or None; smooth: [C_in] factors or None; lwc / lac: learnable
    clipping logits (per output channel: [C_out, 2]; per layer: [2]; order lo, hi).
    """

    def __init__(self, linear: nn.Linear, w_bits: int, a_bits: int, signs: torch.Tensor | None = None,
                 smooth: torch.Tensor | None = None, lwc: bool = False, lac: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.w_bits, self.a_bits = int(w_bits), int(a_bits)
        self.dtype = linear.weight.dtype
        w = linear.weight.detach().float()
        self.register_buffer("signs", None if signs is None else signs.float().to(w.device))
        self.weight = nn.Parameter(w if signs is None else rotate(w, self.signs), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                  requires_grad=False)
        self.smooth = None if smooth is None else nn.Parameter(smooth.float().to(w.device))
        self.clip_w = nn.Parameter(torch.full((self.out_features, 2), CLIP_INIT_LOGIT, device=w.device)) \
            if lwc else None
        self.clip_a = nn.Parameter(torch.full((2,), CLIP_INIT_LOGIT, device=w.device)) if lac else None
        self.folded = False

    def quantized_weight(self) -> torch.Tensor:
        """Q_w(clip(W R * s)) from the float weight, [C_out, C_in] float32 (differentiable)."""
        w = self.weight.float()
        if self.smooth is not None:
            w = w * self.smooth
        if self.clip_w is not None:
            f = torch.sigmoid(self.clip_w)
            lo = w.amin(dim=1, keepdim=True) * f[:, :1]
            hi = w.amax(dim=1, keepdim=True) * f[:, 1:]
            w = torch.maximum(torch.minimum(w, hi), lo)
        return quantize_weight_sym(w, self.w_bits)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        """Q_a((x R) / s) in float32 (autocast off). x: [..., C_in]."""
        with torch.autocast(x.device.type, enabled=False):
            h = x.float()
            if self.signs is not None:
                h = rotate(h, self.signs)
            if self.smooth is not None:
                h = h / self.smooth
            if self.clip_a is None:
                return quantize_tokens_sym(h, self.a_bits)
            f = torch.sigmoid(self.clip_a)
            return quantize_tokens_sym(h, self.a_bits, f[0], f[1])

    @torch.no_grad()
    def fold(self) -> None:
        """Freeze: store the quantized weight in the original dtype (no more weight quantization)."""
        if not self.folded:
            self.weight = nn.Parameter(self.quantized_weight().to(self.dtype), requires_grad=False)
            self.clip_w = None
            for p in self.parameters():
                p.requires_grad_(False)
            self.folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.folded else self.quantized_weight()
        h = self.quantized_input(x)
        if not self.folded:
            return F.linear(h, w, None if self.bias is None else self.bias.float())
        return F.linear(h.to(x.dtype), w, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, W{self.w_bits}A{self.a_bits}, "
                f"rotate={self.signs is not None}, smooth={self.smooth is not None}, "
                f"lwc={self.clip_w is not None}, lac={self.clip_a is not None}")


def fake_quant_linear_bytes(led: Ledger, fw: Forward, n_in: int, n_out: int, bias: int, x_elem: int,
                            p: QuantVGGTParams, what: str = "") -> int:
    """A folded :class:`QVLinear` (with ``bias`` bias elements) on all ``fw.tokens`` tokens, x ``[T, n_in]``
    of ``x_elem`` bytes, replayed on ``led``: with autocast off, x in float32 (a copy unless it is),
    ``x * signs`` and the
    Walsh-Hadamard butterflies (each level's sum and difference halves and their stack beside the
    previous level), the division by sqrt(n), the smoothing division; the per-token quantization
    (the ``[T, 1]`` ranges and scales, ``x / scale``, its rounding with the straight-through
    difference, the clamp and the rescale: float32 ``[T, n_in]`` each); then ``F.linear`` under
    autocast: x back in its dtype, autocast's copies of the input, the weight and the bias in the
    compute dtype (the copy's weights are not cached), and the output ``[T, n_out]``. Returns the
    output's handle (everything else freed). Units: bytes."""
    T = fw.tokens
    act = float(T) * n_in * FLOAT32
    h = led.alloc(f"{what}x in float32", act) if x_elem != FLOAT32 else None
    if p.qv_rotate:
        level = led.alloc(f"{what}Hadamard transform of x (float32)", act)  # x * signs
        for _ in range(int(math.log2(n_in))):
            halves = [led.alloc(f"{what}Hadamard transform of x (float32)", act / 2) for _ in range(2)]
            stacked = led.alloc(f"{what}Hadamard transform of x (float32)", act)
            led.free(*halves, level)
            level = stacked
        scaled = led.alloc(f"{what}Hadamard transform of x (float32)", act)
        led.free(level, h)
        h = scaled
    if p.qv_smooth:
        smoothed = led.alloc(f"{what}smoothed x (float32)", act)
        led.free(h)
        h = smoothed
    small = [led.alloc(f"{what}clipping logits", 2 * FLOAT32)] if p.learns_clipping else []
    if p.qv_a_bits < OFF_BITS:
        token = T * FLOAT32
        for _ in ("hi", "lo"):  # amax / amin, clamp, times the clipping factor
            first = led.alloc(f"{what}per-token ranges", token)
            second = led.alloc(f"{what}per-token ranges", token)
            led.free(first)
            small.append(led.alloc(f"{what}per-token ranges", token))
            led.free(second)
        neg = led.alloc(f"{what}per-token ranges", token)
        small.append(led.alloc(f"{what}per-token ranges", token))  # maximum
        led.free(neg)
        temps = [led.alloc(f"{what}per-token scales", T * 1), led.alloc(f"{what}per-token scales", token),
                 led.alloc(f"{what}per-token scales", token)]  # amax > 0, amax / qmax, ones
        small.append(led.alloc(f"{what}per-token scales", token))  # where
        led.free(*temps)
        divided = led.alloc(f"{what}x / scale (float32)", act)
        rounded = led.alloc(f"{what}rounded x (float32)", act)
        diff = led.alloc(f"{what}rounded x (float32)", act)
        led.free(rounded)
        ste = led.alloc(f"{what}rounded x (float32)", act)
        led.free(diff, divided)
        clamped = led.alloc(f"{what}quantized x (float32)", act)
        led.free(ste)
        quantized = led.alloc(f"{what}quantized x (float32)", act)
        led.free(clamped)
        led.free(h)
        h = quantized
    led.free(*small)
    casts = []
    if x_elem != FLOAT32:  # h.to(x.dtype)
        casts.append(led.alloc(f"{what}quantized x in the input's dtype", float(T) * n_in * x_elem))
    if fw.autocast and x_elem != fw.e:
        casts.append(led.alloc(f"{what}quantized x in bf16 (autocast copy)", float(T) * n_in * fw.e))
    if fw.autocast:  # the copy's parameters do not require grad: cast on every call, not cached
        casts.append(led.alloc(f"{what}weight in bf16 (autocast copy)", float(n_in) * n_out * fw.e))
        casts.append(led.alloc(f"{what}weight in bf16 (autocast copy)", float(bias) * fw.e))
    out = led.alloc(f"{what}output", float(T) * n_out * fw.e)
    led.free(*casts, h)
    return out


# ----------------------------------------------------------------------------- calibration frames


def iqr_outliers(values: torch.Tensor) -> torch.Tensor:
    """values: [K, n] (K statistics of n candidates) -> [n] bool, True where any statistic falls
    outside its Tukey fences [Q1 - 1.5 IQR, Q3 + 1.5 IQR] over the n candidates."""
    v = values.double()
    q1, q3 = torch.quantile(v, 0.25, dim=1, keepdim=True), torch.quantile(v, 0.75, dim=1, keepdim=True)
    fence = IQR_FENCE * (q3 - q1)
    return ((v < q1 - fence) | (v > q3 + fence)).any(dim=0)


def kmeans(features: torch.Tensor, k: int, iters: int = KMEANS_ITERS) -> torch.Tensor:
    """Lloyd's k-means, deterministic (centres start at the points nearest k evenly spaced
    quantiles of the first feature). features: [n, f] -> cluster ids [n] in [0, k)."""
    x = features.double()
    order = torch.argsort(x[:, 0])
    start = order[torch.linspace(0, x.shape[0] - 1, k).round().long()]
    centres = x[start].clone()
    ids = torch.zeros(x.shape[0], dtype=torch.long)
    for it in range(iters):
        ids_new = torch.cdist(x, centres).argmin(dim=1)
        if it > 0 and torch.equal(ids_new, ids):
            break
        ids = ids_new
        for c in range(k):
            if (ids == c).any():
                centres[c] = x[ids == c].mean(dim=0)
    return ids


def select_frames(stats: torch.Tensor | None, corr: torch.Tensor, p: QuantVGGTParams) -> torch.Tensor:
    """Noise-filtered diverse sampling over the calibration frames.

    stats: [K, n] deep-layer input statistics per candidate frame (None: no filter); corr: [n]
    each frame's mean token cosine similarity with frame 0 of its scene. Returns a [n] bool mask:
    IQR outliers dropped (only with at least 4 candidates; never every frame); if more than
    ``clusters * per_cluster`` remain, ``per_cluster`` random frames of each k-means cluster of
    ``corr``, topped up at random from the rest to ``clusters * per_cluster``.
    """
    n = corr.numel()
    keep = torch.ones(n, dtype=torch.bool)
    if stats is not None and n >= MIN_FILTER_FRAMES:
        out = iqr_outliers(stats)
        if not out.all():
            keep = ~out
    budget = p.qv_clusters * p.qv_per_cluster
    kept = torch.nonzero(keep).flatten()
    if kept.numel() <= budget:
        return keep
    g = torch.Generator().manual_seed(p.qv_seed)
    ids = kmeans(corr[kept].unsqueeze(1), min(p.qv_clusters, kept.numel()))
    chosen: list[int] = []
    for c in range(int(ids.max()) + 1):
        members = kept[ids == c]
        chosen += members[torch.randperm(members.numel(), generator=g)[:p.qv_per_cluster]].tolist()
    rest = [i for i in kept.tolist() if i not in chosen]
    need = budget - len(chosen)
    chosen += [rest[i] for i in torch.randperm(len(rest), generator=g)[:need].tolist()]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    return mask


# ----------------------------------------------------------------------------- the transform


def block_linears(block: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, linear) of the quantized layers of one aggregator block."""
    for parent_name, attr in QUANT_LINEARS:
        parent = getattr(block, parent_name)
        yield parent, attr, getattr(parent, attr)


def aggregator_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """[(kind, block)]: the frame blocks ("frame"), then the global blocks ("global")."""
    agg = model.aggregator
    return [("frame", b) for b in agg.frame_blocks] + [("global", b) for b in agg.global_blocks]


class _Capture:
    """Forward hooks that record, during one calibration forward, what the transform needs.

    shape: (B, S) of the images; absmax[layer]: [B, S, C_in] per-frame max |x R| of each quantized
    linear's input; stats: per-frame mean / std of the inputs of the deepest blocks; last: the
    last frame / global block outputs; io[block]: (args, kwargs, output) for the reconstruction.
    """

    def __init__(self, model: nn.Module, signs: dict[int, torch.Tensor | None], p: QuantVGGTParams,
                 keep_io: bool) -> None:
        self.shape: tuple[int, int] = (0, 0)
        self.absmax: dict[int, torch.Tensor] = {}
        self.stats: list[torch.Tensor] = []
        self.last: dict[str, torch.Tensor] = {}
        self.io: dict[int, list] = {}
        agg = model.aggregator
        hooks = [agg.register_forward_pre_hook(self._images)]
        blocks = aggregator_blocks(model)
        deep = set(range(max(0, agg.depth - p.qv_filter_layers), agg.depth))
        for bi, (_, block) in enumerate(blocks):
            for _, _, lin in block_linears(block):
                hooks.append(lin.register_forward_pre_hook(self._linear_hook(id(lin), signs[id(lin)])))
            if p.qv_filter and bi % agg.depth in deep:
                hooks.append(block.register_forward_pre_hook(self._stats_hook))
            if keep_io:
                hooks.append(block.register_forward_pre_hook(self._io_in(bi), with_kwargs=True))
                hooks.append(block.register_forward_hook(self._io_out(bi)))
        hooks.append(agg.frame_blocks[-1].register_forward_hook(self._last("frame")))
        hooks.append(agg.global_blocks[-1].register_forward_hook(self._last("global")))
        self.hooks = hooks

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """A block-layout tensor ([B*S, P, C] or [B, S*P, C]) as [B, S, P, C]."""
        B, S = self.shape
        return x.reshape(B, S, -1, x.shape[-1])

    def _images(self, _module, args) -> None:
        self.shape = tuple(args[0].shape[:2])

    def _linear_hook(self, key: int, signs: torch.Tensor | None):
        def hook(_module, args) -> None:
            x = args[0].detach().float()
            if signs is not None:
                x = rotate(x, signs.to(x.device))
            am = self.frames(x).abs().amax(dim=2)  # [B, S, C]
            self.absmax[key] = am if key not in self.absmax else torch.maximum(self.absmax[key], am)
        return hook

    def _stats_hook(self, _module, args) -> None:
        x = self.frames(args[0].detach().float()).flatten(2)  # [B, S, P*C]
        self.stats += [x.mean(dim=2).flatten().cpu(), x.std(dim=2).flatten().cpu()]

    def _last(self, kind: str):
        def hook(_module, _args, out) -> None:
            self.last[kind] = self.frames(out.detach().float())
        return hook

    def _io_in(self, bi: int):
        def hook(_module, args, kwargs) -> None:
            self.io[bi] = [args, kwargs, None]
        return hook

    def _io_out(self, bi: int):
        def hook(_module, _args, out) -> None:
            self.io[bi][2] = out.detach()
        return hook

    def frame_correlation(self) -> torch.Tensor:
        """[B*S]: each frame's mean token cosine similarity with frame 0 of its scene, on the last
        layer's output (frame and global halves concatenated, as the heads see it)."""
        out = torch.cat([self.last["frame"], self.last["global"]], dim=-1)  # [B, S, P, 2C]
        return F.cosine_similarity(out, out[:, :1], dim=-1).mean(dim=2).flatten().cpu()


def _normal(t):
    """A normal (non-inference) copy of the tensors in t (captured under inference mode)."""
    if isinstance(t, torch.Tensor):
        return t.detach().clone()
    if isinstance(t, (list, tuple)):
        return type(t)(_normal(x) for x in t)
    if isinstance(t, dict):
        return {k: _normal(v) for k, v in t.items()}
    return t


def reconstruct_block(block: nn.Module, io: list, mask: torch.Tensor, shape: tuple[int, int],
                      p: QuantVGGTParams) -> None:
    """Learn the block's smoothing factors and clipping logits so that its output on the calibration
    input matches the float output (MSE over the selected frames' tokens), as the reference does:
    AdamW, cosine schedule; one optimizer step per epoch (the calibration set is one scene).
    io: (args, kwargs, float output) of the block's calibration call; mask: [B*S] bool."""
    layers = [m for m in block.modules() if isinstance(m, QVLinear)]
    smooth = [m.smooth for m in layers if m.smooth is not None]
    clips = [c for m in layers for c in (m.clip_w, m.clip_a) if c is not None]
    groups = [g for g in ({"params": smooth, "lr": p.qv_lr},
                          {"params": clips, "lr": p.qv_lr * CLIP_LR_FACTOR}) if g["params"]]
    if not groups or p.qv_lr == 0:
        return
    for prm in smooth + clips:
        prm.requires_grad_(True)
    args, kwargs, target = _normal(io)
    B, S = shape
    sel = mask.to(target.device).view(B, S)
    want = target.float().reshape(B, S, -1, target.shape[-1])[sel]
    opt = torch.optim.AdamW(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.qv_calib_epochs,
                                                       eta_min=p.qv_lr * LR_FLOOR)
    x, rest = args[0].float(), args[1:]
    for _ in range(p.qv_calib_epochs):
        out = block(x, *rest, **kwargs)
        loss = F.mse_loss(out.reshape(B, S, -1, out.shape[-1])[sel], want)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    opt.zero_grad(set_to_none=True)  # the last step's gradients are not part of the quantized model
    for prm in smooth + clips:
        prm.requires_grad_(False)


def scene_absmax(absmax: torch.Tensor, sel: torch.Tensor, kind: str) -> torch.Tensor:
    """A layer's calibration max |x R| per channel, as the reference's running statistic for one
    calibration input (max over the tokens of each batch row, mean over rows): frame blocks
    (a row is a frame) average the selected frames' maxima; global blocks (a row is a scene) take
    the max over each scene's selected frames, averaged over scenes.
    absmax: [B, S, C] per-frame maxima; sel: [B, S] bool -> [C]."""
    sel = sel.to(absmax.device)
    if kind == "frame":
        return absmax[sel].mean(dim=0)
    per_scene = absmax.masked_fill(~sel.unsqueeze(-1), 0).amax(dim=1)  # [B, C] (absmax >= 0)
    return per_scene[sel.any(dim=1)].mean(dim=0)


def quantize_vggt(model: nn.Module, run: CalibrationRun, p: QuantVGGTParams) -> nn.Module:
    """A QuantVGGT fake-quantized copy of a VGGT (``model`` is not modified).

    run(m): one forward of m on the calibration frames. Steps: random Hadamard signs per layer; one
    calibration forward recording per-frame statistics; noise-filtered diverse frame selection;
    SmoothQuant-style smoothing factors from the selected frames' rotated activations (frame
    blocks: per-frame max |x R| averaged over frames; global blocks: max over all their tokens,
    as the reference's per-batch-element max); every quantized linear replaced by a
    :class:`QVLinear`; optional block-wise reconstruction; weights folded.
    """
    q = copy.deepcopy(model)
    for prm in q.parameters():
        prm.requires_grad_(False)
    blocks = aggregator_blocks(q)
    g = torch.Generator().manual_seed(p.qv_seed)
    signs = {id(lin): (random_signs(lin.in_features, g) if p.qv_rotate else None)
             for _, block in blocks for _, _, lin in block_linears(block)}
    learn = p.qv_calib_epochs > 0 and p.quantizes
    cap = _Capture(q, signs, p, keep_io=learn)
    try:
        run(q)
    finally:
        cap.remove()
    stats = torch.stack(cap.stats) if cap.stats else None
    mask = select_frames(stats, cap.frame_correlation(), p)
    sel = mask.view(cap.shape)
    for kind, block in blocks:
        for parent, attr, lin in block_linears(block):
            s = None
            if p.qv_smooth:
                w = lin.weight.detach().float()
                w_rot = w if signs[id(lin)] is None else rotate(w, signs[id(lin)].to(w.device))
                s = smoothing_factors(scene_absmax(cap.absmax[id(lin)], sel, kind).to(w.device),
                                      w_rot.abs().amax(dim=0), p.qv_alpha)
            setattr(parent, attr, QVLinear(lin, p.qv_w_bits, p.qv_a_bits, signs[id(lin)], s,
                                           lwc=p.qv_lwc and learn, lac=p.qv_lac and learn))
    if learn:
        with torch.inference_mode(False), torch.enable_grad():
            for bi, (_, block) in enumerate(blocks):
                reconstruct_block(block, cap.io[bi], mask, cap.shape, p)
    cap.io.clear()
    for _, block in blocks:
        for m in block.modules():
            if isinstance(m, QVLinear):
                m.fold()
    return q


# ----------------------------------------------------------------------------- work


def linear_bops(tokens: int, in_features: int, out_features: int, w_bits: int, a_bits: int) -> float:
    """BOPs of one linear layer over ``tokens`` tokens: MACs (tokens x in x out) x w_bits x a_bits."""
    return float(tokens) * in_features * out_features * w_bits * a_bits


def counted_bits(bits: int) -> int:
    """Bits an operand counts for in BOPs: its width, or 32 when it is not quantized."""
    return FLOAT_BITS if bits >= OFF_BITS else bits


def count_bops(model: nn.Module, frames: int, tokens_per_frame: int) -> dict[str, float]:
    """BOPs of the aggregator's frame and global blocks' linear layers (qkv, proj, fc1, fc2) for one
    forward of one scene of ``frames`` frames of ``tokens_per_frame`` tokens: ``bops`` with each
    layer's bits (a float layer: 32 x 32), ``bops_fp`` all at 32 x 32. Not counted: the patch
    embedding, the heads, the attention matmuls, the online Hadamard transforms, norms."""
    tokens = frames * tokens_per_frame
    bops = bops_fp = 0.0
    for _, block in aggregator_blocks(model):
        for _, _, lin in block_linears(block):
            wb, ab = ((counted_bits(lin.w_bits), counted_bits(lin.a_bits)) if isinstance(lin, QVLinear)
                      else (FLOAT_BITS, FLOAT_BITS))
            bops += linear_bops(tokens, lin.in_features, lin.out_features, wb, ab)
            bops_fp += linear_bops(tokens, lin.in_features, lin.out_features, FLOAT_BITS, FLOAT_BITS)
    return {"bops": bops, "bops_fp": bops_fp}


def _vggt_method(p: QuantVGGTParams, attention_fn=None) -> VGGTMethod:
    def transform(model: nn.Module, run: CalibrationRun) -> nn.Module:
        return quantize_vggt(model, run, p)

    return VGGTMethod(attention_fn=attention_fn, model_transform=transform, work_counters=count_bops)


@register_method("quantvggt", params=QuantVGGTParams, workloads=("vggt",),
                 doc="QuantVGGT W{w}A{a} post-training fake quantization of the aggregator's linear "
                     "layers (Hadamard rotation + smoothing, arXiv 2509.21302)")
def make_quantvggt(p: QuantVGGTParams) -> VGGTMethod:
    """MethodSpec.build for ``quantvggt``: a model transform and BOP counters, plain attention."""
    return _vggt_method(p)


# ----------------------------------------------------------------------------- stacked with HTTM


@dataclass(frozen=True)
class QuantHTTMParams(QuantVGGTParams, HTTMParams):
    """QuantVGGT's knobs (``qv_*``) and HTTM's, in one point."""

    def __post_init__(self) -> None:
        QuantVGGTParams.__post_init__(self)
        post = getattr(HTTMParams, "__post_init__", None)
        if post is not None:
            post(self)

    def part(self, cls: type):
        """The ``cls`` (QuantVGGTParams or HTTMParams) made of this point's fields."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    def seam_peak_bytes(self, shape: SeamShape) -> dict[str, float]:
        """HTTM's temporaries at the seam (the model terms are QuantVGGT's, inherited)."""
        return self.part(HTTMParams).seam_peak_bytes(shape)


@register_method("quantvggt_httm", params=QuantHTTMParams, workloads=("vggt",),
                 doc="QuantVGGT fake quantization of the aggregator stacked with HTTM token merging")
def make_quantvggt_httm(p: QuantHTTMParams) -> VGGTMethod:
    """MethodSpec.build for ``quantvggt_httm``: HTTM at the global-attention seam of the quantized
    model (calibrated with plain attention, as ``run`` gives it)."""
    return _vggt_method(p.part(QuantVGGTParams), attention_fn=make_httm(p.part(HTTMParams)))
