"""Track head: a feature-only DPT head plus an iterative point tracker (CoTracker/VGGSfM style).

feature_extractor: DPT over the 4 intermediate layers, features at half resolution.
tracker: per iteration, correlation features from a multi-level pyramid around the current
track positions, a sin/cos embedding of the motion relative to the query frame and the track
features feed an update transformer (time attention per track, space attention through
virtual tracks) that outputs coordinate and feature deltas. Parameter names follow the
official checkpoint (including the misspelled ``virual_tracks``).

Output: a list of ``iters`` track estimates [B, S, N, 2] in input pixels, visibility
[B, S, N] and confidence [B, S, N] (both after a sigmoid).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.vggt.dpt_head import DPTHead
from harness.models.vggt.layers import Mlp, init_normal_


def bilinear_sample(x: torch.Tensor, coords: torch.Tensor, *, padding_mode: str = "border") -> torch.Tensor:
    """grid_sample with pixel coordinates (align_corners=True).

    x: [N, C, H, W]; coords: [N, Ho, Wo, 2] as (x, y) pixels -> [N, C, Ho, Wo].
    """
    H, W = x.shape[-2:]
    scale = torch.tensor([2 / max(W - 1, 1), 2 / max(H - 1, 1)], device=coords.device, dtype=x.dtype)
    grid = coords.to(x.dtype) * scale - 1
    return F.grid_sample(x, grid, align_corners=True, padding_mode=padding_mode)


def sample_points(fmap: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """fmap: [B, C, H, W]; points: [B, R, 2] (x, y) pixels -> [B, R, C] (border padding)."""
    B = fmap.shape[0]
    feats = bilinear_sample(fmap, points.unsqueeze(2))  # [B, C, R, 1]
    return feats.permute(0, 2, 1, 3).reshape(B, -1, feats.shape[1])


def motion_embedding(xy: torch.Tensor, channels: int) -> torch.Tensor:
    """Sin/cos embedding of 2-D offsets: xy [B, N, 2] -> [B, N, 2 * channels] (x part, then y).

    Frequencies ``arange(0, channels, 2) * 1000 / channels``; sin at even, cos at odd channels.
    """
    freqs = torch.arange(0, channels, 2, device=xy.device, dtype=xy.dtype) * (1000.0 / channels)
    parts = []
    for k in range(2):
        ang = xy[..., k : k + 1] * freqs
        pe = torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1).flatten(-2)  # interleaved sin, cos
        parts.append(pe)
    return torch.cat(parts, dim=-1)


def grid_sincos_embedding(channels: int, height: int, width: int) -> torch.Tensor:
    """2-D sin/cos embedding of a pixel grid: [1, channels, height, width] (x part first, then y).

    Each half is a 1-D embedding [sin | cos] with frequencies 10000^(-i / (channels / 4)),
    computed in double precision.
    """

    def one_d(dim: int, pos: torch.Tensor) -> torch.Tensor:
        omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        ang = torch.outer(pos.reshape(-1).to(torch.float64), omega)
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)

    xs = torch.arange(width, dtype=torch.float32)
    ys = torch.arange(height, dtype=torch.float32)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")  # [h, w]
    emb = torch.cat([one_d(channels // 2, gx), one_d(channels // 2, gy)], dim=1).float()
    return emb.reshape(1, height, width, channels).permute(0, 3, 1, 2)


class CorrPyramid:
    """Correlation of track features with a feature pyramid, sampled around track positions.

    fmaps: [B, S, C, H, W]; level l is average-pooled by 2^l.
    """

    def __init__(self, fmaps: torch.Tensor, num_levels: int, radius: int) -> None:
        self.radius = radius
        self.levels = [fmaps]
        cur = fmaps
        for _ in range(num_levels - 1):
            B, S, C, H, W = cur.shape
            cur = F.avg_pool2d(cur.reshape(B * S, C, H, W), kernel_size=2, stride=2)
            cur = cur.reshape(B, S, C, *cur.shape[-2:])
            self.levels.append(cur)
        r = torch.linspace(-radius, radius, 2 * radius + 1, device=fmaps.device, dtype=fmaps.dtype)
        # window[a, b] = (r[a], r[b]) added to (x, y): the x offset varies along the first axis (as upstream)
        self.window = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1)

    def sample(self, targets: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """targets: [B, S, N, C]; coords: [B, S, N, 2] -> [B, S, N, levels * (2r+1)^2]."""
        B, S, N, C = targets.shape
        side = 2 * self.radius + 1
        out = []
        for i, fmap in enumerate(self.levels):
            H, W = fmap.shape[-2:]
            corr = torch.matmul(targets, fmap.reshape(B, S, C, H * W)) / math.sqrt(C)  # [B, S, N, H*W]
            centre = coords.reshape(B * S * N, 1, 1, 2) / (2**i)
            grid = centre + self.window.to(coords.dtype).view(1, side, side, 2)
            sampled = bilinear_sample(corr.reshape(B * S * N, 1, H, W), grid, padding_mode="zeros")
            out.append(sampled.reshape(B, S, N, -1))
        return torch.cat(out, dim=-1)


class AttnBlock(nn.Module):
    """x = norm1(x); x = x + MHA(x, x, x); x = x + mlp(norm2(x))  (the residual starts after norm1)."""

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, num_heads, batch_first=True)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """x = norm1(x); c = norm_context(c); x = x + MHA(x, c, c); x = x + mlp(norm2(x))."""

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.norm_context = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.cross_attn = nn.MultiheadAttention(hidden, num_heads, batch_first=True)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class UpdateFormer(nn.Module):
    """Update transformer: [B, N, T, in_dim] -> [B, N, T, out_dim] (time + virtual-track space attention)."""

    def __init__(
        self,
        *,
        depth: int,
        input_dim: int,
        hidden_size: int,
        num_heads: int,
        output_dim: int,
        num_virtual_tracks: int,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim)
        self.virual_tracks = nn.Parameter(torch.zeros(1, num_virtual_tracks, 1, hidden_size))
        init_normal_(self.virual_tracks)
        self.time_blocks = nn.ModuleList([AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.space_virtual_blocks = nn.ModuleList(
            [AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.space_point2virtual_blocks = nn.ModuleList(
            [CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.space_virtual2point_blocks = nn.ModuleList(
            [CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)]
        )
        if self.flow_head.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.input_transform(self.input_norm(x))
        init_tokens = tokens
        B, _, T, _ = tokens.shape
        V = self.num_virtual_tracks
        tokens = torch.cat([tokens, self.virual_tracks.repeat(B, 1, T, 1)], dim=1)
        N = tokens.shape[1]
        for i, time_block in enumerate(self.time_blocks):
            tokens = time_block(tokens.reshape(B * N, T, -1)).view(B, N, T, -1)
            space = tokens.permute(0, 2, 1, 3).reshape(B * T, N, -1)
            point, virtual = space[:, : N - V], space[:, N - V :]
            virtual = self.space_virtual2point_blocks[i](virtual, point)
            virtual = self.space_virtual_blocks[i](virtual)
            point = self.space_point2virtual_blocks[i](point, virtual)
            tokens = torch.cat([point, virtual], dim=1).view(B, T, N, -1).permute(0, 2, 1, 3)
        tokens = tokens[:, : N - V] + init_tokens
        return self.flow_head(self.output_norm(tokens))


class TrackerPredictor(nn.Module):
    """Iterative tracker on feature maps [B, S, C, h, w] at ``stride`` of the image."""

    def __init__(
        self,
        *,
        latent_dim: int = 128,
        hidden_size: int = 384,
        num_heads: int = 8,
        depth: int = 6,
        num_virtual_tracks: int = 64,
        corr_levels: int = 7,
        corr_radius: int = 4,
        stride: int = 2,
        max_scale: float = 518.0,
        predict_conf: bool = True,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.stride = stride
        self.max_scale = max_scale
        self.transformer_dim = 3 * latent_dim + 4
        self.query_ref_token = nn.Parameter(torch.zeros(1, 2, self.transformer_dim))
        init_normal_(self.query_ref_token)
        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden_size, latent_dim)
        self.updateformer = UpdateFormer(
            depth=depth,
            input_dim=self.transformer_dim,
            hidden_size=hidden_size,
            num_heads=num_heads,
            output_dim=latent_dim + 2,
            num_virtual_tracks=num_virtual_tracks,
        )
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1)) if predict_conf else None

    def forward(self, query_points: torch.Tensor, fmaps: torch.Tensor, iters: int = 4):
        """query_points: [B, N, 2] (x, y) pixels in frame 0; fmaps: [B, S, C, h, w].

        Returns (list of [B, S, N, 2] in pixels, vis [B, S, N], conf [B, S, N] or None).
        """
        B, N, _ = query_points.shape
        _, S, C, h, w = fmaps.shape
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        query = query_points / float(self.stride)
        coords = query.reshape(B, 1, N, 2).repeat(1, S, 1, 1)
        track_feats = sample_points(fmaps[:, 0], coords[:, 0]).unsqueeze(1).repeat(1, S, 1, 1)  # [B, S, N, C]
        coords_query = coords[:, 0].clone()
        pyramid = CorrPyramid(fmaps, self.corr_levels, self.corr_radius)
        pos_grid = grid_sincos_embedding(self.transformer_dim, h, w).to(
            device=query.device, dtype=query.dtype
        )
        pos_emb = sample_points(pos_grid.expand(B, -1, -1, -1), coords[:, 0]).reshape(B * N, 1, -1)
        ref = torch.cat(
            [self.query_ref_token[:, 0:1], self.query_ref_token[:, 1:2].expand(-1, S - 1, -1)], dim=1
        )

        preds = []
        for _ in range(iters):
            coords = coords.detach()
            corr = pyramid.sample(track_feats, coords)  # [B, S, N, L]
            corr = self.corr_mlp(corr.permute(0, 2, 1, 3).reshape(B * N, S, -1))
            flows = (coords - coords[:, 0:1]).permute(0, 2, 1, 3).reshape(B * N, S, 2)
            flows_emb = motion_embedding(flows, self.latent_dim // 2)
            flows_emb = torch.cat([flows_emb, flows / self.max_scale, flows / self.max_scale], dim=-1)
            feats = track_feats.permute(0, 2, 1, 3).reshape(B * N, S, self.latent_dim)
            x = torch.cat([flows_emb, corr, feats], dim=2) + pos_emb
            x = (x + ref.to(x.dtype)).reshape(B, N, S, -1)
            delta = self.updateformer(x).reshape(B * N, S, -1)
            d_coords, d_feats = delta[..., :2], delta[..., 2:]
            feats = feats.reshape(B * N * S, self.latent_dim)
            feats = self.ffeat_updater(self.ffeat_norm(d_feats.reshape(B * N * S, self.latent_dim))) + feats
            track_feats = feats.reshape(B, N, S, self.latent_dim).permute(0, 2, 1, 3)
            coords = coords + d_coords.reshape(B, N, S, 2).permute(0, 2, 1, 3)
            coords = torch.cat([coords_query.unsqueeze(1), coords[:, 1:]], dim=1)  # frame 0 stays the query
            preds.append(coords * self.stride)

        flat = track_feats.reshape(B * S * N, self.latent_dim)
        vis = torch.sigmoid(self.vis_predictor(flat).reshape(B, S, N))
        conf = (
            torch.sigmoid(self.conf_predictor(flat).reshape(B, S, N))
            if self.conf_predictor is not None
            else None
        )
        return preds, vis, conf


class TrackHead(nn.Module):
    """Layer outputs + images + query points -> (tracks per iteration, vis, conf)."""

    def __init__(
        self,
        dim_in: int,
        *,
        patch_size: int = 14,
        features: int = 128,
        out_channels: tuple[int, ...] = (256, 512, 1024, 1024),
        intermediate_layer_idx: tuple[int, ...] = (4, 11, 17, 23),
        iters: int = 4,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        hidden_size: int = 384,
        num_heads: int = 8,
        depth: int = 6,
        num_virtual_tracks: int = 64,
        frames_chunk_size: int = 8,
    ) -> None:
        super().__init__()
        self.iters = iters
        self.feature_extractor = DPTHead(
            dim_in,
            patch_size=patch_size,
            features=features,
            out_channels=out_channels,
            intermediate_layer_idx=intermediate_layer_idx,
            pos_embed=False,
            feature_only=True,
            down_ratio=2,
            frames_chunk_size=frames_chunk_size,
        )
        self.tracker = TrackerPredictor(
            latent_dim=features,
            hidden_size=hidden_size,
            num_heads=num_heads,
            depth=depth,
            num_virtual_tracks=num_virtual_tracks,
            corr_levels=corr_levels,
            corr_radius=corr_radius,
            stride=stride,
        )

    def forward(
        self,
        layer_outputs,
        images: torch.Tensor,
        patch_start_idx: int,
        query_points: torch.Tensor,
        iters: int | None = None,
    ):
        """images: [B, S, 3, H, W]; query_points: [B, N, 2] pixels in frame 0."""
        fmaps = self.feature_extractor(layer_outputs, images, patch_start_idx)
        return self.tracker(query_points, fmaps, iters or self.iters)
