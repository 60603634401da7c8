"""COCO box and mask mAP through pycocotools: ground truth fed back scores 1, known partial scores,
back-mapping through the scale factor, the label -> category mapping and the mask threshold."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from harness.data.coco import ImageRecord, category_ids, load_coco_gt, read_coco, write_coco_gt
from harness.metrics.coco_eval import coco_results, evaluate_coco, masks_to_original

#: listed 7 before 3: the class index runs over the sorted ids (3 -> label 1, 7 -> label 2)
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
#: pycocotools' decode (annToMask) trips numpy 2's copy-keyword deprecation; not ours to fix
DECODE_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
#: what detectors pad their batch to (mmdet's pad_size_divisor)
PAD_DIVISOR = 32
#: pycocotools averages 101 recall points in float64: a perfect score comes out 1 - 2e-16
ROUNDING = 1e-12


def _approx(x: float):
    return pytest.approx(x, abs=ROUNDING)


def _rect(h: int, w: int, x: int, y: int, bw: int, bh: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y:y + bh, x:x + bw] = 1
    return m


def _gt(tmp_path: Path, anns: list[dict], hw: tuple[int, int] = (30, 40), n_images: int = 1):
    images = [{"id": i + 1, "file_name": f"{i + 1}.png", "width": hw[1], "height": hw[0]}
              for i in range(n_images)]
    return load_coco_gt(write_coco_gt(tmp_path / "gt.json", images, anns, CATEGORIES))


def _pred(boxes: list[list[float]], labels: list[int], scores: list[float], masks=None) -> dict:
    """A prediction as torchvision returns it (boxes xyxy in the resized image)."""
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
           "labels": torch.tensor(labels, dtype=torch.int64),
           "scores": torch.tensor(scores, dtype=torch.float32)}
    return out if masks is None else {**out, "masks": masks}


def _record(image_id: int, orig_hw: tuple[int, int], w_scale: float, h_scale: float) -> ImageRecord:
    h, w = orig_hw
    return ImageRecord(image_id, Path(f"{image_id}.png"), orig_hw, (round(h * h_scale), round(w * w_scale)),
                       (w_scale, h_scale))


def _upscaled_padded(mask: np.ndarray, record: ImageRecord) -> torch.Tensor:
    """An original-size mask as a detector gives it: [1, Hpad, Wpad] float over the resized image
    (integer scale factors: each pixel repeated), zero-padded to a multiple of PAD_DIVISOR."""
    w_scale, h_scale = record.scale_factor
    m = torch.from_numpy(mask).float().repeat_interleave(int(h_scale), 0).repeat_interleave(int(w_scale), 1)
    assert tuple(m.shape) == record.resized_hw
    pad_h, pad_w = (-m.shape[0]) % PAD_DIVISOR, (-m.shape[1]) % PAD_DIVISOR
    return F.pad(m, (0, pad_w, 0, pad_h))[None]


def _from_gt(coco, record: ImageRecord, labels: dict[int, int] | None = None, scores=None) -> dict:
    """The ground truth of ``record``'s image as a prediction in its resized frame (score 1)."""
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[record.image_id]))
    cats = category_ids(coco)
    w_scale, h_scale = record.scale_factor
    boxes = [[x * w_scale, y * h_scale, (x + w) * w_scale, (y + h) * h_scale] for x, y, w, h in
             (a["bbox"] for a in anns)]
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([(labels or {}).get(a["id"], cats.index(a["category_id"]) + 1) for a in anns]),
        "scores": torch.tensor(scores if scores is not None else [1.0] * len(anns)),
        "masks": torch.stack([_upscaled_padded(coco.annToMask(a), record) for a in anns])
        if anns else torch.zeros(0, 1, *record.resized_hw),
    }


# --------------------------------------------------------------------------- ground truth fed back


