"""Mask R-CNN with a Swin backbone: a timm ``SwinTransformer`` + torchvision's FPN and Mask R-CNN heads,
numerically arranged like mmdetection's ``mask-rcnn_swin-t-p4-w7_fpn_1x_coco`` (the detector of
MixA-Q's COCO results), loading mmdetection's released checkpoints strictly.

Model (:func:`build_swin_maskrcnn`, a ``torchvision.models.detection.MaskRCNN``):

- ``model.backbone`` (:class:`SwinFPN`): ``body``, a timm ``SwinTransformer`` (stage outputs
  96/192/384/768 channels at strides 4/8/16/32 for Swin-T); ``norms``, one LayerNorm per stage
  output (mmdet's ``norm0..norm3``; timm's final ``norm`` is an Identity, its place taken by
  ``norms[3]``); ``fpn``, torchvision's ``FeaturePyramidNetwork`` (256 channels) with the extra
  max-pool level (``LastLevelMaxPool``, mmdet's ``num_outs=5`` without extra convs): levels
  ``"0" "1" "2" "3" "pool"`` at strides 4..64. :func:`backbone_of` returns ``body``, the module
  :func:`harness.quant.qswin.quantize_swin` transforms (it stays a timm ``SwinTransformer`` whose
  ``layers`` are timm stages of timm blocks); :func:`replace_backbone` puts the transformed copy back.
- Any input size: timm's patch embedding pads the image to a multiple of the patch size at the
  bottom/right (``dynamic_img_pad``, mmdet's ``AdaptivePadding(padding="corner")``), patch merging
  pads odd maps at the bottom/right (as mmdet), windows never shrink to the map
  (``always_partition``, as mmdet) and attention masks are built per input (``dynamic_mask``).
- Window padding (``window_pad``): mmdet's ``ShiftWindowMSA`` pads a block's (normed) map to a window
  multiple *before* the cyclic shift and builds the shift mask on the padded map; timm 1.0.31's
  ``SwinTransformerBlock._attn`` shifts first, then pads, so for a map that is not a window multiple
  (COCO at 800 x 1344: every stage's height) the shifted windows at the bottom/right border hold
  other tokens and the shift mask can let the last rows attend to the first ones. ``"mmdet"``
  (default; what the released weights were trained with) makes each block a
  :class:`PadFirstSwinBlock` (a ``SwinTransformerBlock`` whose ``_attn`` pads first, then runs
  timm's own ``_attn`` on the padded map); ``"timm"`` keeps timm's blocks. Both agree exactly on
  window-multiple maps. NB: :class:`harness.quant.qswin.QSwinBlock` re-implements the window
  geometry the timm way, so a quantized ``"mmdet"`` backbone follows timm's geometry on
  non-multiple maps until it honours :attr:`PadFirstSwinBlock.pad_before_shift`.
- Heads: torchvision's ``RPNHead``, ``TwoMLPHead`` + ``FastRCNNPredictor`` (81 classes, background
  0) and ``MaskRCNNHeads`` + ``MaskRCNNPredictor``, with :class:`MMDetAnchorGenerator` and
  :class:`MMDetRoIAlign` in place of torchvision's anchor generator and pooler.
- Output labels are torchvision's: 1..K with mmdet class ``k`` (the index into the release's
  ``CLASSES``, i.e. the sorted COCO category ids) as label ``k + 1``; ``masks`` are probabilities
  ``[N, 1, H, W]`` pasted into the input image; threshold them at ``>= MASK_THR_BINARY``.

Why torchvision's heads: they are maintained with PyTorch, installed with it, pure PyTorch (plus
torchvision's own CPU/CUDA ops: ``roi_align``, ``nms``) and run on the CPU; mmdet's heads need
mmcv's compiled ops and mmengine, which the harness does not depend on. What torchvision exposes is
set to mmdet's test config (RPN ``nms_pre`` 1000 per level, ``max_per_img`` 1000, NMS 0.7; R-CNN
``score_thr`` 0.05, NMS 0.5, ``max_per_img`` 100; training-time RPN ``nms_pre`` 2000,
``max_per_img`` 1000); two small subclasses match what it does not expose:

- anchors (:class:`MMDetAnchorGenerator`): torchvision rounds its base anchors to integers and
  derives each level's stride as ``padded size // map size`` (61 instead of 64 for an 800-px image's
  13-row max-pool level); mmdet keeps the exact float anchors (stride x 8 x sqrt of the ratio) and
  the configured strides 4..64. Order per location (ratios 0.5, 1, 2) and over the map (y, x) agree.
- RoI pooling (:class:`MMDetRoIAlign`): torchvision's ``MultiScaleRoIAlign`` calls ``roi_align``
  with ``aligned=False`` and infers scales from the first batch; mmdet's ``SingleRoIExtractor``
  uses ``RoIAlign(sampling_ratio=0, aligned=True)``, fixed strides 4..32, and the level
  ``floor(log2(sqrt(wh) / 56 + 1e-6))`` clamped to 0..3 (torchvision's mapper puts the epsilon
  outside the log).

Differences from mmdet that remain (all at test time; none changes a weight):

- torchvision drops proposals narrower than 1e-3 px (mmdet: only empty ones) and detections
  narrower than 1e-2 px (mmdet: none).
- mask pasting: torchvision's ``paste_masks_in_image`` pads the 28 x 28 mask by one pixel and
  resizes it into the integer box; mmdet's ``_do_paste_mask`` samples it with ``grid_sample`` at the
  pixel centres. Pasted masks differ by up to about a pixel along their borders.
- resizing: torchvision resizes the normalized float image (bilinear, ``floor`` of the scaled size)
  when its size is not already min 800 / max 1333; mmdet resizes the 8-bit image with OpenCV and
  ``int(size * scale + 0.5)``. An image already resized mmdet's way (:mod:`harness.data.coco`) is
  left as it is (scale 1). Normalization is the same (mmdet's mean/std / 255).
- batches: torchvision pads a batch to its largest image (then to a multiple of 32); mmdet's test
  runs one image per batch. The Swin windows see the padding, so compare with mmdet at batch 1.
- NMS coordinates: mmdet 2.x (the releases' version) rescales R-CNN boxes to the original image
  before NMS, torchvision (like mmdet 3.x with a mask head) runs NMS in the resized image; the two
  differ only by the rounding of the resize (w and h scale factors differ by < 1e-3).
- ties in top-k and NMS, and float summation order (e.g. box decoding), may differ.
- training-only: torchvision's RPN keeps ``post_nms_top_n`` per image (mmdet the same; set to
  1000), samplers and losses are torchvision's (same IoU thresholds and sample counts as mmdet's
  config; mmdet adds the ground truth to the R-CNN proposals, torchvision too).

Checkpoints (:func:`load_mmdet_checkpoint`): mmdetection's files (``{"state_dict", "meta"}``,
read with ``torch.load(weights_only=True)``) in the layout :mod:`harness.models.mmdet_keys` maps,
strictly. ``checkpoint`` may be a local path, ``hf:ORG/NAME/FILE`` (through
:func:`harness.models.weights.resolve_weights`) or one of the release URLs in
:data:`MMDET_RELEASES`: a URL is read from the torch hub cache, where mmdetection's
``load_from=URL`` leaves it; the harness never downloads it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from harness.models.checkpoint import KeyDiff, compare_state_dict, read_state_dict
from harness.models.mmdet_keys import convert_mmdet, mmdet_rules
from harness.models.swin import set_fused_attn
from harness.models.weights import WeightsError, resolve_weights
from harness.quant.qswin import check_timm

#: Foreground classes of COCO (mmdet's ``num_classes``; torchvision's head has one more, background).
COCO_CLASSES = 80
PATCH_SIZE = 4
#: Strides of the four stage outputs and of the FPN levels built on them.
STAGE_STRIDES = (4, 8, 16, 32)
#: Anchor strides: the stage levels plus the max-pool level.
ANCHOR_STRIDES = (4, 8, 16, 32, 64)
#: mmdet's ``AnchorGenerator(scales=[8], ratios=[0.5, 1.0, 2.0])``: anchor side = stride x 8.
ANCHOR_SCALE = 8
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
#: mmdet's ``SingleRoIExtractor``: boxes of sqrt(area) < 2 x 56 px pool from stride 4, and so on.
ROI_FINEST_SCALE = 56
ROI_EPS = 1e-6
BOX_ROI_SIZE = 7
MASK_ROI_SIZE = 14
#: mmcv/torchvision ``roi_align``: 0 = adaptive, ceil(roi size / output size) samples per bin.
ROI_SAMPLING_RATIO = 0
#: mmdet test config of the release: RPN and R-CNN.
RPN_NMS_PRE = 1000
RPN_MAX_PER_IMG = 1000
RPN_NMS_IOU = 0.7
RPN_TRAIN_NMS_PRE = 2000
RCNN_SCORE_THR = 0.05
RCNN_NMS_IOU = 0.5
RCNN_MAX_PER_IMG = 100
MASK_THR_BINARY = 0.5
#: mmdet's test resize ``Resize(scale=(1333, 800), keep_ratio=True)``.
MIN_SIZE = 800
MAX_SIZE = 1333
FPN_CHANNELS = 256
BOX_FC_CHANNELS = 1024
MASK_CHANNELS = 256
#: mmdet's Swin-T config: stochastic depth 0.2 (training only; identity in eval).
DROP_PATH_RATE = 0.2
WINDOW_PADS = ("mmdet", "timm")
#: The Swin-T Mask R-CNN releases of mmdetection (same layout; box/mask AP 42.7/39.3 and 46.0/41.6,
#: the latter the FP reference of MixA-Q's and RepQ-ViT's tables).
MMDET_RELEASES = {
    "mask_rcnn_swin-t-p4-w7_fpn_1x_coco": "https://download.openmmlab.com/mmdetection/v2.0/swin/"
    "mask_rcnn_swin-t-p4-w7_fpn_1x_coco/mask_rcnn_swin-t-p4-w7_fpn_1x_coco_20210902_120937-9d6b7cfa.pth",
    "mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco": "https://download.openmmlab.com/mmdetection/v2.0/swin/"
    "mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco/"
    "mask_rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco_20210906_131725-bacf6f7b.pth",
}
URL_PREFIXES = ("http://", "https://")


class PadFirstSwinBlock(SwinTransformerBlock):
    """A timm Swin block with mmdet's window geometry: the normed map ``[B, H, W, C]`` is padded
    (bottom/right, zeros) to a window multiple first, then timm's ``_attn`` shifts, masks (on the
    padded map) and partitions it; the result is cropped back to ``H x W``. No state of its own."""

    #: read by window-level code that re-implements the block (e.g. a quantized block)
    pad_before_shift = True

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        _, H, W, _ = x.shape
        wh, ww = self.window_size
        pad_h, pad_w = (wh - H % wh) % wh, (ww - W % ww) % ww
        if not (pad_h or pad_w):
            return super()._attn(x)
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        return super()._attn(x)[:, :H, :W, :].contiguous()


def use_pad_first_blocks(body: SwinTransformer) -> None:
    """Give every block of ``body`` mmdet's window geometry (:class:`PadFirstSwinBlock`) in place.

    The subclass adds no parameter or buffer, only ``_attn``, so the block's class is swapped."""
    for stage in body.layers:
        for blk in stage.blocks:
            if not blk.dynamic_mask:
                raise ValueError("pad-first blocks need per-input masks (a SwinTransformer built with "
                                 "strict_img_size=False)")
            blk.__class__ = PadFirstSwinBlock


