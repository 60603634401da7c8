"""The procedural detection scenes (``harness.data.det_scenes``): determinism, annotations that match
the pixels, the occlusion and size policy, class balance, and the COCO folder the evaluation reads."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from harness.data.det_scenes import (
    CLASS_NAMES,
    MAX_INDEX,
    NUM_CLASSES,
    STAGE_WINDOW_PX,
    TRAIN_SEED,
    VAL_SEED,
    DetScene,
    DetScenesConfig,
    evidence_windows,
    make_det_batch,
    make_det_scene,
    write_coco_folder,
)
from harness.data.shapes import HUE_NAMES

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # pycocotools' mask decoding under numpy 2 (harmless)
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

DEFAULT = DetScenesConfig()
#: small and fast: for statistics over many scenes (the label and count draws do not depend on sizes)
SMALL = DetScenesConfig(img_size=96, radius_px=(5.0, 10.0), lure_radius_px=(4.0, 8.0), period_px=(3.0, 5.0))
#: six large objects on a small image: occlusion in most scenes
CROWDED = DetScenesConfig(img_size=128, n_objects=(6, 6), radius_px=(12.0, 22.0), lure_radius_px=(6.0, 10.0),
                          period_px=(4.0, 6.0))
N_DEFAULT = 10
N_COCO = 3
N_FREQ = 100
#: extent (larger box side) of a shape of half-extent r: a triangle is at least 1.5 r wide (its height),
#: a rotated square at most 2 * 0.8 * sqrt(2) r
MIN_EXTENT_PER_R, MAX_EXTENT_PER_R = 1.5, 1.6 * math.sqrt(2)


@pytest.fixture(scope="module")
def scenes() -> list[DetScene]:
    torch.set_num_threads(1)
    return [make_det_scene(DEFAULT, VAL_SEED, i) for i in range(N_DEFAULT)]


@pytest.fixture(scope="module")
def crowded() -> list[DetScene]:
    torch.set_num_threads(1)
    return [make_det_scene(CROWDED, TRAIN_SEED, i) for i in range(12)]


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("det_coco")
    path = write_coco_folder(DEFAULT, root, N_COCO, VAL_SEED)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    return root, path, coco


def _tight_box(mask: torch.Tensor) -> list[float]:
    """Pixel edges around a [H, W] mask: first column, first row, last column + 1, last row + 1."""
    ys, xs = mask.nonzero(as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _hue_sat(rgb: torch.Tensor) -> tuple[float, float]:
    """rgb: [3] in [0, 1] -> (hue in degrees, saturation)."""
    r, g, b = rgb.tolist()
    mx, mn = max(r, g, b), min(r, g, b)
    d = max(mx - mn, 1e-6)
    hue = ((g - b) / d) % 6 if mx == r else ((b - r) / d + 2 if mx == g else (r - g) / d + 4)
    return 60.0 * hue, (mx - mn) / max(mx, 1e-6)


def _assert_objects_carry_their_class_hue(s: DetScene) -> None:
    px = s.image.permute(1, 2, 0)  # [S, S, 3]
    for label, mask in zip(s.labels.tolist(), s.masks):
        obj = px[mask]
        bright = obj[obj.max(-1).values >= obj.max(-1).values.median()]  # the texture's light level
        hue, sat = _hue_sat(bright.mean(0))
        centre = 360.0 / len(HUE_NAMES) * HUE_NAMES.index(CLASS_NAMES[label - 1])
        assert abs((hue - centre + 180) % 360 - 180) <= 14.0, (label, hue)  # jitter 10 + grain
        assert sat >= 0.6


# ------------------------------------------------------------------------------- determinism


def test_a_scene_is_a_function_of_seed_and_index_only(scenes):
    again = make_det_scene(DEFAULT, VAL_SEED, 4)
    for field in ("image", "boxes", "labels", "masks", "amodal_masks"):
        assert torch.equal(getattr(again, field), getattr(scenes[4], field)), field
    images, targets = make_det_batch(DEFAULT, VAL_SEED, [7, 4])  # not on the batch it is drawn with
    assert torch.equal(images[1], scenes[4].image) and torch.equal(images[0], scenes[7].image)
    assert torch.equal(targets[1]["boxes"], scenes[4].boxes)


def test_other_indices_and_seeds_give_other_scenes(scenes):
    other_seed = make_det_scene(DEFAULT, TRAIN_SEED, 4)
    for other in (scenes[5], other_seed):
        assert (other.image - scenes[4].image).abs().mean() > 0.05
        assert other.boxes.shape != scenes[4].boxes.shape or not torch.equal(other.boxes, scenes[4].boxes)


def test_the_layout_of_a_scene_depends_on_its_seed_too():
    """Counts and labels of two seeds' scenes 0..5 differ (not only their pixels and sprite sizes)."""
    layouts = [[make_det_scene(SMALL, seed, i).labels.tolist() for i in range(6)] for seed in (TRAIN_SEED, 1)]
    assert layouts[0] != layouts[1]


