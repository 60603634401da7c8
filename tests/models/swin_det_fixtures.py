"""An mmdetection-layout Swin Mask R-CNN checkpoint written by hand, and functional references of
mmdetection's backbone, neck and RoI heads that read it by mmdet's key names.

Used by ``tests/models/test_swin_det.py``. Nothing here imports :mod:`harness.models.mmdet_keys`:
the key names and shapes are spelled out as mmdetection's released files carry them
(``mask_rcnn_swin-t-p4-w7_fpn_1x_coco``), and the references follow mmdetection 3.x's code
(``mmdet/models/backbones/swin.py``: ``ShiftWindowMSA`` pads, then shifts, then masks on the
padded map; ``mmdet/models/layers/transformer/utils.py``: ``PatchMerging`` with ``nn.Unfold``;
``FPN``, ``Shared2FCBBoxHead``, ``FCNMaskHead``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: A small detector: the block structure of Swin-T with narrow layers (the tests' model).
SMALL = dict(num_classes=3, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)
SMALL_WIDTHS = dict(fpn_channels=32, box_fc_channels=64, mask_channels=32)
#: Swin-T Mask R-CNN as released by mmdetection.
SWIN_T = dict(num_classes=80, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)
SWIN_T_WIDTHS = dict(fpn_channels=256, box_fc_channels=1024, mask_channels=256)
ANCHORS_PER_LOCATION = 3
ROI = 7


def mmdet_relative_position_index(window: int) -> torch.Tensor:
    """mmdet's ``WindowMSA`` buffer: ``double_step_seq(2M - 1, M, 1, M)``, added to its transpose,
    flipped along dim 1 -> [M*M, M*M] int64."""
    seq = (torch.arange(0, (2 * window - 1) * window, 2 * window - 1)[:, None]
           + torch.arange(0, window)[None, :]).reshape(1, -1)
    return (seq + seq.T).flip(1).contiguous()


def mmdet_shapes(cfg: dict, widths: dict) -> dict[str, tuple[int, ...]]:
    """Every parameter of an mmdet Swin Mask R-CNN state dict with its shape (no buffers)."""
    E, depths, heads = cfg["embed_dim"], cfg["depths"], cfg["num_heads"]
    M, K = cfg["window_size"], cfg["num_classes"]
    Fc, FC, Mc = widths["fpn_channels"], widths["box_fc_channels"], widths["mask_channels"]
    s: dict[str, tuple[int, ...]] = {
        "backbone.patch_embed.projection.weight": (E, 3, 4, 4), "backbone.patch_embed.projection.bias": (E,),
        "backbone.patch_embed.norm.weight": (E,), "backbone.patch_embed.norm.bias": (E,),
    }
    for i, depth in enumerate(depths):
        C = E * 2**i
        for j in range(depth):
            p = f"backbone.stages.{i}.blocks.{j}."
            s.update({
                p + "norm1.weight": (C,), p + "norm1.bias": (C,),
                p + "attn.w_msa.relative_position_bias_table": ((2 * M - 1) ** 2, heads[i]),
                p + "attn.w_msa.qkv.weight": (3 * C, C), p + "attn.w_msa.qkv.bias": (3 * C,),
                p + "attn.w_msa.proj.weight": (C, C), p + "attn.w_msa.proj.bias": (C,),
                p + "norm2.weight": (C,), p + "norm2.bias": (C,),
                p + "ffn.layers.0.0.weight": (4 * C, C), p + "ffn.layers.0.0.bias": (4 * C,),
                p + "ffn.layers.1.weight": (C, 4 * C), p + "ffn.layers.1.bias": (C,),
            })
        if i + 1 < len(depths):
            p = f"backbone.stages.{i}.downsample."
            s.update({p + "norm.weight": (4 * C,), p + "norm.bias": (4 * C,),
                      p + "reduction.weight": (2 * C, 4 * C)})
    for i in range(len(depths)):
        C = E * 2**i
        s.update({f"backbone.norm{i}.weight": (C,), f"backbone.norm{i}.bias": (C,)})
    for i in range(len(depths)):
        s.update({f"neck.lateral_convs.{i}.conv.weight": (Fc, E * 2**i, 1, 1),
                  f"neck.lateral_convs.{i}.conv.bias": (Fc,)})
    for i in range(len(depths)):
        s.update({f"neck.fpn_convs.{i}.conv.weight": (Fc, Fc, 3, 3), f"neck.fpn_convs.{i}.conv.bias": (Fc,)})
    A = ANCHORS_PER_LOCATION
    s.update({
        "rpn_head.rpn_conv.weight": (Fc, Fc, 3, 3), "rpn_head.rpn_conv.bias": (Fc,),
        "rpn_head.rpn_cls.weight": (A, Fc, 1, 1), "rpn_head.rpn_cls.bias": (A,),
        "rpn_head.rpn_reg.weight": (4 * A, Fc, 1, 1), "rpn_head.rpn_reg.bias": (4 * A,),
        "roi_head.bbox_head.fc_cls.weight": (K + 1, FC), "roi_head.bbox_head.fc_cls.bias": (K + 1,),
        "roi_head.bbox_head.fc_reg.weight": (4 * K, FC), "roi_head.bbox_head.fc_reg.bias": (4 * K,),
        "roi_head.bbox_head.shared_fcs.0.weight": (FC, Fc * ROI * ROI),
        "roi_head.bbox_head.shared_fcs.0.bias": (FC,),
        "roi_head.bbox_head.shared_fcs.1.weight": (FC, FC), "roi_head.bbox_head.shared_fcs.1.bias": (FC,),
    })
    for i in range(4):
        s.update({f"roi_head.mask_head.convs.{i}.conv.weight": (Mc, Fc if i == 0 else Mc, 3, 3),
                  f"roi_head.mask_head.convs.{i}.conv.bias": (Mc,)})
    s.update({
        "roi_head.mask_head.upsample.weight": (Mc, Mc, 2, 2), "roi_head.mask_head.upsample.bias": (Mc,),
        "roi_head.mask_head.conv_logits.weight": (K, Mc, 1, 1), "roi_head.mask_head.conv_logits.bias": (K,),
    })
    return s


def mmdet_state_dict(cfg: dict, widths: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values in the mmdet layout (norm weights near 1, the rest small), with the stored
    relative-position indices mmdet's files carry."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in mmdet_shapes(cfg, widths).items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        t = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        is_norm = ".norm" in key or "norm1" in key or "norm2" in key or key.startswith("backbone.norm")
        if is_norm and key.endswith("weight"):
            t = 1.0 + 0.2 * torch.randn(shape, generator=g)
        elif key.endswith("bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        sd[key] = t
        if key.endswith("relative_position_bias_table"):
            sd[key.replace("bias_table", "index")] = mmdet_relative_position_index(cfg["window_size"])
    return sd


# ----------------------------------------------------------------------------- mmdet's backbone


def mmdet_patch_merging(sd: dict, prefix: str, x: torch.Tensor, hw: tuple[int, int]):
    """mmdet ``PatchMerging``: x [B, H*W, C] -> ([B, H'*W', 2C], (H', W')); corner padding to even,
    ``nn.Unfold(2, stride=2)``, LayerNorm(4C), Linear(4C, 2C, bias=False)."""
    B, _, C = x.shape
    H, W = hw
    x = x.view(B, H, W, C).permute(0, 3, 1, 2)
    x = F.pad(x, (0, W % 2, 0, H % 2))
    H, W = x.shape[-2:]
    x = nn.Unfold(kernel_size=2, stride=2)(x).transpose(1, 2)
    x = F.layer_norm(x, (4 * C,), sd[prefix + "norm.weight"], sd[prefix + "norm.bias"])
    return F.linear(x, sd[prefix + "reduction.weight"]), (H // 2, W // 2)


def _window_attention(sd: dict, p: str, x: torch.Tensor, heads: int, M: int, mask) -> torch.Tensor:
    B_, N, C = x.shape
    qkv = F.linear(x, sd[p + "qkv.weight"], sd[p + "qkv.bias"]).reshape(B_, N, 3, heads, C // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = (q * (C // heads) ** -0.5) @ k.transpose(-2, -1)
    bias = sd[p + "relative_position_bias_table"][sd[p + "relative_position_index"].view(-1)]
    attn = attn + bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        attn = (attn.view(B_ // nW, nW, heads, N, N) + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, N, N)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B_, N, C)
    return F.linear(out, sd[p + "proj.weight"], sd[p + "proj.bias"])


def _shift_mask(Hp: int, Wp: int, M: int, s: int) -> torch.Tensor:
    img = torch.zeros(1, Hp, Wp, 1)
    cnt = 0
    for h in (slice(0, -M), slice(-M, -s), slice(-s, None)):
        for w in (slice(0, -M), slice(-M, -s), slice(-s, None)):
            img[:, h, w, :] = cnt
            cnt += 1
    win = img.view(1, Hp // M, M, Wp // M, M, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, M * M)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def mmdet_shift_window_msa(sd, p, x, hw, heads, M, shift) -> torch.Tensor:
    """mmdet ``ShiftWindowMSA``: x [B, H*W, C] (after norm1) -> [B, H*W, C]."""
    B, _, C = x.shape
    H, W = hw
    q = F.pad(x.view(B, H, W, C), (0, 0, 0, (M - W % M) % M, 0, (M - H % M) % M))
    Hp, Wp = q.shape[1:3]
    mask = None
    if shift:
        q = torch.roll(q, shifts=(-shift, -shift), dims=(1, 2))
        mask = _shift_mask(Hp, Wp, M, shift)
    win = q.view(B, Hp // M, M, Wp // M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, M * M, C)
    out = _window_attention(sd, p + "attn.w_msa.", win, heads, M, mask)
    out = out.view(B, Hp // M, Wp // M, M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out[:, :H, :W, :].reshape(B, H * W, C)


def mmdet_swin_forward(sd: dict, cfg: dict, images: torch.Tensor) -> list[torch.Tensor]:
    """mmdet ``SwinTransformer.forward`` on [B, 3, H, W] -> the normed stage outputs [B, C_i, H_i, W_i]."""
    M, heads = cfg["window_size"], cfg["num_heads"]
    H, W = images.shape[-2:]
    x = F.pad(images, (0, (4 - W % 4) % 4, 0, (4 - H % 4) % 4))
    x = F.conv2d(x, sd["backbone.patch_embed.projection.weight"], sd["backbone.patch_embed.projection.bias"],
                 stride=4)
    hw = tuple(x.shape[-2:])
    x = x.flatten(2).transpose(1, 2)
    C = x.shape[-1]
    x = F.layer_norm(x, (C,), sd["backbone.patch_embed.norm.weight"], sd["backbone.patch_embed.norm.bias"])
    outs = []
    for i, depth in enumerate(cfg["depths"]):
        C = x.shape[-1]
        for j in range(depth):
            p = f"backbone.stages.{i}.blocks.{j}."
            h = F.layer_norm(x, (C,), sd[p + "norm1.weight"], sd[p + "norm1.bias"])
            x = x + mmdet_shift_window_msa(sd, p, h, hw, heads[i], M, M // 2 if j % 2 else 0)
            h = F.layer_norm(x, (C,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
            h = F.gelu(F.linear(h, sd[p + "ffn.layers.0.0.weight"], sd[p + "ffn.layers.0.0.bias"]))
            x = x + F.linear(h, sd[p + "ffn.layers.1.weight"], sd[p + "ffn.layers.1.bias"])
        out = F.layer_norm(x, (C,), sd[f"backbone.norm{i}.weight"], sd[f"backbone.norm{i}.bias"])
        outs.append(out.view(-1, *hw, C).permute(0, 3, 1, 2))
        if i + 1 < len(cfg["depths"]):
            x, hw = mmdet_patch_merging(sd, f"backbone.stages.{i}.downsample.", x, hw)
    return outs


# ----------------------------------------------------------------------------- mmdet's neck and heads


def mmdet_fpn_forward(sd: dict, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """mmdet ``FPN(num_outs=5)`` without extra convs: 1x1 laterals, nearest top-down sums, 3x3
    outputs, then ``max_pool2d(kernel 1, stride 2)`` of the last output."""
    lat = [F.conv2d(f, sd[f"neck.lateral_convs.{i}.conv.weight"], sd[f"neck.lateral_convs.{i}.conv.bias"])
           for i, f in enumerate(feats)]
    for i in range(len(lat) - 1, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
    outs = [F.conv2d(t, sd[f"neck.fpn_convs.{i}.conv.weight"], sd[f"neck.fpn_convs.{i}.conv.bias"], padding=1)
            for i, t in enumerate(lat)]
    return outs + [F.max_pool2d(outs[-1], 1, stride=2)]


def mmdet_bbox_head(sd: dict, roi_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mmdet ``Shared2FCBBoxHead`` on [N, F, 7, 7] -> (class probabilities [N, K+1] with background
    LAST, class-specific deltas [N, 4K])."""
    p = "roi_head.bbox_head."
    x = roi_feats.flatten(1)
    x = F.relu(F.linear(x, sd[p + "shared_fcs.0.weight"], sd[p + "shared_fcs.0.bias"]))
    x = F.relu(F.linear(x, sd[p + "shared_fcs.1.weight"], sd[p + "shared_fcs.1.bias"]))
    cls = F.linear(x, sd[p + "fc_cls.weight"], sd[p + "fc_cls.bias"]).softmax(-1)
    return cls, F.linear(x, sd[p + "fc_reg.weight"], sd[p + "fc_reg.bias"])


