"""The procedural shape x texture set (``harness.data.shapes``): determinism, splits, labels, geometry."""

from __future__ import annotations

import pytest
import torch

from harness.data.shapes import (
    HELDOUT_SEED,
    NUM_CLASSES,
    TRAIN_SEED,
    ShapesConfig,
    make_shapes,
    shapes_images,
)
from harness.models.swin import IMAGENET_MEAN, IMAGENET_STD, PROXY_CLASSES

pytestmark = pytest.mark.usefixtures("one_thread")


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalization -> values in [0, 1]."""
    return images * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)


def test_an_image_depends_only_on_seed_and_index_not_on_its_batch():
    whole = make_shapes(range(6), TRAIN_SEED)
    part = make_shapes([4, 1], TRAIN_SEED)
    assert torch.equal(part.images[0], whole.images[4]) and torch.equal(part.images[1], whole.images[1])
    assert torch.equal(part.masks[0], whole.masks[4])
    again = make_shapes(range(6), TRAIN_SEED)
    assert torch.equal(again.images, whole.images) and torch.equal(again.boxes, whole.boxes)


def test_training_and_heldout_seeds_give_different_images():
    train = make_shapes(range(4), TRAIN_SEED).images
    held = make_shapes(range(4), HELDOUT_SEED).images
    for i in range(4):
        assert (train[i] - held[i]).abs().mean() > 0.1


def test_labels_cycle_so_every_ten_consecutive_indices_hold_each_class_once():
    labels = make_shapes(range(37, 57), TRAIN_SEED).labels
    assert NUM_CLASSES == PROXY_CLASSES == 10
    assert torch.bincount(labels, minlength=NUM_CLASSES).tolist() == [2] * NUM_CLASSES


def test_images_are_imagenet_normalized_pixels_in_unit_range():
    images, labels = shapes_images(3, HELDOUT_SEED)
    assert images.shape == (3, 3, 224, 224) and images.dtype == torch.float32 and labels.shape == (3,)
    px = _pixels(images)
    assert px.min() >= -1e-5 and px.max() <= 1 + 1e-5


def test_the_class_object_is_exactly_where_the_mask_and_box_say():
    """Leaving the class object out changes pixels only inside its mask, and most of the mask."""
    idx = range(8)
    with_obj = make_shapes(idx, HELDOUT_SEED)
    without = make_shapes(idx, HELDOUT_SEED, draw_class_object=False)
    assert not without.masks.any()
    changed = (with_obj.images - without.images).abs().amax(1) > 1e-6  # [N, S, S]
    cfg = ShapesConfig()
    for i in range(len(idx)):
        mask = with_obj.masks[i]
        assert not (changed[i] & ~mask).any()  # nothing outside the object moved
        assert (changed[i] & mask).sum() >= 0.5 * mask.sum()
        ys, xs = mask.nonzero(as_tuple=True)
        x0, y0, x1, y1 = with_obj.boxes[i].tolist()
        assert (x0, y0, x1, y1) == (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        # 1-3 windows of 32 px across: the extent is at most the diameter of the largest radius
        assert max(x1 - x0, y1 - y0) <= 2 * cfg.radius_px[1] + 2
        assert max(x1 - x0, y1 - y0) >= cfg.radius_px[0]


def test_smaller_sides_rescale_the_objects():
    images, _ = shapes_images(2, HELDOUT_SEED, img_size=112)
    assert images.shape == (2, 3, 112, 112)
    b = make_shapes(range(2), HELDOUT_SEED, ShapesConfig.for_size(112))
    assert (b.boxes[:, 2:] <= 112).all() and b.masks.any(dim=(1, 2)).all()


def test_seeds_outside_the_generators_one_to_one_range_are_refused():
    with pytest.raises(ValueError, match="seed 256"):
        make_shapes([0], 256)
    with pytest.raises(ValueError, match="index"):
        make_shapes([2**24], 0)


def _hue_sat(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rgb: [..., 3] in [0, 1] -> (hue in degrees, saturation)."""
    mx, mn = rgb.max(-1).values, rgb.min(-1).values
    r, g, b = rgb.unbind(-1)
    d = (mx - mn).clamp_min(1e-6)
    hue = torch.where(mx == r, ((g - b) / d) % 6, torch.where(mx == g, (b - r) / d + 2, (r - g) / d + 4)) * 60
    return hue, (mx - mn) / mx.clamp_min(1e-6)


def test_the_hue_of_the_class_object_is_the_label_and_nothing_else_is_saturated():
    cfg = ShapesConfig()
    assert cfg.class_cue == "hue"
    b = make_shapes(range(20), HELDOUT_SEED)
    px = _pixels(b.images).permute(0, 2, 3, 1)  # [N, S, S, 3]
    for i in range(20):
        obj = px[i][b.masks[i]]
        # the brightest object pixels carry the class hue (the texture's dark level is noisier)
        bright = obj[obj.max(-1).values >= obj.max(-1).values.median()]
        hue, sat = _hue_sat(bright.mean(0))
        centre = 36.0 * int(b.labels[i])
        assert abs((float(hue) - centre + 180) % 360 - 180) <= cfg.hue_jitter_deg + 4
        assert float(sat) >= 0.6
        rest = px[i][~b.masks[i]]
        chroma = rest.max(-1).values - rest.min(-1).values
        obj_chroma = bright.max(-1).values - bright.min(-1).values
        assert float(chroma.mean()) < 0.15 < 0.3 < float(obj_chroma.mean())  # the rest is grey-ish
