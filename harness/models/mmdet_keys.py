"""The mmdetection layout of a Swin Mask R-CNN checkpoint, key by key, onto
:mod:`harness.models.swin_det`'s model (a timm ``SwinTransformer`` + torchvision FPN and Mask R-CNN).

mmdetection's release ``mask_rcnn_swin-t-p4-w7_fpn_1x_coco`` (and its 3x siblings) stores
``{"state_dict": {...}, "meta": {...}}``; the state dict uses mmdet's names. The rules, stage
``i``, block ``j`` (``K`` foreground classes):

=====================================================  ===============================================
mmdet key                                              model key (conversion)
=====================================================  ===============================================
``backbone.patch_embed.projection`` / ``.norm``        ``backbone.body.patch_embed.proj`` / ``.norm``
``backbone.stages.i.blocks.j.norm1`` / ``norm2``       ``backbone.body.layers.i.blocks.j.norm1`` / ``norm2``
``...blocks.j.attn.w_msa.qkv`` / ``proj``              ``...blocks.j.attn.qkv`` / ``proj``
``...blocks.j.attn.w_msa.relative_position_bias_table``  ``...blocks.j.attn.relative_position_bias_table``
``...blocks.j.attn.w_msa.relative_position_index``     checked equal to timm's buffer, not loaded
``...blocks.j.ffn.layers.0.0`` / ``ffn.layers.1``      ``...blocks.j.mlp.fc1`` / ``mlp.fc2``
``backbone.stages.i.downsample.reduction`` / ``.norm``  ``backbone.body.layers.(i+1).downsample.*``
                                                       (input channels permuted, :func:`unfold_to_timm`)
``backbone.norm{i}``                                   ``backbone.norms.i``
``neck.lateral_convs.i.conv`` / ``neck.fpn_convs.i.conv``  ``backbone.fpn.inner_blocks.i.0`` /
                                                       ``backbone.fpn.layer_blocks.i.0``
``rpn_head.rpn_conv`` / ``rpn_cls`` / ``rpn_reg``      ``rpn.head.conv.0.0`` / ``cls_logits`` / ``bbox_pred``
``roi_head.bbox_head.shared_fcs.0`` / ``.1``           ``roi_heads.box_head.fc6`` / ``fc7``
``roi_head.bbox_head.fc_cls``                          ``roi_heads.box_predictor.cls_score``
                                                       (background row moved last -> first)
``roi_head.bbox_head.fc_reg``                          ``roi_heads.box_predictor.bbox_pred``
                                                       (4 zero background rows prepended)
``roi_head.mask_head.convs.i.conv``                    ``roi_heads.mask_head.i.0``
``roi_head.mask_head.upsample`` / ``conv_logits``      ``roi_heads.mask_predictor.conv5_mask`` /
                                                       ``mask_fcn_logits`` (a zero background channel
                                                       prepended)
=====================================================  ===============================================

Why each conversion (read from the public code of mmdet 3.x, torchvision 0.29 and timm 1.0.31):

- **Patch merging.** mmdet's ``PatchMerging`` gathers each 2x2 neighbourhood with
  ``nn.Unfold(kernel_size=2, stride=2)``, whose output channel is ``c * 4 + dy * 2 + dx``
  (channel-major, then the kernel row, then the column). timm's ``PatchMerging`` reshapes to
  ``[B, H/2, 2, W/2, 2, C]`` and permutes to ``(dx, dy, c)``: channel ``(dx * 2 + dy) * C + c``,
  the original Swin's ``cat(x0, x1, x2, x3)`` order. The 4C-wide LayerNorm and the reduction's input
  columns are therefore permuted (mmdet's own ``swin_converter`` does the inverse,
  ``[0, 2, 1, 3]`` then a transpose). mmdet runs a stage's downsample at its *end*, timm at the
  *start* of the next stage: mmdet stage ``i``'s downsample is timm ``layers.(i+1).downsample``.
- **Classes.** mmdet's softmax head puts background *last* (index K); torchvision's at index 0 with
  foreground ``k`` at ``k + 1``. ``fc_cls`` rows are rotated; mmdet's class-specific ``fc_reg``
  (``4K`` rows) and ``conv_logits`` (``K`` channels) have no background entry, torchvision's have
  one (``4(K+1)`` rows, ``K+1`` channels) that it never reads at inference: it is filled with zeros.
- **Anchors.** mmdet (scales [8], ratios [0.5, 1, 2], strides 4..64, ``scale_major``) and
  torchvision both order the anchors of one location by ratio as given and flatten (y, x, anchor);
  ``rpn_cls`` channel ``a`` and ``rpn_reg`` channels ``4a..4a+3`` belong to anchor ``a`` in both,
  so the RPN convs are copied unchanged (the anchor *values* are matched in
  :class:`harness.models.swin_det.MMDetAnchorGenerator`).
- **Relative position index.** mmdet stores it (a persistent buffer, built with ``double_step_seq``
  and a flip); it equals timm's ``get_relative_position_index`` (both are
  ``(dy + M - 1) * (2M - 1) + dx + M - 1``), so the tables copy unchanged and the stored index is
  only compared with the model's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

Convert = Callable[[torch.Tensor], torch.Tensor]

#: Module paths of :func:`harness.models.swin_det.build_swin_maskrcnn`'s model the rules write to.
BODY = "backbone.body"
OUT_NORMS = "backbone.norms"
FPN = "backbone.fpn"
#: Convolutions of torchvision's mask head (mmdet's ``FCNMaskHead`` has the same four).
MASK_CONVS = 4
#: Rows of one box in a box-regression layer (dx, dy, dw, dh).
BOX_DELTAS = 4


def same(t: torch.Tensor) -> torch.Tensor:
    """The tensor unchanged."""
    return t


def unfold_to_timm(t: torch.Tensor) -> torch.Tensor:
    """mmdet Unfold channel order -> timm PatchMerging order, along the last dim (4C wide).

    t: ``[..., 4C]`` (reduction weight ``[2C, 4C]`` or norm weight/bias ``[4C]``). mmdet channel
    ``c * 4 + dy * 2 + dx`` goes to timm channel ``(dx * 2 + dy) * C + c``.
    """
    lead = t.shape[:-1]
    c = t.shape[-1] // 4
    n = len(lead)
    grid = t.reshape(*lead, c, 2, 2)  # (..., c, dy, dx)
    return grid.permute(*range(n), n + 2, n + 1, n).reshape(*lead, 4 * c)  # (..., dx, dy, c)


def background_first(t: torch.Tensor) -> torch.Tensor:
    """Rows ``[fg_0 .. fg_{K-1}, bg]`` (mmdet) -> ``[bg, fg_0 .. fg_{K-1}]`` (torchvision). t: [K+1, ...]."""
    return torch.cat([t[-1:], t[:-1]])


def zero_background(rows: int) -> Convert:
    """A conversion that prepends ``rows`` zero rows (torchvision's unused background entry)."""

    def convert(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.new_zeros((rows, *t.shape[1:])), t])

    return convert


