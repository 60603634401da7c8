"""``swin-det-proxy``: a small Swin Mask R-CNN trained from scratch on the procedural detection scenes.

Model: :func:`harness.models.swin_det.build_swin_maskrcnn` (the benchmarking code path: a timm
``SwinTransformer`` with Swin-T's patch 4 / window 7 geometry and mmdet's pad-first windows,
torchvision's FPN, RPN and Mask R-CNN heads) at the widths of :class:`DetProxySpec` (embed_dim 32,
depths 2-2-4-2 as ``swin-proxy``; FPN 64, box head 256, mask head 64 channels) for
``det_scenes.NUM_CLASSES`` classes. ``min_size = max_size = 448`` so torchvision's transform does not
resize the 448 px scenes; the token maps are 112/56/28/14 a side, all window multiples, where mmdet's
and timm's window paddings agree.

Data: :func:`harness.data.det_scenes.make_det_batch`, streaming from ``TRAIN_SEED + seed`` (scene
index ``step * batch + i``, a pure function of the step), with a curriculum (larger objects, fewer
lures and a smoother background first; :func:`curriculum`). Images are rounded to 8 bits, as the
PNGs of the evaluation folder are.

Loss: torchvision's Mask R-CNN losses (``model(images, targets)`` in train mode: RPN objectness and
box regression, R-CNN classification and box regression, mask BCE), summed. torchvision samples
anchors and proposals with torch's global generator; each step runs under its own seed
(:func:`step_rng_seed`), so the step is a pure function of (weights, step, seed) and a resumed run
equals an uninterrupted one.

Held-out metrics: the first ``heldout_images`` scenes of ``VAL_SEED`` written as a COCO folder
(:func:`harness.data.det_scenes.write_coco_folder`, PNG images), read back with
:func:`harness.data.coco.read_coco` (no resize at 448) and scored by
:func:`harness.metrics.coco_eval.evaluate_coco`: the ground truth and the code path the harness's
detection evaluation uses. Trivial baselines go through the same call.

The weights are saved in the harness's own (torchvision) layout, ``model.state_dict()`` of the model
:meth:`SwinDetProxy.build_model` builds, not in mmdetection's: load them with
``model.load_state_dict(read_state_dict(path), strict=True)`` on
``build_swin_maskrcnn(**DetProxySpec().model_kwargs())`` (``build_swin_maskrcnn(checkpoint=...)``
reads mmdetection's layout only).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.data import det_scenes
from harness.data.coco import CocoDataset, read_coco
from harness.data.det_scenes import DetScenesConfig, quantize_pixels
from harness.metrics.coco_eval import evaluate_coco
from harness.models.swin_det import build_swin_maskrcnn
from harness.train.base import Proxy, TrainConfig

#: evaluate_coco's keys kept as the held-out metrics (box mAP@[.5:.95], box mAP@.5, mask mAP@[.5:.95],
#: mask mAP@.5)
HELDOUT_METRICS = ("bbox_mAP", "bbox_mAP_50", "segm_mAP", "segm_mAP_50")
EVAL_BATCH = 4
#: side of the boxes of the grid baseline (pixels; the grid's stride is the same)
GRID_BOX_PX = 64
#: generator seed of step ``step`` is ``seed * STEP_SEED_STRIDE + step``
STEP_SEED_STRIDE = 1_000_003


def _easy_scenes() -> DetScenesConfig:
    return DetScenesConfig(radius_px=(24.0, 56.0), n_lures=(0, 2), clutter_prob=0.25, n_objects=(1, 4))


@dataclass(frozen=True)
class DetProxySpec:
    """The proxy's architecture, data and held-out set (defaults: the committed proxy; tests shrink it).

    Model widths as :func:`build_swin_maskrcnn`'s arguments; the image side is ``scenes.img_size``.
    scenes: the full scene distribution (training reaches it at ``curriculum_steps``, held-out
    scenes are drawn from it); easy_scenes: the distribution of step 0 (same img_size);
    heldout_images: the first scenes of ``VAL_SEED`` scored; rcnn_samples_per_image: proposals
    sampled per image for the R-CNN heads in training (torchvision/mmdet: 512; a training-time
    setting that changes no weight shape).
    """

    embed_dim: int = 32
    depths: tuple[int, ...] = (2, 2, 4, 2)
    num_heads: tuple[int, ...] = (2, 4, 8, 16)
    window_size: int = 7
    fpn_channels: int = 64
    box_fc_channels: int = 256
    mask_channels: int = 64
    drop_path_rate: float = 0.0
    scenes: DetScenesConfig = field(default_factory=DetScenesConfig)
    easy_scenes: DetScenesConfig = field(default_factory=_easy_scenes)
    curriculum_steps: int = 400
    heldout_images: int = 100
    rcnn_samples_per_image: int = 256

    def __post_init__(self) -> None:
        if self.easy_scenes.img_size != self.scenes.img_size:
            raise ValueError(f"easy_scenes.img_size {self.easy_scenes.img_size} != scenes.img_size "
                             f"{self.scenes.img_size}: the curriculum changes the objects, not the image")
        if self.easy_scenes.class_hues != self.scenes.class_hues:
            raise ValueError("easy_scenes and scenes must have the same classes")

    @property
    def img_size(self) -> int:
        return self.scenes.img_size

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`build_swin_maskrcnn` for this proxy (no seed, no checkpoint)."""
        return {
            "num_classes": self.scenes.num_classes, "embed_dim": self.embed_dim, "depths": self.depths,
            "num_heads": self.num_heads, "window_size": self.window_size, "fpn_channels": self.fpn_channels,
            "box_fc_channels": self.box_fc_channels, "mask_channels": self.mask_channels,
            "min_size": self.img_size, "max_size": self.img_size, "window_pad": "mmdet",
            "drop_path_rate": self.drop_path_rate,
        }


