"""DPT head (depth, point map, and the track head's feature extractor).

For each of 4 aggregator layers: patch tokens -> shared LayerNorm -> map [B*S, 2C, h, w] ->
1x1 projection -> (+0.1 * UV sin/cos embedding) -> resize (x4 deconv, x2 deconv, identity,
/2 conv). A RefineNet-style fusion ("scratch") merges them coarse to fine, the result is
resized to the image size (/down_ratio), and 3x3 + 1x1 convs give value + confidence.

Quirk kept from upstream: the residual conv unit applies an in-place ReLU to its input, so its
skip carries relu(x), not x. Frames are processed in chunks of ``frames_chunk_size`` (memory
only; the result is the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_INT_MAX = 1_500_000_000  # upstream splits interpolations bigger than this (int32 indexing limits)


def interpolate(x: torch.Tensor, size: tuple[int, int], *, align_corners: bool = True) -> torch.Tensor:
    """Bilinear resize of [N, C, h, w] to ``size``, chunked over N for very large outputs."""
    total = size[0] * size[1] * x.shape[0] * x.shape[1]
    if total <= _INT_MAX:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
    chunks = (total // _INT_MAX) + 1
    parts = [
        F.interpolate(c, size=size, mode="bilinear", align_corners=align_corners)
        for c in torch.chunk(x, chunks, dim=0)
    ]
    return torch.cat(parts, dim=0).contiguous()


def make_sincos_embed(dim: int, pos: torch.Tensor, omega_0: float = 100.0) -> torch.Tensor:
    """1-D sin/cos embedding in double precision: pos [M] -> [M, dim] float32, laid out [sin | cos]."""
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / omega_0**omega
    angles = torch.outer(pos.reshape(-1).to(torch.float64), omega)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def uv_embedding(width: int, height: int, aspect_ratio: float, channels: int, device, dtype) -> torch.Tensor:
    """UV position embedding [channels, height, width] of a feature map (x part first, then y).

    x spans +-(a / sqrt(a^2 + 1)) * (w - 1) / w and y spans +-(1 / sqrt(a^2 + 1)) * (h - 1) / h,
    with a = W / H of the image.
    """
    diag = (aspect_ratio**2 + 1.0) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1.0 / diag
    xs = torch.linspace(
        -span_x * (width - 1) / width, span_x * (width - 1) / width, steps=width, dtype=dtype, device=device
    )
    ys = torch.linspace(
        -span_y * (height - 1) / height,
        span_y * (height - 1) / height,
        steps=height,
        dtype=dtype,
        device=device,
    )
    uu, vv = torch.meshgrid(xs, ys, indexing="xy")  # [h, w] each
    emb_x = make_sincos_embed(channels // 2, uu.reshape(-1))
    emb_y = make_sincos_embed(channels // 2, vv.reshape(-1))
    return torch.cat([emb_x, emb_y], dim=-1).view(height, width, channels).permute(2, 0, 1)


def add_uv_embedding(x: torch.Tensor, image_w: int, image_h: int, ratio: float = 0.1) -> torch.Tensor:
    """x: [N, C, h, w] -> x + ratio * uv_embedding (aspect ratio of the image)."""
    emb = uv_embedding(x.shape[-1], x.shape[-2], image_w / image_h, x.shape[1], x.device, x.dtype)
    return x + (emb * ratio)[None]


def activate_head(
    out: torch.Tensor, activation: str, conf_activation: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """out [N, D+1, H, W] -> (value [N, H, W, D], conf [N, H, W])."""
    fmap = out.permute(0, 2, 3, 1)
    value, conf = fmap[..., :-1], fmap[..., -1]
    if activation == "exp":
        value = torch.exp(value)
    elif activation == "inv_log":
        value = torch.sign(value) * torch.expm1(torch.abs(value))
    elif activation == "linear":
        pass
    else:
        raise ValueError(f"unknown DPT activation {activation!r}; allowed: exp, inv_log, linear")
    if conf_activation == "expp1":
        conf = 1 + conf.exp()
    elif conf_activation == "expp0":
        conf = conf.exp()
    elif conf_activation == "sigmoid":
        conf = torch.sigmoid(conf)
    else:
        raise ValueError(f"unknown DPT conf activation {conf_activation!r}; allowed: expp1, expp0, sigmoid")
    return value, conf


class ResidualConvUnit(nn.Module):
    """relu(x) + conv2(relu(conv1(relu(x)))) (the skip carries relu(x), as upstream)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        return self.conv2(torch.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """out = RCU2(x0 [+ RCU1(x1)]) -> bilinear resize (align_corners) -> 1x1 out_conv."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.has_residual = has_residual
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor | None = None, size=None) -> torch.Tensor:
        out = x0
        if self.has_residual and x1 is not None:
            out = out + self.resConfUnit1(x1)
        out = self.resConfUnit2(out)
        if size is None:
            size = (out.shape[-2] * 2, out.shape[-1] * 2)
        out = interpolate(out, tuple(size), align_corners=True)
        return self.out_conv(out)


class DPTHead(nn.Module):
    """Dense head over 4 aggregator layers.

    Output (feature_only=False): value [B, S, H, W, output_dim-1] and conf [B, S, H, W].
    Output (feature_only=True): features [B, S, features, H/down_ratio, W/down_ratio].
    """

    def __init__(
        self,
        dim_in: int,
        *,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        features: int = 256,
        out_channels: tuple[int, ...] = (256, 512, 1024, 1024),
        intermediate_layer_idx: tuple[int, ...] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
        frames_chunk_size: int = 8,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = tuple(intermediate_layer_idx)
        self.frames_chunk_size = frames_chunk_size
        oc = out_channels
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, c, kernel_size=1) for c in oc])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        scratch = nn.Module()
        for i, c in enumerate(oc, start=1):
            setattr(scratch, f"layer{i}_rn", nn.Conv2d(c, features, kernel_size=3, padding=1, bias=False))
        scratch.refinenet1 = FeatureFusionBlock(features)
        scratch.refinenet2 = FeatureFusionBlock(features)
        scratch.refinenet3 = FeatureFusionBlock(features)
        scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        if feature_only:
            scratch.output_conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        else:
            scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
            scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, output_dim, kernel_size=1),
            )
        self.scratch = scratch

    def forward(
        self, layer_outputs, images: torch.Tensor, patch_start_idx: int, frames_chunk_size: int | None = None
    ):
        """layer_outputs: indexable by layer -> [B, S, P, 2C]; images: [B, S, 3, H, W]."""
        S = images.shape[1]
        chunk = frames_chunk_size or self.frames_chunk_size
        if chunk >= S:
            return self._forward_frames(layer_outputs, images, patch_start_idx, 0, S)
        parts = [
            self._forward_frames(layer_outputs, images, patch_start_idx, s, min(s + chunk, S))
            for s in range(0, S, chunk)
        ]
        if self.feature_only:
            return torch.cat(parts, dim=1)
        return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)

    def _forward_frames(
        self, layer_outputs, images: torch.Tensor, patch_start_idx: int, start: int, end: int
    ):
        B, _, _, H, W = images.shape
        S = end - start
        patch_h, patch_w = H // self.patch_size, W // self.patch_size
        dtype = self.norm.weight.dtype
        feats = []
        for k, layer in enumerate(self.intermediate_layer_idx):
            x = layer_outputs[layer][:, start:end, patch_start_idx:].to(dtype)
            x = self.norm(x.reshape(B * S, -1, x.shape[-1]))
            x = x.permute(0, 2, 1).reshape(B * S, x.shape[-1], patch_h, patch_w)
            x = self.projects[k](x)
            if self.pos_embed:
                x = add_uv_embedding(x, W, H)
            feats.append(self.resize_layers[k](x))
        out = self._fuse(feats)
        size = (
            int(patch_h * self.patch_size / self.down_ratio),
            int(patch_w * self.patch_size / self.down_ratio),
        )
        out = interpolate(out, size, align_corners=True)
        if self.pos_embed:
            out = add_uv_embedding(out, W, H)
        if self.feature_only:
            return out.view(B, S, *out.shape[1:])
        out = self.scratch.output_conv2(out)
        value, conf = activate_head(out, self.activation, self.conf_activation)
        return value.view(B, S, *value.shape[1:]), conf.view(B, S, *conf.shape[1:])

    def _fuse(self, feats: list[torch.Tensor]) -> torch.Tensor:
        sc = self.scratch
        l1, l2, l3, l4 = (getattr(sc, f"layer{i}_rn")(f) for i, f in enumerate(feats, start=1))
        out = sc.refinenet4(l4, size=l3.shape[2:])
        out = sc.refinenet3(out, l3, size=l2.shape[2:])
        out = sc.refinenet2(out, l2, size=l1.shape[2:])
        out = sc.refinenet1(out, l1)
        return sc.output_conv1(out)
