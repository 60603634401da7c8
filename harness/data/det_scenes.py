"""Procedural detection scenes with localized evidence: few small objects in grey clutter.

What a small Swin Mask R-CNN (the detection proxy) trains on and what the COCO evaluation path
scores it on, without a download. Each scene is S x S (448 by default) and holds:

- the background and the lures of :func:`harness.data.shapes.make_shapes` (hue cue), rendered at
  S with its class object left out: grey-ish smooth or cluttered low-frequency noise plus
  ``n_lures`` lures, each any of the five shapes with any texture, all of saturation at most 0.2
  (``ShapesConfig.lure_max_saturation``). Lures are never annotated;
- ``n_objects`` objects on top, each a class object of ``make_shapes`` (rendered on a small canvas
  and pasted by its mask): a random shape (disc, plus, triangle, square, ring), periodic texture
  (stripes, checker, dots, rings, grid), rotation and half-extent ``radius_px`` (12-48 px), in a
  saturated colour of its class hue (+-10 degrees).

Classes (``DetScenesConfig.class_hues``, labels 1..K in that order): by default 5 hues, every
other bin of the swin-proxy's 10 (red, yellow, green, cyan, purple: 72 degrees apart, so at least
52 degrees between two classes after jitter). Why hue: it is the cue the tiny swin-proxy learned
fast on CPU (98.6 % top-1 after 17 min on one thread, where the shape x texture conjunction stayed
at chance), and it is local: background and lures are grey, carry every shape and texture an
object can have, and the class hue exists only on an object's own pixels. So "is there an object"
(saturation) and "which class" (hue) can be read only from the windows that hold the object,
while the mask head still has to follow five outlines (a ring's hole shows the background).

Placement and occlusion: objects are placed one by one at uniform random positions, fully inside
the image; a later object is drawn over the earlier ones and is accepted only if every earlier
object keeps at least ``1 - max_hidden_frac`` of its pixels visible (at most 64 tries, else the
object is dropped, which is rare at the defaults). So objects may touch and overlap, never hide
each other beyond the bound, and lures (drawn first) never hide an object.

Annotations per object (:class:`DetScene`): ``masks`` the *visible* pixels, ``boxes`` the tight
box around them in pixel edges, xyxy with exclusive upper ends (``x1`` = last column + 1, so
``x1 - x0`` is COCO's width and pycocotools' ``toBbox`` of the mask gives ``[x0, y0, x1 - x0,
y1 - y0]``), ``labels`` 1..K; ``amodal_masks`` keeps each object's whole shape before later
objects covered part of it (for the tests; nothing is trained on it).

Windows and what the importance score should find. With the Swin-T geometry (patch 4, window 7,
patch merging halving the grid per stage) a 448 x 448 scene has 112/56/28/14 tokens a side, i.e.
16x16 = 256, 8x8 = 64, 4x4 = 16 and 2x2 = 4 windows of 28/56/112/224 px in stages 1-4 (at 224 px
stage 4 would be a single window). Objects are few and small, so few windows carry evidence:
over 200 default scenes, on average 12 % of the stage-1 windows, 22 % of stage 2, 41 % of stage 3
and 78 % of stage 4 hold object pixels (:func:`evidence_windows`). A trained detector's window
importance score (MixA-Q / SparseViT: L2 over a window of the per-token mean |x| at the stage
input) should rank exactly these object windows first, so in stages 1-2 most windows can go
low-bit (or be pruned) without touching the evidence; stage 4 leaves little room.

Determinism: every scene is a function of ``(seed, index)`` only. Three torch generators are used,
all seeded within ``make_shapes``' one-to-one 32-bit range and distinct within a scene: the
background and lures are ``make_shapes`` image ``index`` of set ``seed``; object slot ``j``'s
candidate renders are images of set ``255 - seed`` whose index encodes ``(index, j, candidate)``
and, modulo 10, the class's hue bin; counts, labels and positions come from a generator seeded
with ``(seed * 2**24 + index) XOR 0x5A5A5A5A``. Hence ``index < MAX_INDEX`` (104857) per seed.

Importing this module imports timm (through ``harness.data.shapes``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import masks_to_boxes

from harness.data.coco import ANNOTATION_FILE, IMAGE_DIR, write_coco_gt
from harness.data.shapes import HUE_NAMES, N_SEEDS, ShapesConfig, make_shapes
from harness.models.swin import IMAGENET_MEAN, IMAGENET_STD

CLASS_NAMES = ("red", "yellow", "green", "cyan", "purple")
"""Default classes: every other hue bin of :data:`harness.data.shapes.HUE_NAMES` (72 degrees apart)."""
NUM_CLASSES = len(CLASS_NAMES)
TRAIN_SEED = 0
"""Seed of the training stream (index = step * batch + i)."""
VAL_SEED = 255
"""Seed of the validation set (the COCO folder the proxy is scored on); disjoint from training."""
MAX_OBJECTS = 8
"""Largest number of objects a scene may hold (``n_objects[1]``)."""
#: 8-bit levels of a saved scene (PNG); :func:`quantize_pixels` rounds an image to them
PIXEL_LEVELS = 255
STAGE_WINDOW_PX = (28, 56, 112, 224)
"""Window side in input pixels per Swin stage (patch 4, window 7, x2 per stage)."""

_INDEX_SPAN = 2**24  # make_shapes' indices per seed
_HUE_BINS = len(HUE_NAMES)  # make_shapes' class (hue bin) is index % 10
_CANDIDATES = 2  # renders per object slot: the first that does not touch its canvas edge is used
MAX_INDEX = _INDEX_SPAN // (_HUE_BINS * MAX_OBJECTS * _CANDIDATES)
"""Scene indices per seed are 0 .. MAX_INDEX - 1 (the object renders' make_shapes indices fit 2**24)."""
_PLACEMENT_KEY = 0x5A5A5A5A  # XOR on the scene's 32-bit key: the placement generator's seed
_PLACEMENT_TRIES = 64  # positions tried per object before it is dropped
_CANVAS_REACH = 1.2  # canvas half-side / largest radius: a rotated square reaches 0.8 * sqrt(2) r


@dataclass(frozen=True)
class DetScenesConfig:
    """Scene knobs (see the module doc). Lengths are pixels of the S x S scene.

    img_size: S (448: 256/64/16/4 Swin windows in stages 1-4); n_objects: objects per scene,
    inclusive range (at most :data:`MAX_OBJECTS`); class_hues: the classes, names from
    ``HUE_NAMES`` (labels 1..K in this order); radius_px: objects' half-extent range;
    n_lures / lure_radius_px: grey-ish distractors (count, half-extent); clutter_prob: probability
    of a cluttered (vs smooth) background; max_hidden_frac: largest fraction of an object's pixels
    that objects drawn later may cover; period_px: texture period range (objects and lures).
    The seed is not a knob here: it is an argument of every function (as in ``make_shapes``).
    """

    img_size: int = 448
    n_objects: tuple[int, int] = (2, 6)
    class_hues: tuple[str, ...] = CLASS_NAMES
    radius_px: tuple[float, float] = (12.0, 48.0)
    n_lures: tuple[int, int] = (2, 5)
    lure_radius_px: tuple[float, float] = (12.0, 40.0)
    clutter_prob: float = 0.75
    max_hidden_frac: float = 0.3
    period_px: tuple[float, float] = (6.0, 11.0)

    def __post_init__(self) -> None:
        unknown = [h for h in self.class_hues if h not in HUE_NAMES]
        if not self.class_hues or unknown or len(set(self.class_hues)) != len(self.class_hues):
            raise ValueError(f"class_hues={self.class_hues!r}: distinct names from {', '.join(HUE_NAMES)}")
        lo, hi = self.n_objects
        if not 1 <= lo <= hi <= MAX_OBJECTS:
            raise ValueError(f"n_objects={self.n_objects!r}: need 1 <= lo <= hi <= {MAX_OBJECTS}")
        if not 0 <= self.n_lures[0] <= self.n_lures[1]:
            raise ValueError(f"n_lures={self.n_lures!r}: need 0 <= lo <= hi")
        for name in ("radius_px", "lure_radius_px", "period_px"):
            lo_px, hi_px = getattr(self, name)
            if not 1.0 <= lo_px <= hi_px:
                raise ValueError(f"{name}={(lo_px, hi_px)!r}: need 1 <= lo <= hi")
        if self.canvas_px > self.img_size:
            raise ValueError(f"img_size={self.img_size} is smaller than an object's canvas "
                             f"({self.canvas_px} px for radius_px up to {self.radius_px[1]})")
        if not 0.0 <= self.max_hidden_frac < 1.0:
            raise ValueError(f"max_hidden_frac={self.max_hidden_frac}: need 0 <= f < 1")
        if not 0.0 <= self.clutter_prob <= 1.0:
            raise ValueError(f"clutter_prob={self.clutter_prob}: need a probability")

    @property
    def num_classes(self) -> int:
        """K: labels run 1..K (0 is the detector's background)."""
        return len(self.class_hues)

    @property
    def canvas_px(self) -> int:
        """Side of the canvas each object is rendered on before it is pasted."""
        return 2 * math.ceil(_CANVAS_REACH * self.radius_px[1]) + 2


@dataclass
class DetScene:
    """One scene. image: [3, S, S] float32 in [0, 1]; boxes: [N, 4] float32 xyxy pixel edges, exclusive
    upper, tight around ``masks``; labels: [N] int64 in 1..K; masks: [N, S, S] bool, the visible pixels;
    amodal_masks: [N, S, S] bool, each object's whole shape (a superset of its visible mask).
    Objects are in drawing order (a later one may cover part of an earlier one)."""

    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    amodal_masks: torch.Tensor


@dataclass(frozen=True)
class _Sprite:
    """An object cut to its box: pixels [3, h, w] in [0, 1], mask [h, w] bool."""

    pixels: torch.Tensor
    mask: torch.Tensor


def _check_range(seed: int, index: int) -> None:
    if not 0 <= seed < N_SEEDS:
        raise ValueError(f"seed {seed} outside [0, {N_SEEDS}) (torch's CPU generator takes 32-bit seeds)")
    if not 0 <= index < MAX_INDEX:
        raise ValueError(f"index {index} outside [0, {MAX_INDEX}) (each scene uses "
                         f"{_HUE_BINS * MAX_OBJECTS * _CANDIDATES} make_shapes indices of 2**24)")


def _pixels(normalized: torch.Tensor) -> torch.Tensor:
    """Undo make_shapes' ImageNet normalization: [..., 3, H, W] -> values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (normalized * std + mean).clamp(0.0, 1.0)


def _background(cfg: DetScenesConfig, seed: int, index: int) -> torch.Tensor:
    """make_shapes' background and lures at S, its class object left out: [3, S, S] in [0, 1]."""
    shapes_cfg = ShapesConfig(
        img_size=cfg.img_size, radius_px=cfg.lure_radius_px, lure_radius_px=cfg.lure_radius_px,
        period_px=cfg.period_px, n_distractors=cfg.n_lures, clutter_prob=cfg.clutter_prob,
    )
    return _pixels(make_shapes([index], seed, shapes_cfg, draw_class_object=False).images[0])


def _sprites(cfg: DetScenesConfig, seed: int, index: int, labels: torch.Tensor) -> list[_Sprite]:
    """Object j of class labels[j] (1..K): make_shapes' class object of that hue, cut out by its mask.

    Each slot has _CANDIDATES renders (one batch); the first whose mask does not touch its canvas
    edge (so is not clipped there) is used, else the last."""
    bins = [HUE_NAMES.index(cfg.class_hues[int(k) - 1]) for k in labels]
    idx = [_HUE_BINS * ((index * MAX_OBJECTS + j) * _CANDIDATES + c) + b
           for j, b in enumerate(bins) for c in range(_CANDIDATES)]
    canvas = ShapesConfig(img_size=cfg.canvas_px, radius_px=cfg.radius_px, period_px=cfg.period_px,
                          n_distractors=(0, 0))
    batch = make_shapes(idx, N_SEEDS - 1 - seed, canvas)
    m = batch.masks
    edge = m[:, 0].any(1) | m[:, -1].any(1) | m[:, :, 0].any(1) | m[:, :, -1].any(1)
    out = []
    for j in range(len(bins)):
        k = next((j * _CANDIDATES + c for c in range(_CANDIDATES) if not edge[j * _CANDIDATES + c]),
                 (j + 1) * _CANDIDATES - 1)
        x0, y0, x1, y1 = batch.boxes[k].tolist()
        out.append(_Sprite(_pixels(batch.images[k])[:, y0:y1, x0:x1], m[k, y0:y1, x0:x1]))
    return out


def _place(
    sprites: list[_Sprite], tries: torch.Tensor, img_size: int, max_hidden_frac: float
) -> list[tuple[int, int, int]]:
    """(slot, y0, x0) of each placed object, in drawing order. tries: [slots, T, 2] uniform draws
    (row, column) of the candidate positions; an object whose T positions all hide an earlier one by
    more than ``max_hidden_frac`` of its pixels is dropped."""
    S = img_size
    placed: list[tuple[int, int, int]] = []
    amodal: list[torch.Tensor] = []
    visible: list[torch.Tensor] = []
    for j, sp in enumerate(sprites):
        h, w = sp.mask.shape
        for t in range(tries.shape[1]):
            y0, x0 = int(tries[j, t, 0] * (S - h + 1)), int(tries[j, t, 1] * (S - w + 1))
            full = torch.zeros(S, S, dtype=torch.bool)
            full[y0:y0 + h, x0:x0 + w] = sp.mask
            still = [v & ~full for v in visible]
            if all(int(v.sum()) >= (1.0 - max_hidden_frac) * int(a.sum()) for v, a in zip(still, amodal)):
                placed.append((j, y0, x0))
                amodal.append(full)
                visible = still + [full]
                break
    return placed


def make_det_scene(
    cfg: DetScenesConfig, seed: int, index: int, *, draw_objects: bool = True
) -> DetScene:
    """Scene ``index`` of set ``seed`` (see the module doc); a function of (seed, index) and cfg only.

    draw_objects=False leaves the objects out of the image (same background, lures and annotations):
    the pixels that change are exactly the union of ``masks`` (used by the tests)."""
    _check_range(seed, index)
    g = torch.Generator().manual_seed((seed * _INDEX_SPAN + index) ^ _PLACEMENT_KEY)
    n = int(torch.randint(cfg.n_objects[0], cfg.n_objects[1] + 1, (1,), generator=g))
    labels = torch.randint(1, cfg.num_classes + 1, (MAX_OBJECTS,), generator=g)[:n]
    tries = torch.rand(MAX_OBJECTS, _PLACEMENT_TRIES, 2, generator=g)  # drawn whatever n is
    sprites = _sprites(cfg, seed, index, labels)
    placed = _place(sprites, tries, cfg.img_size, cfg.max_hidden_frac)

    S = cfg.img_size
    image = _background(cfg, seed, index)
    amodal = torch.zeros(len(placed), S, S, dtype=torch.bool)
    for o, (j, y0, x0) in enumerate(placed):
        sp = sprites[j]
        h, w = sp.mask.shape
        amodal[o, y0:y0 + h, x0:x0 + w] = sp.mask
        if draw_objects:
            region = image[:, y0:y0 + h, x0:x0 + w]
            image[:, y0:y0 + h, x0:x0 + w] = torch.where(sp.mask, sp.pixels, region)
    # visible = not covered by any object drawn later: cumulative union from the top down
    covered = torch.zeros(S, S, dtype=torch.bool)
    masks = torch.zeros_like(amodal)
    for o in reversed(range(len(placed))):
        masks[o] = amodal[o] & ~covered
        covered |= amodal[o]
    boxes = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # inclusive -> exclusive upper
    kept = torch.tensor([j for j, _, _ in placed], dtype=torch.int64)
    return DetScene(image=image, boxes=boxes.float(), labels=labels[kept].to(torch.int64), masks=masks,
                    amodal_masks=amodal)


def make_det_batch(
    cfg: DetScenesConfig, seed: int, indices: Iterable[int]
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Training input for a torchvision-style Mask R-CNN: (images, targets), one per index.

    images: [3, S, S] float32 in [0, 1] (the detector's transform normalizes); targets:
    ``{"boxes": [N, 4] float32 xyxy, "labels": [N] int64 1..K, "masks": [N, S, S] uint8}``."""
    scenes = [make_det_scene(cfg, seed, int(i)) for i in indices]
    targets = [{"boxes": s.boxes, "labels": s.labels, "masks": s.masks.to(torch.uint8)} for s in scenes]
    return [s.image for s in scenes], targets


def evidence_windows(masks: torch.Tensor, window_px: int) -> torch.Tensor:
    """Which windows of a window_px grid hold object pixels. masks: [N, H, W] bool -> [ceil(H / w),
    ceil(W / w)] bool (the last row/column of windows is cut off when w does not divide the side,
    as Swin pads it)."""
    H, W = masks.shape[-2:]
    nh, nw = -(-H // window_px), -(-W // window_px)
    union = torch.zeros(nh * window_px, nw * window_px, dtype=torch.bool)
    union[:H, :W] = masks.any(0) if masks.shape[0] else False
    return union.view(nh, window_px, nw, window_px).any(3).any(1)


def quantize_pixels(image: torch.Tensor) -> torch.Tensor:
    """[3, H, W] in [0, 1] -> the same rounded to 8-bit levels (what a PNG round trip gives)."""
    return (image * PIXEL_LEVELS).round() / PIXEL_LEVELS


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """image: [3, H, W] in [0, 1] -> an 8-bit RGB PNG (values rounded: within 0.5 / 255)."""
    rgb = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").save(path)


def write_coco_folder(cfg: DetScenesConfig, root: str | Path, n_images: int, seed: int = VAL_SEED) -> Path:
    """Scenes 0 .. n_images - 1 of set ``seed`` as a COCO 2017-style folder; returns the JSON's path.

    ``<root>/val2017/<id:012d>.png`` (image id = index + 1) and ``<root>/annotations/
    instances_val2017.json`` with, per visible object, its bbox ``[x0, y0, x1 - x0, y1 - y0]``,
    area (visible pixels), iscrowd 0 and the visible mask as compressed RLE (annotation ids from 1:
    COCOeval takes id 0 for "unmatched"); categories 1..K named after ``cfg.class_hues``."""
    root = Path(root)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    scenes = [make_det_scene(cfg, seed, index) for index in range(n_images)]
    images, annotations, categories = coco_entries(cfg, scenes)
    for scene, image in zip(scenes, images):
        save_png(scene.image, root / IMAGE_DIR / image["file_name"])
    return write_coco_gt(root / ANNOTATION_FILE, images, annotations, categories)


def coco_entries(
    cfg: DetScenesConfig, scenes: Sequence[DetScene]
) -> tuple[list[dict], list[dict], dict[int, str]]:
    """The COCO ground truth of ``scenes`` (scene i is image id i + 1, file ``<id:012d>.png``):
    (images, annotations, categories) as :func:`harness.data.coco.write_coco_gt` takes them."""
    images, annotations = [], []
    for index, scene in enumerate(scenes):
        image_id = index + 1
        images.append({"id": image_id, "file_name": f"{image_id:012d}.png", "width": cfg.img_size,
                       "height": cfg.img_size})
        for box, label, mask in zip(scene.boxes.tolist(), scene.labels.tolist(), scene.masks):
            x0, y0, x1, y1 = box
            annotations.append({"image_id": image_id, "category_id": label, "iscrowd": 0,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": mask})
    return images, annotations, {k + 1: name for k, name in enumerate(cfg.class_hues)}


__all__ = [
    "CLASS_NAMES",
    "MAX_INDEX",
    "MAX_OBJECTS",
    "NUM_CLASSES",
    "STAGE_WINDOW_PX",
    "TRAIN_SEED",
    "VAL_SEED",
    "DetScene",
    "DetScenesConfig",
    "coco_entries",
    "evidence_windows",
    "make_det_batch",
    "make_det_scene",
    "quantize_pixels",
    "save_png",
    "write_coco_folder",
]