@dataclass(frozen=True)
class KeyRule:
    """One mmdet key: the model key it fills and how its tensor changes on the way.

    check: the mmdet tensor is a derived buffer; it is compared with the model's buffer ``target``
    (its values must be equal) instead of being loaded. optional: the file may lack it.
    """

    source: str
    target: str
    convert: Convert = same
    check: bool = False
    optional: bool = False


def _pair(src: str, dst: str, convert: Convert = same) -> list[KeyRule]:
    """The weight and bias of one layer."""
    return [KeyRule(f"{src}.{n}", f"{dst}.{n}", convert) for n in ("weight", "bias")]


def _backbone_rules(depths: Sequence[int]) -> list[KeyRule]:
    rules = _pair("backbone.patch_embed.projection", f"{BODY}.patch_embed.proj")
    rules += _pair("backbone.patch_embed.norm", f"{BODY}.patch_embed.norm")
    for i, depth in enumerate(depths):
        for j in range(depth):
            src, dst = f"backbone.stages.{i}.blocks.{j}", f"{BODY}.layers.{i}.blocks.{j}"
            rules += _pair(f"{src}.norm1", f"{dst}.norm1")
            rules += _pair(f"{src}.attn.w_msa.qkv", f"{dst}.attn.qkv")
            rules += _pair(f"{src}.attn.w_msa.proj", f"{dst}.attn.proj")
            rules.append(KeyRule(f"{src}.attn.w_msa.relative_position_bias_table",
                                 f"{dst}.attn.relative_position_bias_table"))
            rules.append(KeyRule(f"{src}.attn.w_msa.relative_position_index",
                                 f"{dst}.attn.relative_position_index", check=True, optional=True))
            rules += _pair(f"{src}.norm2", f"{dst}.norm2")
            rules += _pair(f"{src}.ffn.layers.0.0", f"{dst}.mlp.fc1")
            rules += _pair(f"{src}.ffn.layers.1", f"{dst}.mlp.fc2")
        if i + 1 < len(depths):  # mmdet: end of stage i; timm: start of stage i + 1
            src, dst = f"backbone.stages.{i}.downsample", f"{BODY}.layers.{i + 1}.downsample"
            rules.append(KeyRule(f"{src}.reduction.weight", f"{dst}.reduction.weight", unfold_to_timm))
            rules += _pair(f"{src}.norm", f"{dst}.norm", unfold_to_timm)
        rules += _pair(f"backbone.norm{i}", f"{OUT_NORMS}.{i}")
    return rules


