"""Patch embeddings of the aggregator: a DINOv2 ViT with registers, or a bare conv.

The official checkpoint stores a complete DINOv2 ViT-L/14 with 4 register tokens under
``aggregator.patch_embed.*`` (cls_token, pos_embed, register_tokens, mask_token,
patch_embed.proj, blocks.i.*, norm). Depth, width and heads are configurable here so tiny
presets keep the same key layout. The aggregator keeps only the normed patch tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.vggt.layers import Block


class ConvPatchEmbed(nn.Module):
    """Non-overlapping conv patchify: [B, 3, H, W] -> [B, (H/p) * (W/p), C] (row-major)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
        return self.proj(x).flatten(2).transpose(1, 2)


def _init_vit_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class DinoViT(nn.Module):
    """DINOv2-style ViT with register tokens; returns the normed patch tokens.

    pos_embed is learned for an (img_size/patch)^2 grid plus the cls slot; other grids get a
    bicubic, antialiased resize of the patch part to (H/p, W/p). Token order inside the ViT:
    [cls, registers, patches]. Blocks: LayerNorm eps 1e-6, LayerScale, no qk-norm, no RoPE.
    """

    def __init__(
        self,
        *,
        img_size: int = 518,
        patch_size: int = 14,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        init_values: float = 1.0,
        interpolate_antialias: bool = True,
    ) -> None:
        super().__init__()
        grid = img_size // patch_size
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias = interpolate_antialias
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # unused at inference, in the checkpoint
        self.patch_embed = ConvPatchEmbed(patch_size, embed_dim)
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, init_values=init_values, norm_eps=1e-6)
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.pos_embed.is_meta:  # nothing to initialise (and init ops are slow on meta)
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)
        self.apply(_init_vit_linear)

    def interpolate_pos_encoding(self, num_patches: int, height: int, width: int, dtype) -> torch.Tensor:
        """Position embedding [1, 1 + h*w, C] for an image of height x width pixels."""
        n_ref = self.pos_embed.shape[1] - 1
        if num_patches == n_ref and height == width:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        m = int(math.sqrt(n_ref))
        h0, w0 = height // self.patch_size, width // self.patch_size
        patch_pos = F.interpolate(
            patch_pos.reshape(1, m, m, -1).permute(0, 3, 1, 2),
            size=(h0, w0),
            mode="bicubic",
            antialias=self.interpolate_antialias,
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)
        return torch.cat((cls_pos, patch_pos), dim=1).to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, 3, H, W] (normalized) -> normed patch tokens [B, (H/p)*(W/p), C]."""
        B, _, H, W = images.shape
        x = self.patch_embed(images)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x.shape[1] - 1, H, W, x.dtype)
        x = torch.cat((x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]), dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x[:, 1 + self.num_register_tokens :]