def _write_folder(root: Path) -> Path:
    """Three images (short side 30) with a polygon (cat 3), an RLE disc (cat 7) and a box+mask each."""
    sizes = {1: (30, 40), 2: (45, 30), 3: (30, 60)}
    (root / "val2017").mkdir(parents=True)
    for i, (h, w) in sizes.items():
        Image.new("RGB", (w, h), (50 * i, 0, 0)).save(root / "val2017" / f"{i}.png")
    yy, xx = np.mgrid[:45, :30]
    anns = [
        {"image_id": 1, "category_id": 3, "bbox": [5, 4, 12, 10],
         "segmentation": [[5, 4, 17, 4, 17, 14, 5, 14]]},
        {"image_id": 1, "category_id": 7, "segmentation": _rect(30, 40, 20, 15, 15, 12)},
        {"image_id": 2, "category_id": 7,
         "segmentation": ((yy - 20) ** 2 + (xx - 14) ** 2 <= 64).astype(np.uint8)},
        {"image_id": 3, "category_id": 3, "segmentation": _rect(30, 60, 30, 2, 25, 20)},
        {"image_id": 3, "category_id": 7, "segmentation": _rect(30, 60, 2, 10, 20, 15)},
    ]
    images = [{"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i, (h, w) in sizes.items()]
    write_coco_gt(root / "annotations" / "instances_val2017.json", images, anns, CATEGORIES)
    return root


@pytest.mark.filterwarnings(DECODE_WARNING)
def test_ground_truth_fed_back_through_the_reader_scores_1(tmp_path):
    # factor 2 for every image (short side 30 -> 60), masks padded to a multiple of 32
    ds = read_coco(_write_folder(tmp_path / "coco"), short_side_px=60, max_long_side_px=200)
    assert {r.scale_factor for r in ds.records} == {(2.0, 2.0)}
    out = evaluate_coco(ds.coco, ds.records, [_from_gt(ds.coco, r) for r in ds.records])
    for key in ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "segm_mAP", "segm_mAP_50", "segm_mAP_75"):
        assert out[key] == _approx(1.0), key
    assert math.isnan(out["bbox_mAP_l"])  # no large instance in the ground truth


@pytest.mark.filterwarnings(DECODE_WARNING)
def test_a_subset_is_scored_on_its_own_images(tmp_path):
    # the third image's ground truth must not count as missed when only two images were read
    ds = read_coco(_write_folder(tmp_path / "coco"), limit=2, short_side_px=60, max_long_side_px=200)
    out = evaluate_coco(ds.coco, ds.records, [_from_gt(ds.coco, r) for r in ds.records])
    assert (out["bbox_mAP"], out["segm_mAP"]) == _approx((1.0, 1.0))


# --------------------------------------------------------------------------- known lower values

A = {"image_id": 1, "category_id": 3, "bbox": [2, 2, 10, 10], "segmentation": _rect(30, 40, 2, 2, 10, 10)}
B = {"image_id": 1, "category_id": 7, "bbox": [20, 10, 12, 8], "segmentation": _rect(30, 40, 20, 10, 12, 8)}


@pytest.mark.filterwarnings(DECODE_WARNING)
def test_a_wrong_class_ranked_first_halves_that_class_and_misses_the_other(tmp_path):
    # B (a dog) predicted as a cat with score 1.0, A (the cat) right with 0.9.
    # cat: detections B (false positive), A (true positive) -> precision 1/2 at recall 1 -> AP 0.5;
    # dog: no detection -> AP 0; mean over the two classes 0.25 at every IoU threshold
    coco = _gt(tmp_path, [A, B])
    record = _record(1, (30, 40), 2.0, 2.0)
    pred = _from_gt(coco, record, labels={2: 1}, scores=[0.9, 1.0])
    out = evaluate_coco(coco, [record], [pred])
    for key in ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "segm_mAP", "segm_mAP_50", "segm_mAP_75"):
        assert out[key] == _approx(0.25), key


def test_a_box_at_iou_0_6_counts_at_ap50_but_not_at_ap75(tmp_path):
    # ground truth x 2..12; prediction shifted by 2.5 px: overlap 7.5 x 10 = 75, union 125, IoU 0.6.
    # It matches at thresholds 0.50, 0.55, 0.60 (pycocotools matches IoU >= threshold) of the ten
    # 0.50:0.05:0.95 -> mAP 3/10
    coco = _gt(tmp_path, [A])
    record = _record(1, (30, 40), 2.0, 2.0)
    pred = _pred([[4.5 * 2, 2 * 2, 14.5 * 2, 12 * 2]], [1], [0.8])
    out = evaluate_coco(coco, [record], [pred], iou_types=("bbox",))
    assert (out["bbox_mAP_50"], out["bbox_mAP_75"]) == _approx((1.0, 0.0))
    assert out["bbox_mAP"] == _approx(0.3)
    assert not any(k.startswith("segm") for k in out)


# --------------------------------------------------------------------------- mapping back