def _head_rules(levels: int) -> list[KeyRule]:
    rules: list[KeyRule] = []
    for i in range(levels):
        rules += _pair(f"neck.lateral_convs.{i}.conv", f"{FPN}.inner_blocks.{i}.0")
        rules += _pair(f"neck.fpn_convs.{i}.conv", f"{FPN}.layer_blocks.{i}.0")
    rules += _pair("rpn_head.rpn_conv", "rpn.head.conv.0.0")
    rules += _pair("rpn_head.rpn_cls", "rpn.head.cls_logits")
    rules += _pair("rpn_head.rpn_reg", "rpn.head.bbox_pred")
    rules += _pair("roi_head.bbox_head.shared_fcs.0", "roi_heads.box_head.fc6")
    rules += _pair("roi_head.bbox_head.shared_fcs.1", "roi_heads.box_head.fc7")
    rules += _pair("roi_head.bbox_head.fc_cls", "roi_heads.box_predictor.cls_score", background_first)
    rules += _pair("roi_head.bbox_head.fc_reg", "roi_heads.box_predictor.bbox_pred",
                   zero_background(BOX_DELTAS))
    for i in range(MASK_CONVS):
        rules += _pair(f"roi_head.mask_head.convs.{i}.conv", f"roi_heads.mask_head.{i}.0")
    rules += _pair("roi_head.mask_head.upsample", "roi_heads.mask_predictor.conv5_mask")
    rules += _pair("roi_head.mask_head.conv_logits", "roi_heads.mask_predictor.mask_fcn_logits",
                   zero_background(1))
    return rules


def mmdet_rules(depths: Sequence[int]) -> list[KeyRule]:
    """Every key of an mmdet Swin Mask R-CNN checkpoint with stage depths ``depths``, in file order."""
    return _backbone_rules(depths) + _head_rules(len(depths))


@dataclass(frozen=True)
class Conversion:
    """An mmdet state dict in the model's names.

    state_dict: model key -> converted tensor; sources: model key -> mmdet key it came from;
    checks: model buffer name -> (mmdet key, stored tensor) to compare with the model's buffer;
    missing: mmdet keys the rules expect and the file lacks; unexpected: file keys no rule reads.
    """

    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    checks: dict[str, tuple[str, torch.Tensor]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def convert_mmdet(sd: Mapping[str, torch.Tensor], depths: Sequence[int]) -> Conversion:
    """Apply :func:`mmdet_rules` to ``sd`` (an mmdet state dict, already unwrapped from
    ``{"state_dict": ...}``). Shapes are not checked here: the caller compares them with the model."""
    out = Conversion()
    rules = mmdet_rules(depths)
    for rule in rules:
        if rule.source not in sd:
            if not rule.optional:
                out.missing.append(rule.source)
            continue
        tensor = sd[rule.source]
        if rule.check:
            out.checks[rule.target] = (rule.source, tensor)
        else:
            try:
                tensor = rule.convert(tensor)
            except RuntimeError:  # a shape the conversion cannot take: left as is, the shape check names it
                pass
            out.state_dict[rule.target] = tensor
            out.sources[rule.target] = rule.source
    known = {r.source for r in rules}
    out.unexpected.extend(k for k in sd if k not in known)
    return out


__all__ = [
    "BODY",
    "FPN",
    "OUT_NORMS",
    "Conversion",
    "KeyRule",
    "background_first",
    "convert_mmdet",
    "mmdet_rules",
    "same",
    "unfold_to_timm",
    "zero_background",
]