def mmdet_mask_head(sd: dict, roi_feats: torch.Tensor) -> torch.Tensor:
    """mmdet ``FCNMaskHead`` on [N, F, 14, 14] -> mask logits [N, K, 28, 28]."""
    p = "roi_head.mask_head."
    x = roi_feats
    for i in range(4):
        x = F.relu(F.conv2d(x, sd[p + f"convs.{i}.conv.weight"], sd[p + f"convs.{i}.conv.bias"], padding=1))
    x = F.relu(F.conv_transpose2d(x, sd[p + "upsample.weight"], sd[p + "upsample.bias"], stride=2))
    return F.conv2d(x, sd[p + "conv_logits.weight"], sd[p + "conv_logits.bias"])


def mmdet_anchors(strides, grid_sizes, ratios=(0.5, 1.0, 2.0), scale=8) -> torch.Tensor:
    """mmdet ``AnchorGenerator`` (center offset 0, scale-major): all levels' anchors, each level
    flattened (y, x, anchor) -> [sum H*W*A, 4]."""
    out = []
    r = torch.tensor(ratios)
    for stride, (h, w) in zip(strides, grid_sizes):
        h_ratios = torch.sqrt(r)
        ws = (stride * (1 / h_ratios)[:, None] * torch.tensor([float(scale)])[None, :]).view(-1)
        hs = (stride * h_ratios[:, None] * torch.tensor([float(scale)])[None, :]).view(-1)
        base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)
        sx = torch.arange(0, w).float() * stride
        sy = torch.arange(0, h).float() * stride
        xx, yy = sx.repeat(len(sy)), sy.view(-1, 1).repeat(1, len(sx)).view(-1)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        out.append((base[None, :, :] + shifts[:, None, :]).view(-1, 4))
    return torch.cat(out)