def test_seeds_and_indices_outside_the_one_to_one_range_are_refused():
    with pytest.raises(ValueError, match="seed 256"):
        make_det_scene(SMALL, 256, 0)
    with pytest.raises(ValueError, match="index"):
        make_det_scene(SMALL, 0, MAX_INDEX)
    with pytest.raises(ValueError, match="index"):
        make_det_scene(SMALL, 0, -1)


def test_the_config_refuses_unknown_classes_and_impossible_ranges():
    with pytest.raises(ValueError, match="class_hues"):
        DetScenesConfig(class_hues=("red", "pink"))
    with pytest.raises(ValueError, match="class_hues"):
        DetScenesConfig(class_hues=("red", "red"))
    with pytest.raises(ValueError, match="n_objects"):
        DetScenesConfig(n_objects=(0, 3))
    with pytest.raises(ValueError, match="img_size"):
        DetScenesConfig(img_size=64, radius_px=(12.0, 48.0))
    with pytest.raises(ValueError, match="max_hidden_frac"):
        DetScenesConfig(max_hidden_frac=1.0)


# ------------------------------------------------------------------------------- annotations


def test_boxes_are_the_tight_pixel_edges_of_the_visible_masks(scenes, crowded):
    differs_from_amodal = 0
    for s in scenes + crowded:
        assert s.boxes.dtype == torch.float32 and s.boxes.shape == (len(s.labels), 4)
        for box, mask, amodal in zip(s.boxes.tolist(), s.masks, s.amodal_masks):
            assert box == _tight_box(mask)
            differs_from_amodal += box != _tight_box(amodal)
    # else boxes taken from the whole (unoccluded) shapes would pass too
    assert differs_from_amodal >= 3


def test_masks_are_nonempty_disjoint_and_inside_the_image_and_their_whole_shape(scenes, crowded):
    for s in scenes + crowded:
        S = s.image.shape[-1]
        assert s.masks.dtype == torch.bool and s.masks.shape == (len(s.labels), S, S)
        assert s.masks.flatten(1).any(1).all()
        assert not (s.masks & ~s.amodal_masks).any()
        assert s.masks.sum(0).max() <= 1  # a pixel is visible on one object at most
        assert (s.boxes >= 0).all() and (s.boxes <= S).all()
        assert (s.boxes[:, 2:] > s.boxes[:, :2]).all()


def test_objects_hide_each_other_at_most_the_bound_but_may_overlap(crowded):
    hidden = torch.cat([1 - s.masks.flatten(1).sum(1) / s.amodal_masks.flatten(1).sum(1) for s in crowded])
    assert float(hidden.max()) <= CROWDED.max_hidden_frac + 1e-6
    assert float(hidden.max()) > CROWDED.max_hidden_frac / 2  # overlap does happen, up to near the bound
    assert sum(len(s.labels) for s in crowded) == 6 * len(crowded)  # nothing dropped at this density


def test_an_object_that_finds_no_place_is_dropped_with_its_label():
    """No overlap allowed and eight large objects on 96 px: some are dropped, and the kept ones keep
    their own labels (not the first labels drawn)."""
    cfg = DetScenesConfig(img_size=96, n_objects=(8, 8), radius_px=(14.0, 20.0), lure_radius_px=(4.0, 6.0),
                          period_px=(4.0, 6.0), max_hidden_frac=0.0)
    crammed = [make_det_scene(cfg, TRAIN_SEED, i) for i in range(4)]
    assert min(len(s.labels) for s in crammed) < 8
    for s in crammed:
        assert torch.equal(s.masks, s.amodal_masks)  # nothing hidden at a bound of 0
        _assert_objects_carry_their_class_hue(s)


def test_objects_respect_the_size_range(scenes):
    lo, hi = DEFAULT.radius_px
    extents = []
    for s in scenes:
        for amodal in s.amodal_masks:
            x0, y0, x1, y1 = _tight_box(amodal)
            extents.append(max(x1 - x0, y1 - y0))
    assert MIN_EXTENT_PER_R * lo - 1 <= min(extents) and max(extents) <= MAX_EXTENT_PER_R * hi + 2
    # the whole range is used, not a corner of it (e.g. radius read as a diameter)
    assert min(extents) <= 4 * lo and max(extents) >= 1.6 * hi


def test_labels_are_1_to_k_and_every_class_appears_with_a_sane_frequency():
    labels, counts = [], []
    for i in range(N_FREQ):
        s = make_det_scene(SMALL, TRAIN_SEED, i)
        labels.append(s.labels)
        counts.append(len(s.labels))
    labels = torch.cat(labels)
    assert labels.dtype == torch.int64 and int(labels.min()) >= 1 and int(labels.max()) <= NUM_CLASSES
    freq = torch.bincount(labels, minlength=NUM_CLASSES + 1)[1:].float() / len(labels)
    # about 400 objects: 80 +- 8 per class, so +-40 % is a 4-sigma band
    assert (freq > 0.6 / NUM_CLASSES).all() and (freq < 1.4 / NUM_CLASSES).all(), freq
    assert set(counts) == set(range(SMALL.n_objects[0], SMALL.n_objects[1] + 1))


