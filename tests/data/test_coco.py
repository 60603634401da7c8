"""The COCO-format reader: selection, mmdet's test resize, pixel values, categories, the ground-truth
writer and one-paragraph errors for bad input, on a tiny folder written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data.coco import (
    CocoDataError,
    load_coco_gt,
    read_coco,
    rescaled_hw,
    write_coco_gt,
)
from harness.errors import HarnessError

#: (id, file, width, height, RGB) in the JSON's order: ids unsorted, so "first N by id" differs
#: from "first N in the file"
IMAGES = [(5, "b.png", 40, 30, (255, 0, 128)), (2, "a.png", 30, 45, (0, 64, 255)),
          (9, "c.png", 60, 30, (9, 9, 9))]
#: listed 7 before 3, so sorted order differs from file order
CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def _write_folder(root: Path, images=IMAGES) -> Path:
    """root/val2017/<images>, root/annotations/instances_val2017.json (a polygon on image 2 and an
    RLE disc on image 5 when those images are there)."""
    (root / "val2017").mkdir(parents=True)
    for _, name, w, h, rgb in images:
        Image.new("RGB", (w, h), rgb).save(root / "val2017" / name)
    anns = [
        {"image_id": 2, "category_id": 3, "bbox": [5, 10, 10, 20],
         "segmentation": [[5, 10, 15, 10, 15, 30, 5, 30]]},
        {"image_id": 5, "category_id": 7, "segmentation": _disc(30, 40, 15, 20, 6)},
    ]
    anns = [a for a in anns if a["image_id"] in {i for i, *_ in images}]
    write_coco_gt(root / "annotations" / "instances_val2017.json",
                  [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h, _ in images],
                  anns, CATEGORIES)
    return root


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    return _write_folder(tmp_path / "coco")


# --------------------------------------------------------------------------- selection


def test_images_come_in_ascending_id_order(coco_dir):
    assert [r.image_id for r in read_coco(coco_dir).records] == [2, 5, 9]


def test_limit_keeps_the_first_images_by_id_not_by_file_order(coco_dir):
    ds = read_coco(coco_dir, limit=2)
    assert [r.image_id for r in ds.records] == [2, 5]
    assert len(ds) == 2
    assert ds.records[0].path == coco_dir / "val2017" / "a.png"


def test_names_of_the_annotation_file_and_image_folder_can_be_given(coco_dir, tmp_path):
    moved = tmp_path / "elsewhere"
    (coco_dir / "annotations" / "instances_val2017.json").rename(coco_dir / "gt.json")
    (coco_dir / "val2017").rename(moved)
    ds = read_coco(coco_dir, annotation_file="gt.json", image_dir=moved)
    assert ds.annotation_file == coco_dir / "gt.json"
    assert ds.records[0].path == moved / "a.png"


def test_category_ids_are_sorted_not_in_file_order(coco_dir):
    assert read_coco(coco_dir).cat_ids == (3, 7)


# --------------------------------------------------------------------------- geometry


def test_a_100x50_image_is_bound_by_the_long_side(tmp_path):
    # 800 / 50 = 16 would make the long side 1600 > 1333, so factor = 1333 / 100 = 13.33:
    # W = int(100 * 13.33 + 0.5) = 1333, H = int(50 * 13.33 + 0.5) = int(667.0) = 667
    root = _write_folder(tmp_path / "coco", [(1, "wide.png", 100, 50, (10, 20, 30))])
    image, record = read_coco(root)[0]
    assert image.shape == (3, 667, 1333)
    assert record.orig_hw == (50, 100)
    assert record.resized_hw == (667, 1333)
    assert record.scale_factor == (1333 / 100, 667 / 50)  # (w_scale, h_scale) = (13.33, 13.34)


def test_the_short_side_becomes_800_when_the_long_side_allows():
    # 30 x 40 (H x W): 800 / 30 = 26.67 < 1333 / 40 = 33.3 -> H = 800, W = int(1066.67 + 0.5) = 1067
    assert rescaled_hw(30, 40) == (800, 1067)
    assert rescaled_hw(480, 640) == (800, 1067)  # a typical COCO image
    assert rescaled_hw(45, 30) == (1200, 800)  # portrait: the short side is the width


def test_the_resize_is_a_parameter(coco_dir):
    ds = read_coco(coco_dir, short_side_px=60, max_long_side_px=100)
    by_id = {r.image_id: r for r in ds.records}
    assert by_id[5].resized_hw == (60, 80)  # 30 x 40, factor 2
    assert by_id[5].scale_factor == (2.0, 2.0)
    assert by_id[9].resized_hw == (50, 100)  # 30 x 60: 60 / 30 = 2 would pass 100; factor 100 / 60
    assert ds[1][0].shape == (3, 60, 80)


def test_pixels_are_rgb_in_0_1_and_not_normalized(coco_dir):
    image, record = read_coco(coco_dir, limit=2)[1]  # id 5: solid (255, 0, 128)
    assert record.image_id == 5
    expected = torch.tensor([1.0, 0.0, 128 / 255]).view(3, 1, 1).expand_as(image)
    torch.testing.assert_close(image, expected, rtol=0, atol=1e-6)


def test_resampling_is_bilinear_with_half_pixel_centres(tmp_path):
    # columns [0, 0, 255, 255] doubled: output column j samples x = (j + 0.5) / 2 - 0.5 (clamped),
    # cv2.INTER_LINEAR's convention; nearest would give [0, 0, 0, 0, 1, 1, 1, 1]
    root = tmp_path / "coco"
    _write_folder(root, [(1, "edge.png", 4, 2, (0, 0, 0))])
    Image.fromarray(np.repeat(np.array([[0, 0, 255, 255]] * 2, np.uint8)[..., None], 3, axis=2)).save(
        root / "val2017" / "edge.png")
    image, _ = read_coco(root, short_side_px=4, max_long_side_px=8)[0]
    torch.testing.assert_close(image[0, 0], torch.tensor([0, 0, 0, 0.25, 0.75, 1, 1, 1]), rtol=0, atol=1e-6)


def test_downscaling_does_not_antialias(tmp_path):
    # columns [1, 0, 0, 1, 1, 0, 0, 1] shrunk 4x: output column j samples x = 4 j + 1.5, between two
    # zeros, as cv2.INTER_LINEAR does; an antialiasing filter (PIL, antialias=True) would average in the ones
    root = tmp_path / "coco"
    _write_folder(root, [(1, "stripes.png", 8, 4, (0, 0, 0))])
    row = np.array([255, 0, 0, 255, 255, 0, 0, 255], np.uint8)
    rgb = np.broadcast_to(row[None, :, None], (4, 8, 3)).copy()
    Image.fromarray(rgb).save(root / "val2017" / "stripes.png")
    image, record = read_coco(root, short_side_px=1, max_long_side_px=2)[0]
    assert record.resized_hw == (1, 2)
    torch.testing.assert_close(image[:, 0], torch.zeros(3, 2), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- writing ground truth


#: pycocotools' decode (annToMask) trips numpy 2's copy-keyword deprecation; not ours to fix
DECODE_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


@pytest.mark.filterwarnings(DECODE_WARNING)
def test_write_coco_gt_stores_polygons_rle_areas_and_boxes(coco_dir):
    coco = load_coco_gt(coco_dir / "annotations" / "instances_val2017.json")
    poly, rle = coco.loadAnns(coco.getAnnIds(imgIds=[2]))[0], coco.loadAnns(coco.getAnnIds(imgIds=[5]))[0]
    assert (poly["category_id"], poly["bbox"], poly["area"]) == (3, [5, 10, 10, 20], 200.0)
    disc = _disc(30, 40, 15, 20, 6)
    np.testing.assert_array_equal(coco.annToMask(rle), disc)
    assert rle["area"] == disc.sum()
    ys, xs = np.nonzero(disc)
    assert rle["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert [a["id"] for a in coco.dataset["annotations"]] == [1, 2]


def test_write_coco_gt_accepts_a_category_mapping_and_a_torch_mask(tmp_path):
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[1:3, 2:5] = True
    path = write_coco_gt(tmp_path / "gt.json", [{"id": 1, "file_name": "x.png", "width": 6, "height": 4}],
                         [{"image_id": 1, "category_id": 12, "segmentation": mask}], {12: "thing"})
    coco = load_coco_gt(path)
    assert coco.loadCats(12)[0]["name"] == "thing"
    assert coco.loadAnns(1)[0]["bbox"] == [2, 1, 3, 2]


@pytest.mark.parametrize("ann, match", [
    ({"image_id": 4, "category_id": 12, "bbox": [0, 0, 1, 1]}, "image_id 4"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}, "category_id 1"),
    ({"image_id": 1, "category_id": 12, "segmentation": np.ones((6, 4))}, "mask shape"),
    ({"image_id": 1, "category_id": 12, "segmentation": [0, 0, 1, 0, 1, 1]}, "list of polygons"),
])
def test_write_coco_gt_refuses_an_annotation_that_does_not_fit(tmp_path, ann, match):
    with pytest.raises(ValueError, match=match):
        write_coco_gt(tmp_path / "gt.json", [{"id": 1, "file_name": "x.png", "width": 6, "height": 4}],
                      [ann], {12: "thing"})


# --------------------------------------------------------------------------- bad input


def _one_paragraph(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert isinstance(err.value, HarnessError)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(CocoDataError) as err:
        read_coco(tmp_path / "nope")
    assert "give the folder that holds annotations/instances_val2017.json" in _one_paragraph(
        err, tmp_path / "nope")


def test_a_missing_annotation_file_is_named_with_what_is_there(coco_dir):
    ann = coco_dir / "annotations" / "instances_val2017.json"
    ann.rename(coco_dir / "annotations" / "instances_train2017.json")
    with pytest.raises(CocoDataError) as err:
        read_coco(coco_dir)
    msg = _one_paragraph(err, ann)
    assert "instances_train2017.json" in msg and "annotation_file=" in msg


@pytest.mark.parametrize("text, says", [
    ('{"images": [', "cannot be read as JSON"),
    ("[1, 2]", "holds a JSON list"),
    ('{"categories": []}', "no 'images' list"),
    ('{"images": [{"id": 1}], "categories": []}', "lacks file_name, width, height"),
])
def test_a_corrupt_annotation_file_is_named(coco_dir, text, says):
    ann = coco_dir / "annotations" / "instances_val2017.json"
    ann.write_text(text)
    with pytest.raises(CocoDataError) as err:
        read_coco(coco_dir)
    assert says in _one_paragraph(err, ann)


def test_a_missing_image_folder_is_named(coco_dir):
    with pytest.raises(CocoDataError) as err:
        read_coco(coco_dir, image_dir="train2017")
    assert "image_dir=" in _one_paragraph(err, coco_dir / "train2017")


def test_an_image_listed_but_absent_is_named_before_any_is_decoded(coco_dir):
    (coco_dir / "val2017" / "c.png").unlink()
    with pytest.raises(CocoDataError) as err:
        read_coco(coco_dir)
    msg = _one_paragraph(err, coco_dir / "val2017" / "c.png")
    assert "(id 9)" in msg and "1 of the 3" in msg and "limit=" in msg
    assert [r.image_id for r in read_coco(coco_dir, limit=2).records] == [2, 5]  # not selected: fine


def test_an_undecodable_image_is_named_when_read(coco_dir):
    (coco_dir / "val2017" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds = read_coco(coco_dir)
    with pytest.raises(CocoDataError) as err:
        ds[0]
    assert "cannot be decoded" in _one_paragraph(err, coco_dir / "val2017" / "a.png")


def test_an_image_whose_size_differs_from_the_json_is_named(coco_dir):
    Image.new("RGB", (31, 45)).save(coco_dir / "val2017" / "a.png")
    with pytest.raises(CocoDataError) as err:
        read_coco(coco_dir)[0]
    assert "is 31x45 pixels but the annotation file says 30x45" in _one_paragraph(
        err, coco_dir / "val2017" / "a.png")


def test_limit_must_be_positive(coco_dir):
    with pytest.raises(ValueError, match="limit"):
        read_coco(coco_dir, limit=0)


def test_the_written_json_is_plain_coco(coco_dir):
    doc = json.loads((coco_dir / "annotations" / "instances_val2017.json").read_text())
    assert set(doc) >= {"images", "annotations", "categories"}
    assert doc["annotations"][1]["segmentation"]["size"] == [30, 40]
    assert isinstance(doc["annotations"][1]["segmentation"]["counts"], str)
