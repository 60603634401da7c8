"""``swin-proxy``: the ``swin_proxy`` Swin trained on the procedural shape x texture set.

The model is built by :func:`harness.models.swin.build_swin` (the benchmarking code path, timm's
``SwinTransformer`` with Swin-T's patch 4 / window 7 geometry), the data by
:func:`harness.data.shapes.make_shapes`: training batches stream from ``TRAIN_SEED`` (index
``step * batch + i``, a pure function of the step), held-out metrics use the first
``HELDOUT_IMAGES`` images of ``HELDOUT_SEED``, the same set the Swin workload evaluates with
``images: shapes``. The class is the hue of one saturated object of 1-3 windows, among
grey-ish lures of every shape and texture on a grey-ish background, so the network has to read
the right windows: what MixA-Q's window importance is supposed to find.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.data import shapes
from harness.models.swin import PROXY, build_swin
from harness.train.base import Proxy, TrainConfig

HELDOUT_IMAGES = 500
CURRICULUM_STEPS = 240
"""Training starts on an easy version of the set (one big class object, 40-56 px radius, no lures,
smooth background) and reaches the full set (``ShapesConfig()``) linearly by this step: from
scratch, the tiny Swin stays at chance on the full set for hundreds of steps."""
_EASY_RADIUS_PX = (40.0, 56.0)
EVAL_CHUNK = 50
LABEL_SMOOTHING = 0.05
IMG_SIZE = 224


def curriculum(step: int) -> shapes.ShapesConfig:
    """The data config of training step ``step``: easy at 0, the full set from ``CURRICULUM_STEPS``."""
    full = shapes.ShapesConfig()
    t = min(1.0, step / CURRICULUM_STEPS)
    if t >= 1.0:
        return full
    lo = _EASY_RADIUS_PX[0] + (full.radius_px[0] - _EASY_RADIUS_PX[0]) * t
    hi = _EASY_RADIUS_PX[1] + (full.radius_px[1] - _EASY_RADIUS_PX[1]) * t
    lures = (min(full.n_distractors[0], int(t * (full.n_distractors[0] + 1))),
             round(full.n_distractors[1] * t))
    return dataclasses.replace(full, radius_px=(lo, hi), n_distractors=lures,
                               clutter_prob=full.clutter_prob * t)


class SwinProxy(Proxy):
    name = "swin-proxy"
    description = (
        "swin_proxy (timm SwinTransformer, Swin-T window geometry at 224 px, embed_dim 32, depths "
        "2-2-4-2) trained from scratch on the procedural object set harness.data.shapes (10 hue "
        "classes; the one saturated class object covers 1-3 windows among grey-ish lures)"
    )
    headline = "top1"
    #: the training stream is shapes.TRAIN_SEED + seed; the next seeds are the held-out/calibration sets
    max_seed = min(shapes.HELDOUT_SEED, shapes.CALIB_SEED) - shapes.TRAIN_SEED - 1
    max_seed_reason = (f"the training images use data seed {shapes.TRAIN_SEED} + --seed, and data seeds "
                       f"{min(shapes.HELDOUT_SEED, shapes.CALIB_SEED)}.. hold the held-out and "
                       "calibration images")

    def default_config(self) -> TrainConfig:
        return TrainConfig(
            steps=640, batch=16, lr=7e-4, weight_decay=0.05, warmup_steps=30, min_lr_frac=0.02,
            grad_clip=1.0, eval_every=80, ckpt_every=40, seed=0, threads=1, save_dtype="float16",
        )

    def build_model(self, seed: int) -> nn.Module:
        return build_swin("swin_proxy", IMG_SIZE, seed=seed).train()

    def batch(self, step: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """([size, 3, 224, 224] normalized images, [size] labels) of training step ``step``;
        ``seed`` shifts the training stream (seed 0: ``shapes.TRAIN_SEED``)."""
        stream = shapes.TRAIN_SEED + seed
        if stream in (shapes.HELDOUT_SEED, shapes.CALIB_SEED):
            raise ValueError(f"training seed {seed} would train on the held-out/calibration images; "
                             f"use a seed below {min(shapes.HELDOUT_SEED, shapes.CALIB_SEED)}")
        b = shapes.make_shapes(range(step * size, (step + 1) * size), stream, curriculum(step))
        return b.images, b.labels

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)
        acc = (logits.argmax(-1) == labels).float().mean()
        return loss, {"train_top1": float(acc)}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out top-1 and NLL (nat) on the first ``HELDOUT_IMAGES`` of ``HELDOUT_SEED``."""
        device = next(model.parameters()).device
        correct, nll = 0.0, 0.0
        for start in range(0, HELDOUT_IMAGES, EVAL_CHUNK):
            b = shapes.make_shapes(range(start, min(start + EVAL_CHUNK, HELDOUT_IMAGES)), shapes.HELDOUT_SEED)
            logits = model(b.images.to(device)).float().cpu()
            correct += float((logits.argmax(-1) == b.labels).sum())
            nll += float(F.cross_entropy(logits, b.labels, reduction="sum"))
        return {"top1": correct / HELDOUT_IMAGES, "nll": nll / HELDOUT_IMAGES}

    def baselines(self) -> dict[str, dict[str, float]]:
        """Chance / majority class (labels are balanced: 1/K, NLL log K) and the untrained twin."""
        k = shapes.NUM_CLASSES
        chance = {"top1": 1.0 / k, "nll": float(torch.log(torch.tensor(float(k))))}
        untrained = build_swin("swin_proxy", IMG_SIZE, seed=self.default_config().seed).eval()
        return {"chance / majority class": chance, "untrained (same init)": self.evaluate(untrained)}

    def model_info(self) -> dict[str, Any]:
        return {"builder": 'build_swin("swin_proxy")', "img_size": IMG_SIZE,
                "num_classes": shapes.NUM_CLASSES, **{k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in PROXY.items()}}

    def data_info(self) -> dict[str, Any]:
        cfg = shapes.ShapesConfig()
        return {
            "generator": "harness.data.shapes.make_shapes (procedural, in torch)",
            "classes": ", ".join(shapes.CLASS_NAMES),
            "train": f"seed {shapes.TRAIN_SEED}, index step*batch+i (fresh images every step)",
            "curriculum": f"one big object ({_EASY_RADIUS_PX[0]:g}-{_EASY_RADIUS_PX[1]:g} px radius), no "
                          f"lures, smooth background at step 0 -> the full set at step {CURRICULUM_STEPS} "
                          "(linear)",
            "heldout": f"seed {shapes.HELDOUT_SEED}, indices 0..{HELDOUT_IMAGES - 1}",
            "class cue": f"{cfg.class_cue} (+-{cfg.hue_jitter_deg:g} deg jitter; lures and background "
                         f"saturation <= {cfg.lure_max_saturation:g})",
            "class object radius_px": list(cfg.radius_px),
            "texture period_px": list(cfg.period_px),
            "lures per image": list(cfg.n_distractors),
            "cluttered background prob": cfg.clutter_prob,
            "label_smoothing": LABEL_SMOOTHING,
        }