@pytest.mark.filterwarnings(DECODE_WARNING)
def test_predictions_in_resized_pixels_are_divided_back_per_axis(tmp_path):
    # x scaled by 2 and y by 3: multiplying instead of dividing, or swapping the axes, misses the box;
    # the masks are padded, so resizing without cropping first misplaces them
    coco = _gt(tmp_path, [A, B])
    record = _record(1, (30, 40), 2.0, 3.0)
    assert record.resized_hw == (90, 80)
    pred = _from_gt(coco, record)
    torch.testing.assert_close(pred["boxes"][0], torch.tensor([4.0, 6.0, 24.0, 36.0]))
    assert pred["masks"].shape[-2:] == (96, 96)
    out = evaluate_coco(coco, [record], [pred])
    assert (out["bbox_mAP"], out["segm_mAP"]) == _approx((1.0, 1.0))
    results = coco_results(coco, [record], [pred])
    assert results["bbox"][0]["bbox"] == [2.0, 2.0, 10.0, 10.0]  # xywh in original pixels


@pytest.mark.filterwarnings(DECODE_WARNING)
def test_labels_run_over_the_sorted_category_ids_after_background(tmp_path):
    # label 1 -> 3 (cat), label 2 -> 7 (dog). Labels used as ids (1, 2), no background offset
    # (1 -> 7) or the file's order (7 first) all put the boxes in the wrong class
    coco = _gt(tmp_path, [A, B])
    record = _record(1, (30, 40), 1.0, 1.0)
    pred = _from_gt(coco, record)
    assert pred["labels"].tolist() == [1, 2]
    assert [r["category_id"] for r in coco_results(coco, [record], [pred])["bbox"]] == [3, 7]
    assert evaluate_coco(coco, [record], [pred])["bbox_mAP"] == _approx(1.0)


@pytest.mark.parametrize("label", [0, 3])
def test_a_label_outside_1_to_k_is_refused(tmp_path, label):
    coco = _gt(tmp_path, [A])
    pred = _pred([[0.0, 0, 5, 5]], [label], [1.0])
    with pytest.raises(ValueError, match=f"label {label} is outside 1..2"):
        evaluate_coco(coco, [_record(1, (30, 40), 1.0, 1.0)], [pred], iou_types=("bbox",))


# --------------------------------------------------------------------------- masks


def test_mask_probabilities_are_kept_at_or_above_one_half(tmp_path):
    # object 0.5, background 0.4: ">= 0.5" keeps exactly the object; "> 0" or no threshold would keep
    # the whole image (IoU 100 / 1200) and "> 0.5" nothing
    coco = _gt(tmp_path, [A])
    record = _record(1, (30, 40), 1.0, 1.0)
    probs = torch.full((1, 1, 30, 40), 0.4)
    probs[0, 0, 2:12, 2:12] = 0.5
    pred = _pred([[2.0, 2, 12, 12]], [1], [1.0], masks=probs)
    assert masks_to_original(probs, record).sum() == 100
    assert evaluate_coco(coco, [record], [pred])["segm_mAP"] == _approx(1.0)


def test_masks_smaller_than_the_resized_image_are_refused():
    record = _record(1, (30, 40), 2.0, 2.0)
    with pytest.raises(ValueError, match="smaller than the resized image 60x80"):
        masks_to_original(torch.zeros(1, 1, 30, 40), record)


def test_segm_results_carry_no_box_so_the_area_is_the_masks(tmp_path):
    coco = _gt(tmp_path, [A])
    record = _record(1, (30, 40), 1.0, 1.0)
    mask = torch.from_numpy(_rect(30, 40, 2, 2, 10, 10)).float()[None, None]
    pred = _pred([[0.0, 0, 30, 30]], [1], [1.0], masks=mask)
    (segm,) = coco_results(coco, [record], [pred])["segm"]
    assert "bbox" not in segm and segm["segmentation"]["size"] == [30, 40]


# --------------------------------------------------------------------------- empty and quiet


def test_no_predictions_give_zero_not_a_crash(tmp_path):
    coco = _gt(tmp_path, [A])
    assert set(evaluate_coco(coco, [], []).values()) == {0.0}
    empty = _pred([], [], [], masks=torch.zeros(0, 1, 30, 40))
    out = evaluate_coco(coco, [_record(1, (30, 40), 1.0, 1.0)], [empty])
    assert len(out) == 12 and set(out.values()) == {0.0}


def test_pycocotools_prints_nothing(tmp_path, capsys):
    coco = _gt(tmp_path, [A])
    pred = _pred([[2.0, 2, 12, 12]], [1], [1.0])
    evaluate_coco(coco, [_record(1, (30, 40), 1.0, 1.0)], [pred], iou_types=("bbox",))
    assert capsys.readouterr().out == ""


def test_one_prediction_per_record(tmp_path):
    coco = _gt(tmp_path, [A])
    with pytest.raises(ValueError, match="0 predictions for 1 image records"):
        evaluate_coco(coco, [_record(1, (30, 40), 1.0, 1.0)], [])