def _lerp_pair(a: tuple[float, float], b: tuple[float, float], t: float, as_int: bool) -> tuple:
    out = tuple(x + (y - x) * t for x, y in zip(a, b))
    return tuple(round(v) for v in out) if as_int else out


def curriculum(spec: DetProxySpec, step: int) -> DetScenesConfig:
    """Scene config of training step ``step``: ``spec.easy_scenes`` at 0, moving linearly to
    ``spec.scenes`` at ``spec.curriculum_steps`` (object radius, object and lure counts, clutter
    probability; counts rounded), ``spec.scenes`` from then on."""
    full, easy = spec.scenes, spec.easy_scenes
    t = 1.0 if spec.curriculum_steps <= 0 else min(1.0, step / spec.curriculum_steps)
    if t >= 1.0:
        return full
    return dataclasses.replace(
        full,
        radius_px=_lerp_pair(easy.radius_px, full.radius_px, t, as_int=False),
        n_objects=_lerp_pair(easy.n_objects, full.n_objects, t, as_int=True),
        n_lures=_lerp_pair(easy.n_lures, full.n_lures, t, as_int=True),
        clutter_prob=easy.clutter_prob + (full.clutter_prob - easy.clutter_prob) * t,
    )


def step_rng_seed(step: int, seed: int) -> int:
    """Seed of torch's generators while step ``step`` of recipe seed ``seed`` runs (anchor and
    proposal sampling, stochastic depth)."""
    return seed * STEP_SEED_STRIDE + step


def write_heldout(spec: DetProxySpec, root: str | Path) -> CocoDataset:
    """The held-out set: scenes 0 .. heldout_images - 1 of ``VAL_SEED`` as a COCO folder in ``root``,
    read back without resizing."""
    det_scenes.write_coco_folder(spec.scenes, root, spec.heldout_images, det_scenes.VAL_SEED)
    return read_coco(root, short_side_px=spec.img_size, max_long_side_px=spec.img_size)


@torch.no_grad()
def predict(model: nn.Module, dataset: CocoDataset, batch: int = EVAL_BATCH) -> list[dict[str, torch.Tensor]]:
    """The model's detections on every image of ``dataset`` (model in eval mode), on the CPU."""
    device = next(model.parameters()).device
    out: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(dataset), batch):
        images = [dataset[i][0].to(device) for i in range(start, min(start + batch, len(dataset)))]
        out += [{k: v.cpu() for k, v in p.items()} for p in model(images)]
    return out


