"""Analytic work of a Swin Transformer: MACs per operation, BOPs with per-window bit widths.

MACs (multiply-accumulates, per image) follow what timm computes:

- patch embedding: a conv, ``Hg*Wg * C0 * in_chans * p^2``;
- per block, per window of N = M^2 tokens (padded windows included, as timm runs attention on
  the zero-padded map): qkv ``N*C*3A``, proj ``N*A*C``, q.k^T ``N^2*A`` and attn.v ``N^2*A``
  (A = heads * head_dim, the attention width; A = C in every standard Swin);
- per block, per *real* token (timm's MLP runs after the crop): fc1 ``C*Hd`` and fc2 ``Hd*C``
  (Hd = mlp hidden width); a window's MLP MACs count only its real tokens;
- patch merging: ``H'*W' * 4C * C_out``; classifier: ``features * classes``.

FLOPs = 2 * MACs for every one of these (``torch.utils.flop_counter`` agrees; see the tests).

BOPs (bit operations) = sum over products of MACs x bits of the two operands:

- weight x activation (qkv, proj, fc1, fc2): ``MACs * b_w * b_a`` with the window's b_a;
- activation x activation (q.k^T, attn.v), ``act_act_convention``:
  ``"product"``: ``MACs * b_a * b_a``;
  ``"linear"`` (default, matches the MixA-Q tables, see spec section 3): ``MACs * b_w * b_a``,
  i.e. counted like a weight product, so BOPs are linear in b_a and speedup = b_hi / b_eq;
- patch embedding, patch merging and the head: ``MACs * embed_bits * embed_bits``;
- a pruned window (bits 0) costs nothing in that block.

The float model is counted at 32 x 32 bits everywhere (the paper's FP row is 8x its W4A4 row;
that table seems to count weights at 32 bits throughout, which this module does not copy).

Equivalent activation bits ``b_eq``: the uniform block activation width whose BOPs (all other
parts unchanged) equal the given BOPs: linear in b under "linear", a quadratic under "product".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

ACT_ACT_CONVENTIONS = ("linear", "product")
FLOAT_BITS = 32


def _inner(m: nn.Module) -> nn.Module:
    """Unwrap a quantization wrapper (``QuantIO.inner``) or a two-branch block (``QSwinBlock.block``)."""
    for attr in ("inner", "block"):
        if hasattr(m, attr) and isinstance(getattr(m, attr), nn.Module):
            return getattr(m, attr)
    return m


@dataclass(frozen=True)
class BlockGeometry:
    """Shape facts of one Swin block. resolution: (H, W) tokens; window/shift: (h, w)."""

    stage: int
    index: int
    dim: int
    attn_dim: int
    heads: int
    hidden: int
    resolution: tuple[int, int]
    window: tuple[int, int]
    shift: tuple[int, int]

    @property
    def padded(self) -> tuple[int, int]:
        (H, W), (wh, ww) = self.resolution, self.window
        return math.ceil(H / wh) * wh, math.ceil(W / ww) * ww

    @property
    def n_windows(self) -> int:
        (Hp, Wp), (wh, ww) = self.padded, self.window
        return (Hp // wh) * (Wp // ww)

    @property
    def tokens_per_window(self) -> int:
        return self.window[0] * self.window[1]

    def real_tokens(self) -> torch.Tensor:
        """Real (non-padded) tokens per window, [nW] int64, in timm's window order. Padding
        comes after the cyclic shift, so regular and shifted partitions count the same."""
        (H, W), (Hp, Wp), (wh, ww) = self.resolution, self.padded, self.window
        real = torch.zeros(Hp, Wp, dtype=torch.int64)
        real[:H, :W] = 1
        return real.reshape(Hp // wh, wh, Wp // ww, ww).sum(dim=(1, 3)).reshape(-1)

    def op_macs_per_window(self) -> dict[str, torch.Tensor]:
        """MACs per window and operation: qkv, proj, qk, av, fc1, fc2 -> [nW] float64 each."""
        N, C, A, Hd = self.tokens_per_window, self.dim, self.attn_dim, self.hidden
        ones = torch.ones(self.n_windows, dtype=torch.float64)
        real = self.real_tokens().double()
        return {
            "qkv": ones * (N * C * 3 * A),
            "proj": ones * (N * A * C),
            "qk": ones * (N * N * A),
            "av": ones * (N * N * A),
            "fc1": real * (C * Hd),
            "fc2": real * (Hd * C),
        }

    def macs(self) -> dict[str, float]:
        """MACs of the whole block per operation (all windows)."""
        return {k: float(v.sum()) for k, v in self.op_macs_per_window().items()}


WEIGHT_OPS = ("qkv", "proj", "fc1", "fc2")
ACT_ACT_OPS = ("qk", "av")


@dataclass(frozen=True)
class SwinGeometry:
    """Shape facts of a whole Swin (per image): blocks plus the non-block MACs."""

    blocks: tuple[BlockGeometry, ...]
    patch_embed_macs: float
    merging_macs: tuple[float, ...]
    head_macs: float

    @classmethod
    def from_model(cls, model: nn.Module) -> SwinGeometry:
        """Read the geometry of a timm ``SwinTransformer`` or its quantized copy."""
        proj = _inner(model.patch_embed.proj)
        gh, gw = model.patch_embed.grid_size
        kh, kw = proj.kernel_size
        pe = float(gh * gw * proj.out_channels * proj.in_channels * kh * kw)
        blocks, merges = [], []
        for si, stage in enumerate(model.layers):
            if not isinstance(stage.downsample, nn.Identity):
                red = _inner(stage.downsample.reduction)
                oh, ow = stage.output_resolution
                merges.append(float(oh * ow * red.in_features * red.out_features))
            for bi, b in enumerate(stage.blocks):
                blk = _inner(b)
                blocks.append(
                    BlockGeometry(
                        stage=si,
                        index=bi,
                        dim=blk.dim,
                        attn_dim=blk.attn.qkv.out_features // 3,
                        heads=blk.attn.num_heads,
                        hidden=blk.mlp.fc1.out_features,
                        resolution=tuple(blk.input_resolution),
                        window=tuple(blk.window_size),
                        shift=tuple(blk.shift_size),
                    )
                )
        fc = _inner(model.head.fc)
        head = float(fc.in_features * fc.out_features) if isinstance(fc, nn.Linear) else 0.0
        return cls(tuple(blocks), pe, tuple(merges), head)

    @property
    def other_macs(self) -> float:
        """MACs outside the Swin blocks (patch embedding, patch merging, head)."""
        return self.patch_embed_macs + sum(self.merging_macs) + self.head_macs


def model_macs(geom: SwinGeometry) -> dict[str, float]:
    """MACs per image by part: patch_embed, merging, head, each block op summed, blocks, total."""
    out = {"patch_embed": geom.patch_embed_macs, "merging": sum(geom.merging_macs), "head": geom.head_macs}
    for op in WEIGHT_OPS + ACT_ACT_OPS:
        out[op] = sum(b.macs()[op] for b in geom.blocks)
    out["blocks"] = sum(out[op] for op in WEIGHT_OPS + ACT_ACT_OPS)
    out["total"] = out["blocks"] + geom.other_macs
    return out


BlockBits = int | float | torch.Tensor
"""Activation bits of a block's windows: one number for every window, or [nW] / [B, nW]
(0 = pruned window); a [B, nW] tensor is averaged over the batch."""


def _check_convention(act_act_convention: str) -> None:
    if act_act_convention not in ACT_ACT_CONVENTIONS:
        raise ValueError(
            f"act_act_convention={act_act_convention!r}; allowed: {', '.join(ACT_ACT_CONVENTIONS)}"
        )


def block_bops(
    block: BlockGeometry, bits: BlockBits, w_bits: int, act_act_convention: str = "linear"
) -> float:
    """BOPs of one block per image with per-window activation bits (see module doc)."""
    _check_convention(act_act_convention)
    ops = block.op_macs_per_window()
    b = torch.as_tensor(bits).detach().to(device="cpu", dtype=torch.float64)
    if b.dim() == 0:
        b = b.expand(block.n_windows)
    if b.shape[-1] != block.n_windows:
        raise ValueError(
            f"block {block.stage}.{block.index}: {b.shape[-1]} window bits, {block.n_windows} windows"
        )
    b = b.reshape(-1, block.n_windows)  # [B, nW]
    lin = sum(ops[op] for op in WEIGHT_OPS)  # [nW]
    aa = sum(ops[op] for op in ACT_ACT_OPS)
    aa_bits = b * b if act_act_convention == "product" else b * w_bits
    total = (lin * w_bits * b + aa * aa_bits).sum(dim=1)  # [B]
    return float(total.mean())


def bops(
    geom: SwinGeometry,
    block_bits: BlockBits | list[BlockBits | None],
    w_bits: int,
    embed_bits: int,
    act_act_convention: str = "linear",
    default_bits: int | None = None,
) -> float:
    """BOPs per image. block_bits: one value for every block, or one entry per block (None:
    ``default_bits`` for every window of that block)."""
    if not isinstance(block_bits, (list, tuple)):
        block_bits = [block_bits] * len(geom.blocks)
    if len(block_bits) != len(geom.blocks):
        raise ValueError(f"{len(block_bits)} block bit entries for {len(geom.blocks)} blocks")
    total = geom.other_macs * embed_bits * embed_bits
    for blk, bits in zip(geom.blocks, block_bits):
        if bits is None:
            if default_bits is None:
                raise ValueError("a block entry is None but no default_bits was given")
            bits = default_bits
        total += block_bops(blk, bits, w_bits, act_act_convention)
    return total


def equivalent_act_bits(
    geom: SwinGeometry, target_bops: float, w_bits: int, embed_bits: int, act_act_convention: str = "linear"
) -> float:
    """The uniform block activation width b whose BOPs equal ``target_bops`` (may be fractional)."""
    _check_convention(act_act_convention)
    fixed = geom.other_macs * embed_bits * embed_bits
    m = model_macs(geom)
    lin = sum(m[op] for op in WEIGHT_OPS)
    aa = sum(m[op] for op in ACT_ACT_OPS)
    rest = target_bops - fixed
    if act_act_convention == "linear":
        return rest / ((lin + aa) * w_bits)
    # product: aa * b^2 + lin * w * b - rest = 0, positive root
    a, b_, c = aa, lin * w_bits, -rest
    if a == 0:
        return rest / b_
    return (-b_ + math.sqrt(b_ * b_ - 4 * a * c)) / (2 * a)


def float_bops(geom: SwinGeometry) -> float:
    """BOPs of the float model (32 x 32 bits everywhere)."""
    return bops(geom, FLOAT_BITS, FLOAT_BITS, FLOAT_BITS, "linear")
