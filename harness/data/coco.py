"""A COCO-format detection folder read into what a torchvision-style detector eats.

Layout (COCO 2017 val; both names can be given explicitly)::

    <root>/annotations/instances_val2017.json   the instances annotations (read by pycocotools' COCO)
    <root>/val2017/<file_name>                   the images the JSON lists

:func:`read_coco` returns a :class:`CocoDataset`: the ground truth as a ``pycocotools.coco.COCO``
object, one :class:`ImageRecord` per selected image (id, file, original and resized size, scale
factor) and, on indexing, the image as a float tensor ``[3, H, W]`` in 0..1 (RGB) after the
geometry of mmdet's test pipeline (``Resize(scale=(1333, 800), keep_ratio=True)``):

- the scale factor is ``min(max_long_side_px / long side, short_side_px / short side)`` and the new
  size ``int(side * factor + 0.5)`` (mmcv's ``rescale_size``), so the short side becomes 800 unless
  the long side would pass 1333;
- bilinear resampling with half-pixel centres and no antialiasing (what ``cv2.INTER_LINEAR``,
  mmcv's default, does), in float, not rounded back to 8 bits;
- :attr:`ImageRecord.scale_factor` is mmdet's ``(w_scale, h_scale) = (new_w / w, new_h / h)``;
  predictions in the resized image map back to the original by dividing x by ``w_scale`` and y by
  ``h_scale`` (:mod:`harness.metrics.coco_eval` does this).

What the model does next is the model's business, not the reader's: normalization (mmdet's
``DetDataPreprocessor`` subtracts mean (123.675, 116.28, 103.53) and divides by std (58.395,
57.12, 57.375) on 0..255 RGB) and padding the batch to a multiple of 32.

Images are decoded when indexed, not at reading time (COCO val at 800 x 1333 float32 would take
about 60 GiB); :func:`read_coco` checks up front that every selected image file exists.

Category ids in COCO are not contiguous (1..90 with gaps for the 80 classes). As mmdet does, the
detector's class index runs over the *sorted* category ids: :func:`category_ids`. With the
torchvision convention (0 = background) label ``k`` (1..K) is category ``category_ids(coco)[k - 1]``.

:func:`write_coco_gt` writes a COCO instances JSON from in-memory boxes, labels and masks (for
procedural ground truth).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from harness.errors import HarnessError

#: The annotation file, relative to the COCO folder, read when none is named.
ANNOTATION_FILE = "annotations/instances_val2017.json"
#: The image folder, relative to the COCO folder, read when none is named.
IMAGE_DIR = "val2017"
#: mmdet's test resize for Mask R-CNN (``scale=(1333, 800), keep_ratio=True``).
SHORT_SIDE_PX = 800
MAX_LONG_SIDE_PX = 1333
#: Keys each entry of the JSON's ``images`` list must carry.
IMAGE_KEYS = ("id", "file_name", "width", "height")
#: Files named in a "found instead" hint of an error message (the rest are counted).
_SHOW_FILES = 5


class CocoDataError(HarnessError, ValueError):
    """A COCO folder, annotation file or image that cannot be read as asked; the message names the
    path and what to do."""


@dataclass(frozen=True)
class ImageRecord:
    """One image of a COCO set and the resize applied to it.

    image_id: the COCO image id; path: the image file; orig_hw: (H, W) of the file (as the JSON
    says, checked when the image is decoded); resized_hw: (H, W) of the tensor the detector gets;
    scale_factor: mmdet's ``(w_scale, h_scale)`` = (resized W / W, resized H / H).
    """

    image_id: int
    path: Path
    orig_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    scale_factor: tuple[float, float]


def rescaled_hw(
    h: int, w: int, short_side_px: int = SHORT_SIDE_PX, max_long_side_px: int = MAX_LONG_SIDE_PX
) -> tuple[int, int]:
    """(new_h, new_w) of an ``h x w`` image after mmdet's keep-ratio resize.

    factor = min(max_long_side_px / max(h, w), short_side_px / min(h, w)); each side becomes
    ``int(side * factor + 0.5)`` (mmcv's ``rescale_size``). E.g. 480 x 640 -> 800 x 1067 and
    50 x 100 -> 667 x 1333 (the long side binds).
    """
    if h < 1 or w < 1:
        raise ValueError(f"rescaled_hw: image size {h}x{w} must be positive")
    if short_side_px < 1 or max_long_side_px < short_side_px:
        raise ValueError(
            "rescaled_hw: need 1 <= short_side_px <= max_long_side_px, "
            f"got {short_side_px} and {max_long_side_px}"
        )
    factor = min(max_long_side_px / max(h, w), short_side_px / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def category_ids(coco: COCO) -> tuple[int, ...]:
    """The category ids of ``coco`` in sorted order: the detector's class index runs over them
    (label k in 1..K with 0 = background is ``category_ids(coco)[k - 1]``)."""
    return tuple(sorted(int(c) for c in coco.getCatIds()))


# --------------------------------------------------------------------------- annotations


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _listing(folder: Path, pattern: str) -> str:
    if not folder.is_dir():
        return f"'{folder}' does not exist either"
    found = sorted(p.name for p in folder.glob(pattern))
    more = f", ... ({len(found) - _SHOW_FILES} more)" if len(found) > _SHOW_FILES else ""
    return f"{pattern} in '{folder}': " + (", ".join(found[:_SHOW_FILES]) + more if found else "none")


def _check_instances(data: object, path: Path) -> None:
    """Raise CocoDataError unless ``data`` has the shape of a COCO instances file."""
    what = f"'{path}' is not a COCO instances annotation file"
    fix = "give the instances_*.json of the COCO release (or one written by write_coco_gt)"
    if not isinstance(data, dict):
        raise CocoDataError(f"{what}: it holds a JSON {type(data).__name__}, not an object; {fix}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoDataError(f"{what}: it has no '{key}' list; {fix}")
    if not isinstance(data.get("annotations", []), list):
        raise CocoDataError(f"{what}: its 'annotations' is not a list; {fix}")
    for i, img in enumerate(data["images"]):
        missing = [k for k in IMAGE_KEYS if not isinstance(img, dict) or k not in img]
        if missing:
            raise CocoDataError(
                f"{what}: entry {i} of 'images' lacks {', '.join(missing)} (each image needs "
                f"{', '.join(IMAGE_KEYS)}); {fix}"
            )


def load_coco_gt(path: str | Path) -> COCO:
    """The ground truth in the COCO instances file ``path`` as a pycocotools COCO object
    (pycocotools' printing silenced). Raises :class:`CocoDataError` naming the path for a missing
    file, a file that is not JSON, or JSON without COCO's ``images`` / ``categories`` lists."""
    path = Path(path)
    if not path.is_file():
        kind = "is a folder, not a file" if path.is_dir() else "not found"
        raise CocoDataError(
            f"COCO annotation file {kind}: '{path}' ({_listing(path.parent, '*.json')}); give the instances "
            "JSON with annotation_file= (absolute, or relative to the COCO folder)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CocoDataError(
            f"COCO annotation file '{path}' cannot be read as JSON ({_one_line(e)}); it is truncated or "
            "not an annotation file: download or export it again"
        ) from e
    _check_instances(data, path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# --------------------------------------------------------------------------- images


def _resolve(root: Path, name: str | Path) -> Path:
    p = Path(name)
    return p if p.is_absolute() else root / p


def _record(
    info: Mapping[str, Any], image_dir: Path, short_side_px: int, max_long_side_px: int
) -> ImageRecord:
    h, w = int(info["height"]), int(info["width"])
    new_h, new_w = rescaled_hw(h, w, short_side_px, max_long_side_px)
    return ImageRecord(
        image_id=int(info["id"]),
        path=image_dir / str(info["file_name"]),
        orig_hw=(h, w),
        resized_hw=(new_h, new_w),
        scale_factor=(new_w / w, new_h / h),
    )


def _check_present(records: Sequence[ImageRecord], image_dir: Path, annotation_file: Path) -> None:
    missing = [r for r in records if not r.path.is_file()]
    if not missing:
        return
    first = missing[0]
    raise CocoDataError(
        f"COCO image '{first.path}' (id {first.image_id}) listed in '{annotation_file}' is missing; "
        f"{len(missing)} of the {len(records)} selected images are absent from '{image_dir}'. Put the "
        "images there, name their folder with image_dir=, or read fewer with limit= (the first N by id)"
    )


def load_resized(record: ImageRecord) -> torch.Tensor:
    """The image of ``record`` as RGB float32 ``[3, H, W]`` in 0..1, resized to ``record.resized_hw``
    (bilinear, half-pixel centres, no antialiasing). Raises :class:`CocoDataError` naming the file
    when it cannot be decoded or its size differs from the annotation file's."""
    try:
        with Image.open(record.path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise CocoDataError(
            f"COCO image '{record.path}' (id {record.image_id}) cannot be decoded ({_one_line(e)}); replace "
            "it with an intact copy of the file"
        ) from e
    h, w = arr.shape[:2]
    if (h, w) != record.orig_hw:
        raise CocoDataError(
            f"COCO image '{record.path}' (id {record.image_id}) is {w}x{h} pixels but the annotation file "
            f"says {record.orig_hw[1]}x{record.orig_hw[0]}; the annotations do not belong to this file: "
            "check image_dir= and annotation_file="
        )
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    if (h, w) == record.resized_hw:
        return x
    return F.interpolate(x[None], size=record.resized_hw, mode="bilinear", align_corners=False)[0]


@dataclass
class CocoDataset:
    """Selected images of a COCO folder and their ground truth.

    coco: the whole annotation file (pycocotools); records: the selected images, ascending by id;
    ``dataset[i]`` -> (image ``[3, H, W]`` float32 in 0..1 RGB, decoded now, record i).
    """

    annotation_file: Path
    image_dir: Path
    coco: COCO
    records: tuple[ImageRecord, ...]

    @property
    def cat_ids(self) -> tuple[int, ...]:
        """Sorted category ids: label k (1..K, 0 = background) is ``cat_ids[k - 1]``."""
        return category_ids(self.coco)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ImageRecord]:
        record = self.records[i]
        return load_resized(record), record

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ImageRecord]]:
        for i in range(len(self)):
            yield self[i]


def read_coco(
    root: str | Path,
    *,
    annotation_file: str | Path = ANNOTATION_FILE,
    image_dir: str | Path = IMAGE_DIR,
    limit: int | None = None,
    short_side_px: int = SHORT_SIDE_PX,
    max_long_side_px: int = MAX_LONG_SIDE_PX,
) -> CocoDataset:
    """Read a COCO-format folder: the annotations now, the images when indexed.

    root: the COCO folder; annotation_file, image_dir: absolute, or relative to root (default
    ``annotations/instances_val2017.json`` and ``val2017``); limit: keep the first ``limit`` images
    by ascending image id (deterministic), None keeps all; short_side_px, max_long_side_px: the
    keep-ratio resize (:func:`rescaled_hw`).

    Raises :class:`CocoDataError` (one paragraph naming the path and what to do) for a missing
    folder, a missing or unreadable annotation file, or a selected image file that is absent; an
    image that cannot be decoded raises it when indexed.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"read_coco: limit must be >= 1 or None, got {limit}")
    root = Path(root)
    if not root.is_dir():
        raise CocoDataError(
            f"COCO folder not found: '{root}' ({_listing(root.parent, '*')}); give the folder that holds "
            f"{ANNOTATION_FILE} and {IMAGE_DIR}/ (or name them with annotation_file= and image_dir=)"
        )
    ann_path, img_dir = _resolve(root, annotation_file), _resolve(root, image_dir)
    coco = load_coco_gt(ann_path)
    if not img_dir.is_dir():
        raise CocoDataError(
            f"COCO image folder not found: '{img_dir}' ({_listing(img_dir.parent, '*')}); give the folder "
            f"of the images that '{ann_path}' lists with image_dir= (absolute, or relative to '{root}')"
        )
    infos = sorted(coco.dataset["images"], key=lambda info: int(info["id"]))
    infos = infos if limit is None else infos[:limit]
    records = tuple(_record(info, img_dir, short_side_px, max_long_side_px) for info in infos)
    _check_present(records, img_dir, ann_path)
    return CocoDataset(annotation_file=ann_path, image_dir=img_dir, coco=coco, records=records)


# --------------------------------------------------------------------------- writing ground truth


def _categories(categories: Mapping[int, str] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(categories, Mapping):
        return [{"id": int(i), "name": str(n), "supercategory": ""} for i, n in sorted(categories.items())]
    out = []
    for c in categories:
        if "id" not in c or "name" not in c:
            raise ValueError(f"write_coco_gt: category {dict(c)} needs 'id' and 'name'")
        out.append({"supercategory": "", **dict(c), "id": int(c["id"])})
    return out


def _segmentation(seg: Any, h: int, w: int, where: str) -> tuple[Any, dict[str, Any]]:
    """(JSON-ready segmentation, its RLE) for a polygon list, an RLE dict or a binary mask [H, W]."""
    if isinstance(seg, (np.ndarray, torch.Tensor)):
        m = seg.detach().cpu().numpy() if isinstance(seg, torch.Tensor) else seg
        if m.shape != (h, w):
            raise ValueError(f"write_coco_gt: {where}: mask shape {m.shape} is not the image's ({h}, {w})")
        rle = mask_util.encode(np.asfortranarray(m != 0, dtype=np.uint8))
        return {"size": [h, w], "counts": rle["counts"].decode("ascii")}, rle
    if isinstance(seg, Mapping):
        counts = seg["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            rle = mask_util.frPyObjects(dict(seg), h, w)
        else:
            as_bytes = counts.encode("ascii") if isinstance(counts, str) else counts
            rle = {"size": list(seg["size"]), "counts": as_bytes}
        json_rle = {"size": [int(s) for s in seg["size"]],
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
        return json_rle, rle
    if not isinstance(seg, Sequence) or not seg or not all(isinstance(p, Sequence) for p in seg):
        raise ValueError(f"write_coco_gt: {where}: segmentation must be a list of polygons "
                         "[[x1, y1, ...], ...], an RLE dict or a binary mask [H, W]")
    polygons = [[float(v) for v in poly] for poly in seg]
    if any(len(p) < 6 or len(p) % 2 for p in polygons):
        raise ValueError(f"write_coco_gt: {where}: a polygon needs an even number (>= 6) of coordinates")
    return polygons, mask_util.merge(mask_util.frPyObjects(polygons, h, w))


def _annotation(i: int, ann: Mapping[str, Any], sizes: Mapping[int, tuple[int, int]], cats: set[int]) -> dict:
    where = f"annotation {i}"
    image_id, cat = int(ann["image_id"]), int(ann["category_id"])
    if image_id not in sizes:
        raise ValueError(f"write_coco_gt: {where} names image_id {image_id}, which is not in images")
    if cat not in cats:
        raise ValueError(f"write_coco_gt: {where} names category_id {cat}, not one of {sorted(cats)}")
    if "bbox" not in ann and "segmentation" not in ann:
        raise ValueError(f"write_coco_gt: {where} needs a 'bbox' or a 'segmentation'")
    out: dict[str, Any] = {"id": int(ann.get("id", i + 1)), "image_id": image_id, "category_id": cat,
                           "iscrowd": int(ann.get("iscrowd", 0))}
    rle = None
    if "segmentation" in ann:
        out["segmentation"], rle = _segmentation(ann["segmentation"], *sizes[image_id], where)
    bbox = ann["bbox"] if "bbox" in ann else mask_util.toBbox(rle)
    out["bbox"] = [float(v) for v in bbox]
    if len(out["bbox"]) != 4:
        raise ValueError(f"write_coco_gt: {where}: bbox {out['bbox']} is not [x, y, w, h]")
    area = ann.get("area", mask_util.area(rle) if rle is not None else out["bbox"][2] * out["bbox"][3])
    out["area"] = float(area)
    return out


def write_coco_gt(
    path: str | Path,
    images: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]],
    categories: Mapping[int, str] | Sequence[Mapping[str, Any]],
) -> Path:
    """Write a COCO instances JSON (readable by :func:`load_coco_gt`, :func:`read_coco`, pycocotools).

    images: ``{"id", "file_name", "width", "height"}`` each (pixels).
    annotations: ``{"image_id", "category_id"}`` plus a ``"bbox"`` ``[x, y, w, h]`` (COCO's top-left
    corner and size, pixels of the original image) and/or a ``"segmentation"``: polygons
    ``[[x1, y1, x2, y2, ...], ...]``, an RLE ``{"size": [H, W], "counts": ...}`` or a binary mask
    ``[H, W]`` (numpy or torch, nonzero = object; written as compressed RLE). Optional: ``"iscrowd"``
    (default 0), ``"area"`` (default: the mask's pixel count, else w * h), ``"id"`` (default: position
    + 1). Without a bbox, the mask's bounding box is used.
    categories: ``{id: name}`` or ``[{"id", "name"}, ...]``; ids need not be contiguous.

    Returns ``path`` (parent folders are created). Raises ValueError for an annotation that names an
    unknown image or category, or a mask whose size is not its image's.
    """
    imgs = []
    for img in images:
        missing = [k for k in IMAGE_KEYS if k not in img]
        if missing:
            raise ValueError(f"write_coco_gt: image {dict(img)} lacks {', '.join(missing)}")
        imgs.append({**dict(img), "id": int(img["id"]), "width": int(img["width"]),
                     "height": int(img["height"])})
    cats = _categories(categories)
    sizes = {img["id"]: (img["height"], img["width"]) for img in imgs}
    anns = [_annotation(i, a, sizes, {c["id"] for c in cats}) for i, a in enumerate(annotations)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"info": {"description": "written by harness.data.coco.write_coco_gt"}, "licenses": [],
           "images": imgs, "annotations": anns, "categories": cats}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


__all__ = [
    "ANNOTATION_FILE",
    "IMAGE_DIR",
    "MAX_LONG_SIDE_PX",
    "SHORT_SIDE_PX",
    "CocoDataError",
    "CocoDataset",
    "ImageRecord",
    "category_ids",
    "load_coco_gt",
    "load_resized",
    "read_coco",
    "rescaled_hw",
    "write_coco_gt",
]
