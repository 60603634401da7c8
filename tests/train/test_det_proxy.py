"""swin-det-proxy: registration, the committed shape, deterministic batches and steps, the loss, a tiny
training run (weights, card, curves, resume, strict load) and held-out metrics that come from
evaluate_coco on the VAL_SEED scenes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

from harness.cli import main
from harness.data.coco import read_coco
from harness.data.det_scenes import (
    NUM_CLASSES,
    TRAIN_SEED,
    VAL_SEED,
    DetScenesConfig,
    make_det_batch,
    make_det_scene,
    write_coco_folder,
)
from harness.metrics.coco_eval import evaluate_coco
from harness.models.checkpoint import read_state_dict
from harness.models.swin_det import PadFirstSwinBlock, build_swin_maskrcnn
from harness.train import get_proxy
from harness.train.base import TrainConfig
from harness.train.card import CARD_MD, read_card
from harness.train.det_proxy import (
    HELDOUT_METRICS,
    DetProxySpec,
    SwinDetProxy,
    curriculum,
    quantize_pixels,
    step_rng_seed,
)
from harness.train.loop import CURVES_PLOT, CURVES_TABLE, STATE_FILE, WEIGHTS_FILE, train

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # pycocotools, numpy 2
]

TINY_SCENES = DetScenesConfig(img_size=112, n_objects=(1, 3), radius_px=(16.0, 30.0), n_lures=(0, 2),
                              lure_radius_px=(4.0, 10.0), period_px=(3.0, 5.0))
TINY = DetProxySpec(
    embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), fpn_channels=16, box_fc_channels=32,
    mask_channels=16, scenes=TINY_SCENES,
    easy_scenes=dataclasses.replace(TINY_SCENES, radius_px=(24.0, 30.0), n_lures=(0, 0), clutter_prob=0.0,
                                    n_objects=(1, 1)),
    curriculum_steps=4, heldout_images=2, rcnn_samples_per_image=64,
)
#: a small lr keeps the tiny model near its init, which finds a few objects of the held-out scenes (on the
#: reference machine bbox_mAP_50 0.038): the card's metrics are then not all zero
TINY_RECIPE = TrainConfig(steps=2, batch=2, lr=1e-4, warmup_steps=1, eval_every=2, ckpt_every=1, seed=0,
                          threads=1, save_dtype="float16")
LOSS_PARTS = {"classifier", "box_reg", "mask", "objectness", "rpn_box_reg"}
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def test_the_proxy_is_registered_and_listed(capsys):
    assert isinstance(get_proxy("swin-det-proxy"), SwinDetProxy)
    assert main(["train", "--list"]) == 0
    assert "swin-det-proxy: small Swin Mask R-CNN" in capsys.readouterr().out


def test_the_committed_proxy_is_a_small_swin_t_geometry_mask_rcnn_that_does_not_resize_448px():
    proxy = SwinDetProxy()
    model = proxy.build_model(seed=0)
    body = model.backbone.body
    assert model.training
    assert body.patch_embed.patch_size == (4, 4) and body.embed_dim == 32
    assert [len(s.blocks) for s in body.layers] == [2, 2, 4, 2]
    assert [s.blocks[0].attn.num_heads for s in body.layers] == [2, 4, 8, 16]
    blocks = [b for s in body.layers for b in s.blocks]
    assert all(isinstance(b, PadFirstSwinBlock) and b.window_size == (7, 7) for b in blocks)
    assert model.backbone.out_channels == 64
    assert model.roi_heads.box_head.fc7.out_features == 256
    assert model.roi_heads.mask_predictor.conv5_mask.out_channels == 64
    assert model.roi_heads.box_predictor.cls_score.out_features == NUM_CLASSES + 1
    images, _ = model.eval().transform([torch.zeros(3, 448, 448)])
    assert images.tensors.shape == (1, 3, 448, 448) and images.image_sizes == [(448, 448)]
    cfg = proxy.default_config()
    assert (cfg.threads, cfg.batch, cfg.save_dtype) == (2, 4, "float16")


def test_training_seeds_stop_before_the_heldout_scenes():
    proxy = SwinDetProxy(TINY)
    assert proxy.seed_problem(VAL_SEED - TRAIN_SEED - 1) is None
    assert "held-out" in proxy.seed_problem(VAL_SEED - TRAIN_SEED)
    with pytest.raises(ValueError, match="held-out"):
        proxy.batch(0, 1, VAL_SEED - TRAIN_SEED)


def test_the_curriculum_goes_linearly_from_the_easy_scenes_to_the_full_set():
    assert curriculum(TINY, 0) == TINY.easy_scenes
    assert curriculum(TINY, TINY.curriculum_steps) == curriculum(TINY, 10**4) == TINY.scenes
    half = curriculum(TINY, TINY.curriculum_steps // 2)
    assert half.radius_px == pytest.approx((20.0, 30.0))
    assert half.n_lures == (0, 1) and half.n_objects == (1, 2) and half.clutter_prob == pytest.approx(0.375)


def test_a_batch_is_scenes_step_times_batch_plus_i_of_the_training_seed_in_8_bit_levels():
    proxy = SwinDetProxy(TINY)
    batch = proxy.batch(3, 2, 0)
    images, targets = make_det_batch(curriculum(TINY, 3), TRAIN_SEED, [6, 7])
    assert all(torch.equal(a, quantize_pixels(b)) for a, b in zip(batch["images"], images))
    assert all(torch.equal(a[k], b[k]) for a, b in zip(batch["targets"], targets) for k in a)
    assert torch.equal(batch["images"][0] * 255, (batch["images"][0] * 255).round())
    assert batch["rng_seed"] == step_rng_seed(3, 0) != proxy.batch(3, 2, 1)["rng_seed"]
    assert not torch.equal(proxy.batch(4, 2, 0)["images"][0], batch["images"][0])


def test_the_loss_sums_torchvisions_five_losses_and_is_a_function_of_the_step():
    proxy = SwinDetProxy(TINY)
    model = proxy.build_model(seed=0)
    batch = proxy.batch(0, 2, 0)
    rng = torch.get_rng_state()
    loss, parts = proxy.loss(model, batch)
    assert set(parts) == LOSS_PARTS
    assert loss.item() == pytest.approx(sum(parts.values()), rel=1e-6)
    assert proxy.loss(model, batch)[1] == parts  # torchvision's anchor/proposal draws are seeded
    assert torch.equal(torch.get_rng_state(), rng)  # ... without touching the global generator
    assert proxy.loss(model, {**batch, "rng_seed": batch["rng_seed"] + 1})[1] != parts


def test_the_loss_goes_down_on_one_repeated_batch():
    proxy = SwinDetProxy(TINY)
    model = proxy.build_model(seed=0)
    batch = proxy.batch(0, 2, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        loss, _ = proxy.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.5 * losses[0], losses


# ------------------------------------------------------------------------------- a tiny training run


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Two steps of the tiny proxy, whole and interrupted after step 1 then resumed."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("det-proxy")
    whole, parts = root / "whole", root / "parts"
    card = train(SwinDetProxy(TINY), whole, config=TINY_RECIPE, progress=False, log=lambda _: None)

    class Interrupt(Exception):
        pass

    class Stopping(SwinDetProxy):
        def batch(self, step, size, seed):
            if step == 1:
                raise Interrupt
            return super().batch(step, size, seed)

    with pytest.raises(Interrupt):
        train(Stopping(TINY), parts, config=TINY_RECIPE, progress=False)
    stopped_at = torch.load(parts / STATE_FILE, weights_only=True)["step"]
    train(SwinDetProxy(TINY), parts, config=TINY_RECIPE, resume=True, progress=False, log=lambda _: None)
    return {"card": card, "whole": whole, "parts": parts, "stopped_at": stopped_at}


def test_a_tiny_run_writes_weights_card_and_curves(trained):
    out, card = trained["whole"], trained["card"]
    for name in (WEIGHTS_FILE, CARD_MD, CURVES_TABLE, CURVES_PLOT):
        assert (out / name).stat().st_size > 0, name
    assert read_card(out) == json.loads(json.dumps(card))
    assert set(card["heldout"]) == set(HELDOUT_METRICS) and card["headline"] == "bbox_mAP"
    assert set(card["baselines"]) == {"untrained (same init)", "whole image, most frequent class",
                                      "64 px box grid x every class"}
    assert all(set(v) == set(HELDOUT_METRICS) for v in card["baselines"].values())
    assert card["model"]["embed_dim"] == 8 and card["model"]["min_size"] == card["model"]["max_size"] == 112
    assert all(t.dtype == torch.float16 for t in read_state_dict(out / WEIGHTS_FILE).values()
               if t.is_floating_point())


def test_a_resumed_run_gives_the_weights_of_an_uninterrupted_one(trained):
    assert trained["stopped_at"] == 1
    assert (trained["parts"] / WEIGHTS_FILE).read_bytes() == (trained["whole"] / WEIGHTS_FILE).read_bytes()


def test_the_saved_weights_load_strictly_and_give_the_cards_metrics_by_evaluate_coco(trained, tmp_path):
    """The card's held-out metrics are evaluate_coco's on the VAL_SEED COCO folder, for the saved weights
    loaded strictly (torchvision layout) into a freshly built model: recomputed here independently."""
    model = build_swin_maskrcnn(**TINY.model_kwargs(), seed=123)
    model.load_state_dict(read_state_dict(trained["whole"] / WEIGHTS_FILE), strict=True)
    write_coco_folder(TINY.scenes, tmp_path, TINY.heldout_images, VAL_SEED)
    ds = read_coco(tmp_path, short_side_px=112, max_long_side_px=112)
    with torch.no_grad():
        preds = [model.eval()([image])[0] for image, _ in ds]
    want = evaluate_coco(ds.coco, ds.records, preds)
    assert trained["card"]["heldout"] == pytest.approx({k: want[k] for k in HELDOUT_METRICS}, abs=1e-12)


# ------------------------------------------------------------------------------- held-out metrics


class Oracle(nn.Module):
    """Returns the ground truth of VAL_SEED scenes 0, 1, ... in the order it is asked (masks as
    [N, 1, H, W] probabilities): a perfect detector exactly when the images are those scenes."""

    def __init__(self, cfg: DetScenesConfig) -> None:
        super().__init__()
        self.cfg, self.next = cfg, 0
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for _ in images:
            s = make_det_scene(self.cfg, VAL_SEED, self.next)
            self.next += 1
            out.append({"boxes": s.boxes, "labels": s.labels, "scores": torch.ones(len(s.labels)),
                        "masks": s.masks[:, None].float()})
        return out


def test_the_heldout_metrics_score_the_first_val_seed_scenes():
    got = SwinDetProxy(dataclasses.replace(TINY, heldout_images=3)).evaluate(Oracle(TINY.scenes))
    assert got == dict.fromkeys(HELDOUT_METRICS, 1.0)


def test_the_whole_image_baseline_equals_a_hand_computed_coco_map_on_one_scene():
    # one large object: the whole-image box overlaps its box by IoU = box area / image area, which
    # passes some of COCO's ten thresholds; with one detection and one object, AP is 1 at a passed
    # threshold and 0 otherwise, so mAP = (thresholds passed) / 10 (bbox) and the same with the mask
    scenes = DetScenesConfig(img_size=112, n_objects=(1, 1), radius_px=(40.0, 45.0), n_lures=(0, 0),
                             period_px=(3.0, 5.0))
    proxy = SwinDetProxy(dataclasses.replace(TINY, scenes=scenes, easy_scenes=scenes, heldout_images=1))
    scene = make_det_scene(scenes, VAL_SEED, 0)
    x0, y0, x1, y1 = scene.boxes[0].tolist()
    box_iou = (x1 - x0) * (y1 - y0) / 112**2
    mask_iou = int(scene.masks[0].sum()) / 112**2
    want_box = float(np.mean(box_iou >= COCO_IOU_THRESHOLDS))
    want_mask = float(np.mean(mask_iou >= COCO_IOU_THRESHOLDS))
    assert want_box > 0  # the case tests something
    got = proxy.baselines()["whole image, most frequent class"]
    assert got["bbox_mAP"] == pytest.approx(want_box)
    assert got["bbox_mAP_50"] == pytest.approx(1.0)
    assert got["segm_mAP_50"] == pytest.approx(float(mask_iou >= 0.5))
    assert got["segm_mAP"] == pytest.approx(want_mask)


# ------------------------------------------------------------------------------- the committed proxy


def test_the_committed_cards_heldout_metrics_are_recomputed_from_the_committed_weights():
    """The committed swin-det-proxy as every benchmark loads it (``DET_MODELS['swin_det_proxy']`` +
    ``load_detector_weights`` of ``proxy:swin-det-proxy``) through ``SwinDetProxy().evaluate`` (100
    held-out scenes) gives its card's four figures: a change of the model, the loader, the scenes or
    the COCO metric that moves one of them fails here. About 25 s on one idle core."""
    from harness.models.swin_det import DET_MODELS, load_detector_weights
    from harness.models.weights import resolve_weights

    weights = resolve_weights("proxy:swin-det-proxy")
    card = read_card(weights.path.parent)["heldout"]
    model = DET_MODELS["swin_det_proxy"].build(seed=0)
    load_detector_weights(model, weights.path)
    got = SwinDetProxy().evaluate(model.eval())
    assert set(got) == set(card) == set(HELDOUT_METRICS)
    for key, value in card.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-12), key
