"""COCO box and mask mAP of detector outputs, through pycocotools' COCOeval.

Predictions come as torchvision's detectors return them, one dict per image, in the resized image
that :func:`harness.data.coco.read_coco` hands the detector:

- ``boxes``: [N, 4] x1, y1, x2, y2 in resized-image pixels;
- ``labels``: [N] int, contiguous 1..K (0 is background, never a detection);
- ``scores``: [N];
- ``masks`` (for ``"segm"``): [N, 1, Hm, Wm] probabilities over the resized image, possibly padded
  at the bottom/right (Hm >= resized H, Wm >= resized W, e.g. to a multiple of 32).

Each is turned into COCO results as mmdet's ``CocoMetric`` does: boxes divided by the image's
scale factor (x by ``w_scale``, y by ``h_scale``) back to original pixels, then xyxy -> xywh;
label k -> category ``category_ids(gt)[k - 1]`` (the sorted category ids); masks cropped to the
resized image, resized bilinearly to the original size, thresholded at ``>= 0.5`` and RLE-encoded
(segm results carry no bbox, so the instance area that picks small/medium/large is the mask's).

Only the images of the given records are evaluated (``params.imgIds``), so a subset read with
``limit`` is scored on its own ground truth. pycocotools' printing is captured.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from harness.data.coco import ImageRecord, category_ids, load_coco_gt

#: The evaluations :func:`evaluate_coco` runs by default (pycocotools' iouType names).
IOU_TYPES = ("bbox", "segm")
#: Names of pycocotools' stats[0..5], as mmdet reports them (``<iou type>_<name>``).
STAT_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")
#: Mask probability at or above which a pixel belongs to the instance (mmdet's mask_thr_binary).
MASK_THRESHOLD = 0.5
#: Masks resized back to the original size per step (bounds memory at full resolution).
_MASK_CHUNK = 16


def _tensor(pred: Mapping[str, object], key: str, where: str) -> torch.Tensor:
    if key not in pred:
        raise ValueError(f"{where} lacks '{key}' (has {sorted(pred)})")
    return torch.as_tensor(pred[key]).detach().cpu()


def masks_to_original(
    masks: torch.Tensor, record: ImageRecord, threshold: float = MASK_THRESHOLD
) -> torch.Tensor:
    """masks: [N, 1, Hm, Wm] probabilities over the resized (possibly padded) image ->
    [N, H, W] bool at the original size: crop to ``record.resized_hw``, resize bilinearly (half-pixel
    centres) to ``record.orig_hw``, keep pixels ``>= threshold``."""
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must be [N, 1, H, W], got {tuple(masks.shape)}")
    rh, rw = record.resized_hw
    if masks.shape[2] < rh or masks.shape[3] < rw:
        raise ValueError(
            f"masks of image {record.image_id} are {masks.shape[2]}x{masks.shape[3]}, smaller than the "
            f"resized image {rh}x{rw}; expected masks over the resized (possibly padded) image"
        )
    out = torch.empty(masks.shape[0], *record.orig_hw, dtype=torch.bool)
    for start in range(0, masks.shape[0], _MASK_CHUNK):
        chunk = masks[start:start + _MASK_CHUNK, :, :rh, :rw].float()
        if (rh, rw) != record.orig_hw:
            chunk = F.interpolate(chunk, size=record.orig_hw, mode="bilinear", align_corners=False)
        out[start:start + _MASK_CHUNK] = (chunk[:, 0] >= threshold).cpu()
    return out


def _encode(masks: torch.Tensor) -> list[dict]:
    """[N, H, W] bool -> N compressed RLEs with str counts (JSON-ready)."""
    if masks.shape[0] == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
    return [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in rles]


def _image_results(
    record: ImageRecord, pred: Mapping[str, object], cat_ids: Sequence[int], with_masks: bool, where: str
) -> tuple[list[dict], list[dict]]:
    boxes, labels, scores = (_tensor(pred, k, where) for k in ("boxes", "labels", "scores"))
    if boxes.numel() == labels.numel() == scores.numel() == 0:
        return [], []
    n = boxes.shape[0] if boxes.dim() == 2 else -1
    if boxes.shape != (n, 4) or labels.shape != (n,) or scores.shape != (n,):
        raise ValueError(f"{where}: expected boxes [N, 4], labels [N], scores [N]; got "
                         f"{tuple(boxes.shape)}, {tuple(labels.shape)}, {tuple(scores.shape)}")
    bad = labels[(labels < 1) | (labels > len(cat_ids))]
    if bad.numel():
        raise ValueError(f"{where}: label {int(bad[0])} is outside 1..{len(cat_ids)} (0 is background; "
                         f"label k is the k-th of the sorted category ids {tuple(cat_ids)})")
    w_scale, h_scale = record.scale_factor
    xyxy = boxes.double() / torch.tensor([w_scale, h_scale, w_scale, h_scale], dtype=torch.float64)
    xywh = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], dim=1).tolist()
    cats = [int(cat_ids[k - 1]) for k in labels.tolist()]
    common = [{"image_id": record.image_id, "category_id": c, "score": float(s)}
              for c, s in zip(cats, scores.tolist())]
    bbox = [{**c, "bbox": b} for c, b in zip(common, xywh)]
    if not with_masks:
        return bbox, []
    masks = _tensor(pred, "masks", where)
    if masks.shape[0] != n:
        raise ValueError(f"{where}: {masks.shape[0]} masks for {n} boxes")
    segm = [{**c, "segmentation": rle} for c, rle in zip(common, _encode(masks_to_original(masks, record)))]
    return bbox, segm


def coco_results(
    gt: COCO, records: Sequence[ImageRecord], predictions: Sequence[Mapping[str, object]],
    iou_types: Sequence[str] = IOU_TYPES,
) -> dict[str, list[dict]]:
    """COCO results (``{"image_id", "category_id", "score", "bbox" | "segmentation"}`` in original
    image pixels) per iou type, from ``predictions[i]`` made on the image of ``records[i]``."""
    unknown = sorted(set(iou_types) - set(IOU_TYPES))
    if unknown:
        raise ValueError(f"unknown iou types {unknown}; allowed: {IOU_TYPES}")
    if len(predictions) != len(records):
        raise ValueError(
            f"{len(predictions)} predictions for {len(records)} image records; expected one each"
        )
    cat_ids = category_ids(gt)
    out: dict[str, list[dict]] = {"bbox": [], "segm": []}
    for i, (record, pred) in enumerate(zip(records, predictions)):
        where = f"prediction {i} (image {record.image_id})"
        if record.image_id not in gt.imgs:
            raise ValueError(f"{where}: the ground truth has no image with id {record.image_id}")
        bbox, segm = _image_results(record, pred, cat_ids, "segm" in iou_types, where)
        out["bbox"] += bbox
        out["segm"] += segm
    return {t: out[t] for t in iou_types}


def _stats(gt: COCO, results: list[dict], iou_type: str, img_ids: list[int]) -> dict[str, float]:
    """pycocotools' stats[0..5] as ``<iou_type>_<name>``; 0.0 with no results, NaN where the
    ground truth has no instance of that size (pycocotools' -1)."""
    names = [f"{iou_type}_{n}" for n in STAT_NAMES]
    if not results or not img_ids:
        return dict.fromkeys(names, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {n: (float(s) if s >= 0 else math.nan) for n, s in zip(names, ev.stats[: len(STAT_NAMES)])}


def evaluate_coco(
    gt: COCO | str | Path,
    records: Sequence[ImageRecord],
    predictions: Sequence[Mapping[str, object]],
    iou_types: Sequence[str] = IOU_TYPES,
) -> dict[str, float]:
    """COCO mAP of ``predictions`` (one dict per record, see the module docstring) on the images of
    ``records``.

    gt: the ground truth (a COCO object, e.g. ``read_coco(...).coco``, or the path of an instances
    JSON); iou_types: ``"bbox"`` and/or ``"segm"`` (``"segm"`` needs ``masks`` in every prediction).

    Returns ``{"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"}``
    and the same six ``segm_*`` keys: floats in 0..1 (pycocotools' stats[0..5]; mAP averages
    IoU 0.50:0.95, 100 detections per image). No detection at all gives 0.0; a size with no
    ground-truth instance gives NaN.
    """
    coco = gt if isinstance(gt, COCO) else load_coco_gt(gt)
    results = coco_results(coco, records, predictions, iou_types)
    return score_results(coco, results, sorted({r.image_id for r in records}))


def score_results(gt: COCO, results: Mapping[str, list[dict]], img_ids: Sequence[int]) -> dict[str, float]:
    """The stats of :func:`evaluate_coco` from COCO results gathered beforehand (``results``: iou
    type -> results, e.g. :func:`coco_results` of one image at a time, concatenated, so that no
    image's masks need to stay in memory) on the images ``img_ids``."""
    out: dict[str, float] = {}
    for t, res in results.items():
        out.update(_stats(gt, list(res), t, sorted(img_ids)))
    return out


__all__ = [
    "IOU_TYPES", "MASK_THRESHOLD", "STAT_NAMES", "coco_results", "evaluate_coco", "masks_to_original",
    "score_results",
]