def heldout_metrics(dataset: CocoDataset, predictions: list[dict[str, Any]]) -> dict[str, float]:
    """:data:`HELDOUT_METRICS` of ``predictions`` (one per image of ``dataset``) by evaluate_coco."""
    m = evaluate_coco(dataset.coco, dataset.records, predictions)
    return {k: m[k] for k in HELDOUT_METRICS}


def most_frequent_label(dataset: CocoDataset) -> int:
    """Label (1..K) of the most frequent category in ``dataset``'s ground truth (ties: the lower)."""
    counts = Counter(a["category_id"] for a in dataset.coco.dataset["annotations"])
    cat = min(counts, key=lambda c: (-counts[c], c))
    return dataset.cat_ids.index(cat) + 1


def _box_detections(boxes: torch.Tensor, labels: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
    """Detections with score 1 whose masks fill their (integer) boxes. boxes: [N, 4] xyxy."""
    masks = torch.zeros(len(boxes), 1, size, size, dtype=torch.uint8)
    for m, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
        m[0, y0:y1, x0:x1] = 1
    return {"boxes": boxes.float(), "labels": labels, "scores": torch.ones(len(boxes)), "masks": masks}


def whole_image_detector(dataset: CocoDataset) -> list[dict[str, torch.Tensor]]:
    """One detection per image: the whole image, of the most frequent class of ``dataset``'s own ground
    truth (read off the held-out set, which favours the baseline)."""
    size = dataset.records[0].resized_hw[0]
    det = _box_detections(torch.tensor([[0, 0, size, size]]), torch.tensor([most_frequent_label(dataset)]),
                          size)
    return [det for _ in dataset.records]


def grid_detector(dataset: CocoDataset, box_px: int = GRID_BOX_PX) -> list[dict[str, torch.Tensor]]:
    """The same detections on every image: a grid of ``box_px`` boxes (stride ``box_px``, the last
    row/column cut at the border) labelled with every class."""
    size = dataset.records[0].resized_hw[0]
    starts = range(0, size, box_px)
    cells = [[x, y, min(x + box_px, size), min(y + box_px, size)] for y in starts for x in starts]
    k = len(dataset.cat_ids)
    boxes = torch.tensor(cells).repeat(k, 1)
    labels = torch.arange(1, k + 1).repeat_interleave(len(cells))
    det = _box_detections(boxes, labels, size)
    return [det for _ in dataset.records]


class SwinDetProxy(Proxy):
    name = "swin-det-proxy"
    description = (
        "small Swin Mask R-CNN (timm Swin, Swin-T window geometry at 448 px, embed_dim 32, depths 2-2-4-2; "
        "torchvision FPN 64 / box 256 / mask 64 heads) trained from scratch on the procedural detection "
        "scenes harness.data.det_scenes (5 hue classes among grey lures); held-out COCO box/mask mAP"
    )
    headline = "bbox_mAP"
    #: the training stream is det_scenes.TRAIN_SEED + seed; VAL_SEED holds the held-out scenes
    max_seed = det_scenes.VAL_SEED - det_scenes.TRAIN_SEED - 1
    max_seed_reason = (f"the training scenes use data seed {det_scenes.TRAIN_SEED} + --seed, and data seed "
                       f"{det_scenes.VAL_SEED} holds the held-out scenes")

    def __init__(self, spec: DetProxySpec | None = None) -> None:
        self.spec = spec or DetProxySpec()
        self._heldout_dir: tempfile.TemporaryDirectory[str] | None = None
        self._heldout: CocoDataset | None = None

    def default_config(self) -> TrainConfig:
        return TrainConfig(
            steps=1600, batch=4, lr=4e-4, weight_decay=0.05, warmup_steps=100, min_lr_frac=0.02,
            grad_clip=5.0, eval_every=400, ckpt_every=50, seed=0, threads=2, save_dtype="float16",
        )

    def build_model(self, seed: int) -> nn.Module:
        model = build_swin_maskrcnn(**self.spec.model_kwargs(), seed=seed)
        model.roi_heads.fg_bg_sampler.batch_size_per_image = self.spec.rcnn_samples_per_image
        return model.train()

    # -- data --------------------------------------------------------------------------------

    def batch(self, step: int, size: int, seed: int) -> dict[str, Any]:
        """``{"images": [size x [3, S, S]] in [0, 1] (8-bit levels), "targets": [size x {"boxes",
        "labels", "masks"}], "rng_seed": int}`` of training step ``step``."""
        stream = det_scenes.TRAIN_SEED + seed
        if stream == det_scenes.VAL_SEED:
            raise ValueError(f"training seed {seed} would train on the held-out scenes (data seed "
                             f"{det_scenes.VAL_SEED}); use a seed up to {self.max_seed}")
        images, targets = det_scenes.make_det_batch(curriculum(self.spec, step), stream,
                                                    range(step * size, (step + 1) * size))
        return {"images": [quantize_pixels(im) for im in images], "targets": targets,
                "rng_seed": step_rng_seed(step, seed)}

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The sum of torchvision's Mask R-CNN losses; parts: each loss without its ``loss_`` prefix."""
        device = batch["images"][0].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(batch["rng_seed"])
            losses = model(batch["images"], batch["targets"])
        total = sum(losses.values())
        return total, {k.removeprefix("loss_"): v.item() for k, v in losses.items()}

    # -- evaluation -----------------------------------------------------------------------------

    def heldout(self) -> CocoDataset:
        """The held-out COCO set (:func:`write_heldout`), written once into a folder this proxy owns."""
        if self._heldout is None:
            self._heldout_dir = tempfile.TemporaryDirectory(prefix="swin-det-proxy-heldout-")
            self._heldout = write_heldout(self.spec, self._heldout_dir.name)
        return self._heldout

    def prepare(self, progress: bool = True) -> None:
        self.heldout()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Box mAP, box mAP50, mask mAP and mask mAP50 on the held-out scenes (evaluate_coco)."""
        dataset = self.heldout()
        return heldout_metrics(dataset, predict(model, dataset))

    def baselines(self) -> dict[str, dict[str, float]]:
        """The untrained twin (same init) and two fixed detectors, scored like the model."""
        dataset = self.heldout()
        untrained = self.build_model(self.default_config().seed).eval()
        return {
            "untrained (same init)": self.evaluate(untrained),
            "whole image, most frequent class": heldout_metrics(dataset, whole_image_detector(dataset)),
            f"{GRID_BOX_PX} px box grid x every class": heldout_metrics(dataset, grid_detector(dataset)),
        }

    # -- card -------------------------------------------------------------------------------------

    def model_info(self) -> dict[str, Any]:
        kw = self.spec.model_kwargs()
        return {"builder": "harness.models.swin_det.build_swin_maskrcnn",
                **{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
                "layout": "torchvision (model.state_dict()), not mmdetection's",
                "rcnn_samples_per_image (training)": self.spec.rcnn_samples_per_image}

    def data_info(self) -> dict[str, Any]:
        s, e = self.spec.scenes, self.spec.easy_scenes
        return {
            "generator": "harness.data.det_scenes.make_det_batch (procedural, in torch)",
            "classes": ", ".join(s.class_hues),
            "img_size": s.img_size,
            "train": f"seed {det_scenes.TRAIN_SEED} + --seed, index step*batch+i (fresh scenes every step), "
                     "8-bit pixel levels",
            "curriculum": f"radius_px {list(e.radius_px)}, objects {list(e.n_objects)}, lures "
                          f"{list(e.n_lures)}, clutter {e.clutter_prob:g} at step 0 -> the full set at step "
                          f"{self.spec.curriculum_steps} (linear)",
            "full set": f"radius_px {list(s.radius_px)}, objects {list(s.n_objects)}, lures "
                        f"{list(s.n_lures)}, clutter {s.clutter_prob:g}",
            "heldout": f"seed {det_scenes.VAL_SEED}, scenes 0..{self.spec.heldout_images - 1} as a COCO "
                       "folder (write_coco_folder, PNG), scored by evaluate_coco",
        }


__all__ = [
    "HELDOUT_METRICS",
    "DetProxySpec",
    "SwinDetProxy",
    "curriculum",
    "grid_detector",
    "heldout_metrics",
    "most_frequent_label",
    "predict",
    "quantize_pixels",
    "step_rng_seed",
    "whole_image_detector",
    "write_heldout",
]