def test_each_object_carries_its_class_hue_and_the_rest_of_the_scene_is_grey(scenes):
    for s in scenes:
        _assert_objects_carry_their_class_hue(s)
        px = s.image.permute(1, 2, 0)  # [S, S, 3]
        rest = px[~s.masks.any(0)]
        assert float((rest.max(-1).values - rest.min(-1).values).mean()) < 0.15


def test_only_the_objects_are_annotated_not_the_lures_or_the_background(scenes):
    for i in (0, 1, 2, 3):
        without = make_det_scene(DEFAULT, VAL_SEED, i, draw_objects=False)
        assert torch.equal(without.masks, scenes[i].masks) and torch.equal(without.boxes, scenes[i].boxes)
        changed = (scenes[i].image - without.image).abs().amax(0) > 1e-6  # [S, S]
        union = scenes[i].masks.any(0)
        # every annotated pixel is an object pixel: a lure or background pixel does not change
        assert int((union & ~changed).sum()) <= 0.02 * int(union.sum())
        assert not (changed & ~union).any()  # and every object pixel is annotated


def test_the_training_batch_is_torchvision_style(scenes):
    images, targets = make_det_batch(DEFAULT, VAL_SEED, [0, 1])
    assert len(images) == len(targets) == 2
    for image, target, s in zip(images, targets, scenes[:2]):
        assert image.shape == (3, 448, 448) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert set(target) == {"boxes", "labels", "masks"}
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert target["masks"].dtype == torch.uint8 and torch.equal(target["masks"].bool(), s.masks)


# ------------------------------------------------------------------------------- windows


def test_evidence_windows_are_the_windows_holding_object_pixels():
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 5, 9] = True  # row 5, column 9: window (1, 2) of a 4 px grid (the last one cut off)
    expected = torch.zeros(3, 3, dtype=torch.bool)
    expected[1, 2] = True
    assert torch.equal(evidence_windows(mask, 4), expected)
    assert not evidence_windows(torch.zeros(0, 10, 10, dtype=torch.bool), 4).any()


def test_at_448_px_the_stages_have_256_64_16_4_windows_and_few_early_ones_hold_objects(scenes):
    grids = [tuple(evidence_windows(scenes[0].masks, w).shape) for w in STAGE_WINDOW_PX]
    assert grids == [(16, 16), (8, 8), (4, 4), (2, 2)]
    stage1 = torch.stack([evidence_windows(s.masks, STAGE_WINDOW_PX[0]).float().mean() for s in scenes])
    assert float(stage1.mean()) < 0.25 and float(stage1.max()) < 0.4


# ------------------------------------------------------------------------------- COCO folder


def test_the_coco_json_holds_the_scenes_images_and_categories(coco_folder):
    root, path, coco = coco_folder
    assert path == root / "annotations" / "instances_val2017.json"
    cats = coco.loadCats(coco.getCatIds())
    assert [(c["id"], c["name"]) for c in cats] == [(k + 1, n) for k, n in enumerate(CLASS_NAMES)]
    imgs = coco.loadImgs(sorted(coco.getImgIds()))
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in imgs] == [
        (k + 1, f"{k + 1:012d}.png", 448, 448) for k in range(N_COCO)]
    ann_ids = [a["id"] for a in json.loads(path.read_text())["annotations"]]
    assert min(ann_ids) >= 1 and len(set(ann_ids)) == len(ann_ids)  # COCOeval reads id 0 as "unmatched"


def test_the_coco_annotations_are_the_scenes_boxes_as_xywh_and_masks_as_rle(coco_folder, scenes):
    _, _, coco = coco_folder
    for k in range(N_COCO):
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[k + 1])), key=lambda a: a["id"])
        s = scenes[k]
        assert len(anns) == len(s.labels)
        for ann, box, label, mask in zip(anns, s.boxes.tolist(), s.labels.tolist(), s.masks):
            x0, y0, x1, y1 = box
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert ann["category_id"] == label and ann["iscrowd"] == 0
            rle = coco.annToRLE(ann)
            assert mask_util.toBbox(rle).tolist() == ann["bbox"]  # pycocotools' own box of the mask
            assert np.array_equal(coco.annToMask(ann), mask.numpy().astype(np.uint8))
            assert ann["area"] == float(mask.sum())


def test_the_images_round_trip_through_png_within_one_level(coco_folder, scenes):
    root, _, coco = coco_folder
    for k in range(N_COCO):
        with Image.open(root / "val2017" / coco.loadImgs([k + 1])[0]["file_name"]) as im:
            assert im.mode == "RGB" and im.size == (448, 448)
            back = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255
        assert float((back - scenes[k].image).abs().max()) <= 1 / 255 + 1e-6


def test_cocoeval_scores_the_ground_truth_as_perfect_detections(coco_folder):
    _, _, coco = coco_folder
    for iou_type in ("bbox", "segm"):
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                 "segmentation": a["segmentation"], "score": 1.0} for a in coco.dataset["annotations"]]
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(coco, coco.loadRes(dets), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0), iou_type
