"""Image preprocessing as the official VGGT loader does it (normalization happens in the model).

"crop" (default): resize to width ``target`` keeping the aspect ratio, height rounded to a
multiple of the patch size (Python ``round``, as upstream), then centre-crop the height to
``target`` if it is taller. "pad": the longest side becomes ``target``, the other is rounded to
a multiple of the patch size, then the image is padded white (1.0), centred, to target x target.
RGBA is composited onto white. Images of different resulting shapes are padded white, centred,
to the largest H and W (with a logged warning). Output: [S, 3, H, W] float in [0, 1].

``target`` may be smaller than 518 for CPU presets but must be a multiple of the patch size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

MODES = ("crop", "pad")


def _check(mode: str, target: int, patch_size: int) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; allowed: {', '.join(MODES)}")
    if target <= 0 or target % patch_size:
        raise ValueError(f"target size {target} must be a positive multiple of the patch size {patch_size}")


def resized_hw(
    height: int, width: int, mode: str, target: int = 518, patch_size: int = 14
) -> tuple[int, int]:
    """(H, W) after the resize step (before cropping or padding) of a height x width image."""
    _check(mode, target, patch_size)
    if mode == "crop" or width >= height:
        new_w = target
        new_h = round(height * (new_w / width) / patch_size) * patch_size
    else:
        new_h = target
        new_w = round(width * (new_h / height) / patch_size) * patch_size
    return max(new_h, patch_size), max(new_w, patch_size)


def _finish(img: torch.Tensor, mode: str, target: int) -> torch.Tensor:
    """Centre-crop (crop mode, too tall) or white-pad (pad mode) a resized [3, H, W] image."""
    h, w = img.shape[-2:]
    if mode == "crop":
        if h > target:
            top = (h - target) // 2
            img = img[:, top : top + target, :]
        return img
    return _pad_white(img, max(target, h), max(target, w))


def _pad_white(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    dh, dw = height - img.shape[-2], width - img.shape[-1]
    if dh <= 0 and dw <= 0:
        return img
    top, left = dh // 2, dw // 2
    return F.pad(img, (left, dw - left, top, dh - top), mode="constant", value=1.0)


def _stack(images: list[torch.Tensor]) -> torch.Tensor:
    shapes = {tuple(im.shape[-2:]) for im in images}
    if len(shapes) > 1:
        max_h = max(s[0] for s in shapes)
        max_w = max(s[1] for s in shapes)
        log.warning(
            "images have different shapes %s; padding them white to %dx%d", sorted(shapes), max_h, max_w
        )
        images = [_pad_white(im, max_h, max_w) for im in images]
    return torch.stack(images)


def _load_one(path: Path, mode: str, target: int, patch_size: int) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(background, im)
        im = im.convert("RGB")
        width, height = im.size
        new_h, new_w = resized_hw(height, width, mode, target, patch_size)
        im = im.resize((new_w, new_h), Image.Resampling.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8).copy()
    img = torch.from_numpy(arr).permute(2, 0, 1).float().div(255.0)
    return _finish(img, mode, target)


def load_images(
    paths: Sequence[str | Path], mode: str = "crop", target: int = 518, patch_size: int = 14
) -> torch.Tensor:
    """Load and preprocess image files (PIL, bicubic) -> [S, 3, H, W] in [0, 1]."""
    _check(mode, target, patch_size)
    if len(paths) == 0:
        raise ValueError("load_images needs at least one image path")
    images = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"image not found: {p}")
        images.append(_load_one(p, mode, target, patch_size))
    return _stack(images)


def preprocess_tensor(
    images: torch.Tensor | Sequence[torch.Tensor], mode: str = "crop", target: int = 518, patch_size: int = 14
) -> torch.Tensor:
    """In-memory version of :func:`load_images`.

    images: [S, C, H, W] or a sequence of [C, H, W] float tensors in [0, 1], C = 3 (RGB) or
    4 (RGBA, composited onto white). The resize is torch bicubic with antialiasing (close to,
    not bit-identical with, PIL). Returns [S, 3, H', W'] in [0, 1].
    """
    _check(mode, target, patch_size)
    seq = list(images.unbind(0)) if isinstance(images, torch.Tensor) else list(images)
    if not seq:
        raise ValueError("preprocess_tensor needs at least one image")
    out = []
    for i, img in enumerate(seq):
        if img.dim() != 3 or img.shape[0] not in (3, 4):
            raise ValueError(f"image {i} must be [3 or 4, H, W], got {tuple(img.shape)}")
        img = img.float()
        if img.shape[0] == 4:
            alpha = img[3:4]
            img = img[:3] * alpha + (1.0 - alpha)
        new_h, new_w = resized_hw(img.shape[-2], img.shape[-1], mode, target, patch_size)
        img = F.interpolate(
            img[None], size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
        )
        out.append(_finish(img[0].clamp(0.0, 1.0), mode, target))
    return _stack(out)