class SwinFPN(nn.Module):
    """Swin stages -> per-stage LayerNorm -> FPN with a max-pool level.

    forward(images: [B, 3, H, W]) -> OrderedDict ``"0".."3"``: [B, F, ceil(H/s), ceil(W/s)] at
    s = 4, 8, 16, 32 (F = ``out_channels``) and ``"pool"`` at stride 64.
    """

    def __init__(self, body: SwinTransformer, out_channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        dims = [int(info["num_chs"]) for info in body.feature_info]
        self.body = body
        self.norms = nn.ModuleList([nn.LayerNorm(d) for d in dims])
        self.fpn = FeaturePyramidNetwork(dims, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def stage_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Normalized stage outputs (mmdet's backbone outputs): [B, C_i, H_i, W_i] per stage."""
        x = self.body.patch_embed(images)
        out = []
        for stage, norm in zip(self.body.layers, self.norms):
            x = stage(x)
            out.append(norm(x).permute(0, 3, 1, 2).contiguous())
        return out

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.stage_features(images)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


class MMDetAnchorGenerator(AnchorGenerator):
    """torchvision's anchor generator with mmdet's anchor values: unrounded base anchors
    (side ``stride * scale * sqrt(1/ratio)`` wide, centred on 0) and fixed strides per level.

    Anchor ``a`` of location (y, x) on level l is row ``(y * W_l + x) * A + a`` of level l's block
    (A = len(ratios), ratios in the given order), as in both libraries.
    """

    def __init__(
        self,
        strides: Sequence[int] = ANCHOR_STRIDES,
        ratios: Sequence[float] = ANCHOR_RATIOS,
        scale: int = ANCHOR_SCALE,
    ) -> None:
        super().__init__(tuple((s * scale,) for s in strides), (tuple(ratios),) * len(strides))
        self.strides = tuple(strides)

    def generate_anchors(
        self,
        scales: list[int],
        aspect_ratios: list[float],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Base anchors [len(ratios) * len(scales), 4], x1 y1 x2 y2 around 0 (no rounding)."""
        sides = torch.as_tensor(scales, dtype=dtype, device=device)
        ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * sides[None, :]).view(-1)
        hs = (h_ratios[:, None] * sides[None, :]).view(-1)
        return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=1)

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """One [sum_l H_l * W_l * A, 4] tensor per image (the same for all images)."""
        if len(feature_maps) != len(self.strides):
            raise ValueError(f"{len(feature_maps)} feature maps for {len(self.strides)} anchor strides")
        grid_sizes = [list(f.shape[-2:]) for f in feature_maps]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [[torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.strides]
        self.set_cell_anchors(dtype, device)
        anchors = torch.cat(self.grid_anchors(grid_sizes, strides))
        return [anchors for _ in image_list.image_sizes]


class MMDetRoIAlign(MultiScaleRoIAlign):
    """mmdet's ``SingleRoIExtractor`` as a torchvision pooler: each box pools from level
    ``clamp(floor(log2(sqrt(w * h) / finest_scale + 1e-6)), 0, L - 1)`` with
    ``roi_align(aligned=True, sampling_ratio=0)`` at the level's fixed stride.

    forward(x: {name: [B, C, H_l, W_l]}, boxes: per image [N_i, 4] x1 y1 x2 y2, image_shapes
    (unused)) -> [sum N_i, C, S, S].
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int,
        strides: Sequence[int] = STAGE_STRIDES,
        sampling_ratio: int = ROI_SAMPLING_RATIO,
        finest_scale: int = ROI_FINEST_SCALE,
        aligned: bool = True,
    ) -> None:
        super().__init__(list(featmap_names), output_size, sampling_ratio)
        if len(strides) != len(featmap_names):
            raise ValueError(f"{len(featmap_names)} feature maps but {len(strides)} strides")
        self.strides = tuple(strides)
        self.finest_scale = finest_scale
        self.aligned = aligned

    def levels(self, rois: torch.Tensor) -> torch.Tensor:
        """Level index per RoI. rois: [K, 5] (image index, x1, y1, x2, y2) -> [K] int64."""
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        lvl = torch.floor(torch.log2(scale / self.finest_scale + ROI_EPS))
        return lvl.clamp(min=0, max=len(self.strides) - 1).long()

    def forward(
        self,
        x: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        feats = [x[name] for name in self.featmap_names]
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)])
        levels = self.levels(rois)
        out = feats[0].new_zeros((len(rois), feats[0].shape[1], *self.output_size))
        for lvl, (feat, stride) in enumerate(zip(feats, self.strides)):
            idx = torch.where(levels == lvl)[0]
            if idx.numel() == 0:
                continue
            pooled = roi_align(feat, rois[idx], self.output_size, spatial_scale=1.0 / stride,
                               sampling_ratio=self.sampling_ratio, aligned=self.aligned)
            out[idx] = pooled.to(out.dtype)
        return out


def swin_body(
    embed_dim: int, depths: Sequence[int], num_heads: Sequence[int], window_size: int,
    window_pad: str, drop_path_rate: float,
) -> SwinTransformer:
    """The timm Swin of the detector: any input size, no classifier, no final norm, explicit attention."""
    if window_pad not in WINDOW_PADS:
        raise ValueError(f"window_pad={window_pad!r}; allowed: {', '.join(WINDOW_PADS)}")
    body = SwinTransformer(
        img_size=224, patch_size=PATCH_SIZE, num_classes=0, global_pool="avg",
        embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(num_heads), window_size=window_size,
        always_partition=True, strict_img_size=False, drop_path_rate=drop_path_rate,
        embed_layer=partial(PatchEmbed, dynamic_img_pad=True),
    )
    body.norm = nn.Identity()  # mmdet normalizes every stage output instead (SwinFPN.norms)
    set_fused_attn(body, False)
    if window_pad == "mmdet":
        use_pad_first_blocks(body)
    return body


def build_swin_maskrcnn(
    num_classes: int = COCO_CLASSES,
    embed_dim: int = 96,
    depths: Sequence[int] = (2, 2, 6, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    window_size: int = 7,
    *,
    fpn_channels: int = FPN_CHANNELS,
    box_fc_channels: int = BOX_FC_CHANNELS,
    mask_channels: int = MASK_CHANNELS,
    min_size: int = MIN_SIZE,
    max_size: int = MAX_SIZE,
    window_pad: str = "mmdet",
    drop_path_rate: float = DROP_PATH_RATE,
    seed: int = 0,
    checkpoint: str | Path | None = None,
) -> MaskRCNN:
    """A Mask R-CNN with a timm Swin backbone, in eval mode; defaults are mmdet's Swin-T config.

    num_classes: foreground classes (mmdet's count; torchvision's head gets one more, background
    at 0). The smaller widths (``fpn_channels``, ``box_fc_channels``, ``mask_channels``) and
    ``min_size``/``max_size`` exist for small test models; a checkpoint must match them.
    window_pad: ``"mmdet"`` or ``"timm"`` window geometry (module docstring). Weights: random,
    seeded by ``seed``, unless ``checkpoint`` (see :func:`load_mmdet_checkpoint`) is given.
    """
    check_timm()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        body = swin_body(embed_dim, depths, num_heads, window_size, window_pad, drop_path_rate)
        backbone = SwinFPN(body, fpn_channels)
        names = [str(i) for i in range(len(depths))]
        model = MaskRCNN(
            backbone, num_classes=None, min_size=min_size, max_size=max_size,
            rpn_anchor_generator=MMDetAnchorGenerator(),
            rpn_head=RPNHead(fpn_channels, len(ANCHOR_RATIOS)),
            rpn_pre_nms_top_n_train=RPN_TRAIN_NMS_PRE, rpn_pre_nms_top_n_test=RPN_NMS_PRE,
            rpn_post_nms_top_n_train=RPN_MAX_PER_IMG, rpn_post_nms_top_n_test=RPN_MAX_PER_IMG,
            rpn_nms_thresh=RPN_NMS_IOU,
            box_roi_pool=MMDetRoIAlign(names, BOX_ROI_SIZE, STAGE_STRIDES[: len(names)]),
            box_head=TwoMLPHead(fpn_channels * BOX_ROI_SIZE**2, box_fc_channels),
            box_predictor=FastRCNNPredictor(box_fc_channels, num_classes + 1),
            box_score_thresh=RCNN_SCORE_THR, box_nms_thresh=RCNN_NMS_IOU,
            box_detections_per_img=RCNN_MAX_PER_IMG,
            mask_roi_pool=MMDetRoIAlign(names, MASK_ROI_SIZE, STAGE_STRIDES[: len(names)]),
            mask_head=MaskRCNNHeads(fpn_channels, (mask_channels,) * 4, 1),
            mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1),
        )
    if checkpoint:
        load_mmdet_checkpoint(model, checkpoint)
    return model.eval()


def backbone_of(model: MaskRCNN) -> SwinTransformer:
    """The timm ``SwinTransformer`` inside ``model`` (what :func:`harness.quant.qswin.quantize_swin`
    takes; its result goes back with :func:`replace_backbone`)."""
    body = getattr(getattr(model, "backbone", None), "body", None)
    if not isinstance(body, SwinTransformer):
        raise TypeError(f"{type(model).__name__} has no timm SwinTransformer at model.backbone.body "
                        "(build it with build_swin_maskrcnn)")
    return body


def replace_backbone(model: MaskRCNN, body: SwinTransformer) -> MaskRCNN:
    """Put ``body`` (e.g. a quantized copy of :func:`backbone_of`) into ``model``, in place; returns it."""
    old = backbone_of(model)
    if [len(s.blocks) for s in body.layers] != [len(s.blocks) for s in old.layers]:
        raise ValueError("the new backbone has other stage depths than the model's")
    model.backbone.body = body
    return model


def checkpoint_file(spec: str | Path) -> Path:
    """The local file of a checkpoint spec: a path, ``hf:ORG/NAME/FILE`` or an http(s) URL.

    A URL is looked up in the torch hub cache (``torch.hub.get_dir()/checkpoints/<file name>``,
    where mmdetection's ``load_from=URL`` stores it) and never downloaded. Raises
    :class:`harness.models.weights.WeightsError` (one paragraph with the manual alternative) when
    there is no such file.
    """
    text = str(spec)
    if not text.startswith(URL_PREFIXES):
        weights = resolve_weights(text)
        if weights.path is None:
            raise ValueError("an empty checkpoint spec names no file (random weights need no loading)")
        return weights.path
    name = text.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if (cache / name).is_file():
        return cache / name
    raise WeightsError(
        f"cannot get the weights {text}: the harness does not download URLs, and {name} is not in the "
        f"torch hub cache {cache} (where mmdetection's load_from=URL stores it). Download the file "
        f"yourself, e.g. `curl -L -o /local/path/{name} {text}`, and pass checkpoint=/local/path/{name} "
        "(or put it in that cache folder)."
    )


def load_mmdet_checkpoint(model: MaskRCNN, spec: str | Path) -> Path:
    """Load an mmdetection Swin Mask R-CNN checkpoint into ``model`` strictly -> the local file.

    Every key of the file must be read by a rule of :mod:`harness.models.mmdet_keys` and every
    parameter of the model filled (stored relative-position indices must equal the model's);
    otherwise one :class:`harness.models.checkpoint.CheckpointError` names the file and the
    missing / unexpected / misshapen keys (mmdet's names). Nothing is loaded then.
    """
    path = checkpoint_file(spec)
    depths = [len(s.blocks) for s in backbone_of(model).layers]
    conv = convert_mmdet(read_state_dict(path), depths)
    own = model.state_dict()
    ruled = {rule.target for rule in mmdet_rules(depths)}
    missing = conv.missing + [k for k in own if k not in ruled]  # the latter: a model no rule covers
    unexpected = conv.unexpected + [conv.sources[k] for k in conv.state_dict if k not in own]
    misshapen = [
        f"{conv.sources[k]} -> {k} (checkpoint {tuple(t.shape)}, model {tuple(own[k].shape)})"
        for k, t in conv.state_dict.items()
        if k in own and t.shape != own[k].shape
    ]
    for target, (source, stored) in conv.checks.items():
        buffer = model.get_buffer(target).cpu()
        if stored.shape != buffer.shape or not torch.equal(stored.to(buffer.dtype), buffer):
            misshapen.append(f"{source} (checkpoint {tuple(stored.shape)} differs from the model's index "
                             f"{tuple(buffer.shape)}: another window size)")
    KeyDiff(missing, unexpected, misshapen).raise_if_mismatched(
        path, what="the Swin Mask R-CNN (mmdetection layout)"
    )
    model.load_state_dict(conv.state_dict, strict=True)
    return path



OWN_LAYOUT_PREFIX = "backbone.body."
"""Keys of a state dict saved from this model (e.g. a trained proxy) start with this; mmdetection's
start with ``backbone.stages`` / ``backbone.patch_embed``."""


@dataclass(frozen=True)
class DetModelConfig:
    """The arguments of :func:`build_swin_maskrcnn` that make a named detector (``DET_MODELS``)."""

    num_classes: int
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int = 7
    fpn_channels: int = FPN_CHANNELS
    box_fc_channels: int = BOX_FC_CHANNELS
    mask_channels: int = MASK_CHANNELS
    min_size: int = MIN_SIZE
    max_size: int = MAX_SIZE

    def build(self, seed: int = 0, window_pad: str = "mmdet") -> MaskRCNN:
        """The detector with random (seeded) weights, in eval mode."""
        return build_swin_maskrcnn(
            self.num_classes, self.embed_dim, self.depths, self.num_heads, self.window_size,
            fpn_channels=self.fpn_channels, box_fc_channels=self.box_fc_channels,
            mask_channels=self.mask_channels, min_size=self.min_size, max_size=self.max_size,
            window_pad=window_pad, seed=seed,
        )


DET_MODELS: dict[str, DetModelConfig] = {
    # mmdetection's mask-rcnn_swin-t-p4-w7_fpn (the detector of MixA-Q's COCO tables)
    "swin_t": DetModelConfig(COCO_CLASSES, 96, (2, 2, 6, 2), (3, 6, 12, 24)),
    # the detection proxy the harness trains (harness.train.det_proxy): 5 hue classes of
    # harness.data.det_scenes at 448 px, swin_proxy's widths, narrow heads
    "swin_det_proxy": DetModelConfig(5, 32, (2, 2, 4, 2), (2, 4, 8, 16), fpn_channels=64,
                                     box_fc_channels=256, mask_channels=64, min_size=448, max_size=448),
    # a tiny detector for tests and smoke runs (random weights), 112 px scenes
    "swin_det_micro": DetModelConfig(5, 16, (1, 1, 1, 1), (1, 1, 1, 1), fpn_channels=16,
                                     box_fc_channels=32, mask_channels=16, min_size=112, max_size=112),
}


def load_detector_weights(model: MaskRCNN, spec: str | Path) -> Path:
    """Load ``spec`` strictly into ``model`` -> the local file. A file saved from this model (keys
    ``backbone.body.*``: e.g. ``proxy:swin-det-proxy``) loads as it is; anything else is read as
    mmdetection's layout (:func:`load_mmdet_checkpoint`). Mismatched keys or shapes raise one
    :class:`harness.models.checkpoint.CheckpointError` naming the file; nothing is loaded then."""
    path = checkpoint_file(spec)
    sd = read_state_dict(path)
    if not any(k.startswith(OWN_LAYOUT_PREFIX) for k in sd):
        return load_mmdet_checkpoint(model, path)
    compare_state_dict(sd, model).raise_if_mismatched(path, what="the Swin Mask R-CNN (harness layout)")
    model.load_state_dict(sd, strict=True)
    return path

__all__ = [
    "COCO_CLASSES",
    "DET_MODELS",
    "OWN_LAYOUT_PREFIX",
    "DetModelConfig",
    "MASK_THR_BINARY",
    "MMDET_RELEASES",
    "WINDOW_PADS",
    "MMDetAnchorGenerator",
    "MMDetRoIAlign",
    "PadFirstSwinBlock",
    "SwinFPN",
    "backbone_of",
    "build_swin_maskrcnn",
    "checkpoint_file",
    "load_detector_weights",
    "load_mmdet_checkpoint",
    "replace_backbone",
    "swin_body",
    "use_pad_first_blocks",
]
