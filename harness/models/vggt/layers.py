"""Transformer building blocks shared by the aggregator, the DINO backbone and the camera head.

Module and parameter names (``norm1``, ``attn.qkv``, ``attn.q_norm``, ``ls1.gamma``,
``mlp.fc1`` ...) follow the official VGGT checkpoint so that it loads strictly.

Global-attention seam: :class:`Attention` hands q, k, v (after qk-norm and 2-D RoPE) to an
``attention_fn(q, k, v, layout)`` when one is given (global blocks), else it calls plain SDPA
(frame blocks, DINO blocks, camera trunk).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.seam import AttentionFn, AttentionLayout


def init_normal_(param: torch.Tensor, std: float = 1.0) -> None:
    """normal_(0, std) in place; a no-op on the meta device (where init ops are slow and pointless)."""
    if not param.is_meta:
        with torch.no_grad():
            param.normal_(0.0, std)


class LayerScale(nn.Module):
    """Per-channel residual scaling ``x * gamma`` (gamma: [C], initialised to ``init_values``)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU (exact erf) -> fc2.  x: [..., in] -> [..., out]."""

    def __init__(
        self, in_features: int, hidden_features: int, out_features: int | None = None, bias: bool = True
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RoPE2D(nn.Module):
    """2-D rotary position embedding (rotate-half style), parameter-free.

    The head dim D is split in two halves: the first half is rotated by the row position
    ``pos[..., 0]`` (y), the second by the column position ``pos[..., 1]`` (x). In a half of
    size d the frequencies are ``freq ** (-2j / d)`` for j < d/2, tiled twice; a vector v of
    that half becomes ``v * cos + rotate_half(v) * sin`` with ``rotate_half([u, w]) = [-w, u]``.
    Position 0 is the identity rotation.

    cos/sin tables are built per (d, length, device, dtype) with the angles cast to the token
    dtype before cos/sin (as upstream) and looked up by integer position.
    """

    def __init__(self, freq: float = 100.0) -> None:
        super().__init__()
        self.freq = float(freq)
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(
        self, dim: int, length: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin tables ``[length, dim]`` for positions 0..length-1 of one half of size ``dim``."""
        key = (dim, length, device, dtype)
        cached = self._tables.get(key)
        if cached is None:
            exponents = torch.arange(0, dim, 2, device=device).float() / dim
            inv_freq = 1.0 / (self.freq**exponents)
            positions = torch.arange(length, device=device, dtype=inv_freq.dtype)
            angles = torch.outer(positions, inv_freq).to(dtype)
            angles = torch.cat((angles, angles), dim=-1)
            cached = (angles.cos().to(dtype), angles.sin().to(dtype))
            self._tables[key] = cached
        return cached

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def _rotate(
        self, x: torch.Tensor, pos: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor
    ) -> torch.Tensor:
        cos = F.embedding(pos, cos_t)[:, None]  # [B, 1, N, d]
        sin = F.embedding(pos, sin_t)[:, None]
        return x * cos + self._rotate_half(x) * sin

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor, num_positions: int | None = None
    ) -> torch.Tensor:
        """tokens: [B, H, N, D]; positions: [B, N, 2] integer (y, x) -> [B, H, N, D].

        num_positions: table length (> every position); when None it is read from
        ``positions.max()``, which synchronises with the device.
        """
        if tokens.shape[-1] % 4 != 0:
            raise ValueError(f"RoPE2D needs a head dim divisible by 4, got {tokens.shape[-1]}")
        if num_positions is None:
            num_positions = int(positions.max()) + 1
        half = tokens.shape[-1] // 2
        cos_t, sin_t = self.tables(half, num_positions, tokens.device, tokens.dtype)
        y_part, x_part = tokens.chunk(2, dim=-1)
        y_part = self._rotate(y_part, positions[..., 0], cos_t, sin_t)
        x_part = self._rotate(x_part, positions[..., 1], cos_t, sin_t)
        return torch.cat((y_part, x_part), dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention with optional qk-norm and 2-D RoPE.

    qkv: Linear C -> 3C; q_norm/k_norm: LayerNorm over the head dim (eps 1e-5, shared
    across heads) when ``qk_norm``; proj: Linear C -> C.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm: bool = False,
        rope: RoPE2D | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"Attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.rope = rope  # parameter-free, shared by every block of the aggregator

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        *,
        num_positions: int | None = None,
        attention_fn: AttentionFn | None = None,
        layout: AttentionLayout | None = None,
    ) -> torch.Tensor:
        """x: [B, N, C] (already normed), pos: [B, N, 2] -> [B, N, C].

        With ``attention_fn`` the core ``softmax(q k^T / sqrt(d)) v`` is replaced by
        ``attention_fn(q, k, v, layout)`` where ``layout.x_norm`` is set to ``x``.
        """
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, H, N, d]
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None and pos is not None:
            q = self.rope(q, pos, num_positions)
            k = self.rope(k, pos, num_positions)
        if attention_fn is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            if layout is None:
                raise ValueError("Attention: an attention_fn needs a layout")
            out = attention_fn(q, k, v, dataclasses.replace(layout, x_norm=x))
            if out.shape != q.shape:
                raise ValueError(
                    f"attention_fn returned shape {tuple(out.shape)} for layer {layout.layer}; "
                    f"it must return the shape of q {tuple(q.shape)}"
                )
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block: ``x += ls1(attn(norm1(x)))``; ``x += ls2(mlp(norm2(x)))``.

    norm_eps: 1e-5 for aggregator / camera-head blocks, 1e-6 for DINO blocks.
    init_values: LayerScale init (``ls1.gamma``/``ls2.gamma``); None means no LayerScale.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: float | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        rope: RoPE2D | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(
            dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm, rope=rope
        )
        self.ls1 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values is not None else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        *,
        num_positions: int | None = None,
        attention_fn: AttentionFn | None = None,
        layout: AttentionLayout | None = None,
    ) -> torch.Tensor:
        """x: [B, N, C], pos: [B, N, 2] or None -> [B, N, C]."""
        attn = self.attn(
            self.norm1(x), pos, num_positions=num_positions, attention_fn=attention_fn, layout=layout
        )
        x = x + self.ls1(attn)
        return x + self.ls2(self.mlp(self.norm2(x)))


def patch_positions(batch: int, patch_h: int, patch_w: int, num_special: int, device) -> torch.Tensor:
    """RoPE positions of one frame's tokens, repeated for ``batch`` rows.

    Returns a contiguous [batch, num_special + patch_h * patch_w, 2] int64 tensor: the special
    tokens at (0, 0), then the patches in row-major order at (y + 1, x + 1) (offset only when
    num_special > 0).
    """
    ys = torch.arange(patch_h, device=device)
    xs = torch.arange(patch_w, device=device)
    grid = torch.cartesian_prod(ys, xs)  # [h*w, 2] as (y, x), row-major
    if grid.dim() == 1:  # cartesian_prod of two length-1 vectors returns [2]
        grid = grid.view(-1, 2)
    if num_special > 0:
        grid = grid + 1
        grid = torch.cat([torch.zeros(num_special, 2, dtype=grid.dtype, device=device), grid], dim=0)
    return grid.unsqueeze(0).expand(batch, -1, -1).contiguous()
