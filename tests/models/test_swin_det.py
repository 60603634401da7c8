"""Mask R-CNN with a timm Swin backbone (``harness.models.swin_det``) and mmdetection's checkpoint layout
(``harness.models.mmdet_keys``).

The checkpoint is written by hand in mmdet's layout (``swin_det_fixtures``: key names spelled out,
random values) and checked against references that read it by mmdet's names: mmdet's unfold-based
patch merging, the whole mmdet Swin backbone, FPN and RoI heads, mmdet's anchors and RoI levels.
No network, no GPU.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import pytest
import timm
import torch
from swin_det_fixtures import (
    SMALL,
    SMALL_WIDTHS,
    SWIN_T,
    SWIN_T_WIDTHS,
    mmdet_anchors,
    mmdet_bbox_head,
    mmdet_fpn_forward,
    mmdet_mask_head,
    mmdet_patch_merging,
    mmdet_shapes,
    mmdet_state_dict,
    mmdet_swin_forward,
)
from timm.models.swin_transformer import SwinTransformer
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import roi_align

from harness.models.checkpoint import CheckpointError
from harness.models.swin_det import (
    MMDET_RELEASES,
    PadFirstSwinBlock,
    backbone_of,
    build_swin_maskrcnn,
    checkpoint_file,
    load_mmdet_checkpoint,
    replace_backbone,
)
from harness.models.weights import WeightsError
from harness.quant.qswin import QuantSpec, RoutingSpec, quantize_swin, window_scores

pytestmark = pytest.mark.usefixtures("one_thread")

K = SMALL["num_classes"]
SIZES = dict(min_size=200, max_size=296)
FLOAT = QuantSpec(w_bits=32, a_bits_high=32, a_bits_low=32, embed_bits=32)
#: a size whose stage maps (25x38, 13x19, 7x10, 4x5) are not window multiples, with odd merges
ODD_SIZE = (100, 150)
TOL = dict(rtol=1e-4, atol=1e-4)


def small_model(window_pad: str = "mmdet", checkpoint=None, seed: int = 1):
    return build_swin_maskrcnn(**SMALL, **SMALL_WIDTHS, **SIZES, window_pad=window_pad, seed=seed,
                               checkpoint=checkpoint)


def save_mmdet(path: Path, sd: dict) -> Path:
    """As mmdetection saves it: the state dict and a meta dict of plain values."""
    meta = {"CLASSES": ("a", "b", "c"), "mmdet_version": "2.16.0", "epoch": 12}
    torch.save({"state_dict": sd, "meta": meta}, path)
    return path


@pytest.fixture(scope="module")
def sd() -> dict[str, torch.Tensor]:
    return mmdet_state_dict(SMALL, SMALL_WIDTHS, seed=0)


@pytest.fixture(scope="module")
def ckpt(sd, tmp_path_factory) -> Path:
    return save_mmdet(tmp_path_factory.mktemp("mmdet") / "mask_rcnn_small.pth", sd)


@pytest.fixture(scope="module")
def model(ckpt):
    return small_model(checkpoint=ckpt)


# ----------------------------------------------------------------------------- backbone


@pytest.mark.parametrize("hw", [(6, 8), (7, 9)], ids=["even", "odd"])
def test_mapped_timm_patch_merging_equals_mmdets_unfold_merging(model, sd, hw):
    # catches: no permutation, the reduction permuted but not the norm, dy/dx swapped, the
    # downsample of stage i put at the start of stage i (other shapes: the load fails)
    x = torch.randn(2, *hw, 16)
    with torch.no_grad():
        ours = backbone_of(model).layers[1].downsample(x)
        ref, out_hw = mmdet_patch_merging(sd, "backbone.stages.0.downsample.", x.reshape(2, -1, 16), hw)
    assert ours.shape == (2, *out_hw, 32)
    torch.testing.assert_close(ours.reshape(2, -1, 32), ref, **TOL)


def test_backbone_features_equal_mmdets_swin_at_a_non_window_multiple_size(model, sd):
    # catches: swapped blocks or norms of equal width, qkv/proj/fc mix-ups, a wrong relative
    # position table, timm's shift-then-pad geometry (next test), a missing out norm
    x = torch.randn(2, 3, *ODD_SIZE)
    with torch.no_grad():
        ours = model.backbone.stage_features(x)
        ref = mmdet_swin_forward(sd, SMALL, x)
    assert [tuple(f.shape[-2:]) for f in ours] == [(25, 38), (13, 19), (7, 10), (4, 5)]
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **TOL)


def test_timm_window_geometry_differs_from_mmdets_off_window_multiples_only(ckpt, sd):
    # why window_pad="mmdet" exists: timm shifts before padding, mmdet pads before shifting
    timm_geom = small_model("timm", ckpt)
    assert not any(isinstance(b, PadFirstSwinBlock) for s in backbone_of(timm_geom).layers for b in s.blocks)
    for size, equal in ((ODD_SIZE, False), ((224, 224), True)):  # 224: stage maps 56/28/14/7
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            got = timm_geom.backbone.stage_features(x)
            ref = mmdet_swin_forward(sd, SMALL, x)
        assert all(torch.allclose(a, b, **TOL) for a, b in zip(got, ref)) == equal, size


def test_fpn_equals_mmdets_fpn_with_the_max_pool_level(model, sd):
    # catches: fpn_convs / lateral_convs indices permuted (equal shapes for the 3x3 convs)
    x = torch.randn(1, 3, *ODD_SIZE)
    with torch.no_grad():
        ours = model.backbone(x)
        ref = mmdet_fpn_forward(sd, mmdet_swin_forward(sd, SMALL, x))
    assert list(ours) == ["0", "1", "2", "3", "pool"]
    for a, b in zip(ours.values(), ref):
        torch.testing.assert_close(a, b, **TOL)


def test_the_stored_relative_position_index_is_mmdets_and_is_checked(model, sd, tmp_path):
    table_key = "backbone.stages.0.blocks.0.attn.w_msa.relative_position_index"
    assert torch.equal(backbone_of(model).layers[0].blocks[0].attn.relative_position_index, sd[table_key])
    bad = dict(sd)
    bad[table_key] = sd[table_key].T.contiguous()
    with pytest.raises(CheckpointError, match=table_key):
        load_mmdet_checkpoint(small_model(), save_mmdet(tmp_path / "bad.pth", bad))


# ----------------------------------------------------------------------------- heads


def test_fc_cls_moves_mmdets_background_row_first(model, sd):
    # catches: no rotation, rotation the wrong way (background from row 0), bias left unrotated
    cls = model.roi_heads.box_predictor.cls_score
    w, b = sd["roi_head.bbox_head.fc_cls.weight"], sd["roi_head.bbox_head.fc_cls.bias"]
    torch.testing.assert_close(cls.weight[0], w[K], rtol=0, atol=0)
    torch.testing.assert_close(cls.bias[0], b[K], rtol=0, atol=0)
    for k in range(K):
        torch.testing.assert_close(cls.weight[k + 1], w[k], rtol=0, atol=0)
        torch.testing.assert_close(cls.bias[k + 1], b[k], rtol=0, atol=0)


def test_fc_reg_and_mask_logits_get_a_zero_background_entry_first(model, sd):
    reg = model.roi_heads.box_predictor.bbox_pred
    w, b = sd["roi_head.bbox_head.fc_reg.weight"], sd["roi_head.bbox_head.fc_reg.bias"]
    assert reg.weight.shape[0] == 4 * (K + 1)
    assert not reg.weight[:4].any() and not reg.bias[:4].any()
    for k in range(K):
        torch.testing.assert_close(reg.weight[4 * (k + 1): 4 * (k + 2)], w[4 * k: 4 * k + 4], rtol=0, atol=0)
        torch.testing.assert_close(reg.bias[4 * (k + 1): 4 * (k + 2)], b[4 * k: 4 * k + 4], rtol=0, atol=0)
    logits = model.roi_heads.mask_predictor.mask_fcn_logits
    assert not logits.weight[0].any() and not logits.bias[0].any()
    torch.testing.assert_close(logits.weight[1:], sd["roi_head.mask_head.conv_logits.weight"], rtol=0, atol=0)


def test_box_and_mask_heads_equal_mmdets_with_label_k_plus_one(model, sd):
    # catches: shared_fcs swapped, mask convs permuted (equal shapes), deconv/logits mixed up
    g = torch.Generator().manual_seed(5)
    box_feats = torch.randn(6, 32, 7, 7, generator=g)
    mask_feats = torch.randn(6, 32, 14, 14, generator=g)
    with torch.no_grad():
        logits, deltas = model.roi_heads.box_predictor(model.roi_heads.box_head(box_feats))
        masks = model.roi_heads.mask_predictor(model.roi_heads.mask_head(mask_feats))
        ref_prob, ref_deltas = mmdet_bbox_head(sd, box_feats)
        ref_masks = mmdet_mask_head(sd, mask_feats)
    prob = logits.softmax(-1)
    torch.testing.assert_close(prob[:, 1:], ref_prob[:, :K], **TOL)  # label k + 1 = mmdet class k
    torch.testing.assert_close(prob[:, 0], ref_prob[:, K], **TOL)  # background
    torch.testing.assert_close(deltas[:, 4:], ref_deltas, **TOL)
    torch.testing.assert_close(masks[:, 1:], ref_masks, **TOL)


def test_rpn_convs_are_copied_unpermuted(model, sd):
    # channel a of rpn_cls and channels 4a..4a+3 of rpn_reg are anchor a in both libraries
    head = model.rpn.head
    torch.testing.assert_close(head.conv[0][0].weight, sd["rpn_head.rpn_conv.weight"], rtol=0, atol=0)
    torch.testing.assert_close(head.cls_logits.weight, sd["rpn_head.rpn_cls.weight"], rtol=0, atol=0)
    torch.testing.assert_close(head.bbox_pred.weight, sd["rpn_head.rpn_reg.weight"], rtol=0, atol=0)
    torch.testing.assert_close(head.bbox_pred.bias, sd["rpn_head.rpn_reg.bias"], rtol=0, atol=0)


def test_anchors_by_hand_in_mmdets_order_and_strides(model):
    # catches: torchvision's rounded base anchors, its inferred strides (224 // 4 = 56 on the
    # max-pool level instead of 64), another ratio order per location
    grids = [(56, 80), (28, 40), (14, 20), (7, 10), (4, 5)]
    images = ImageList(torch.zeros(1, 3, 224, 320), [(224, 320)])
    anchors = model.rpn.anchor_generator(images, [torch.zeros(1, 1, h, w) for h, w in grids])[0]
    r = 2**0.5
    row = (1 * 80 + 2) * 3  # level 0 (stride 4, side 32), y = 1, x = 2: centre (8, 4)
    expected = torch.tensor([
        [8 - 16 * r, 4 - 8 * r, 8 + 16 * r, 4 + 8 * r],  # ratio h/w 0.5
        [8 - 16, 4 - 16, 8 + 16, 4 + 16],  # ratio 1
        [8 - 8 * r, 4 - 16 * r, 8 + 8 * r, 4 + 16 * r],  # ratio 2
    ])
    torch.testing.assert_close(anchors[row: row + 3], expected, rtol=0, atol=1e-4)
    pool_start = 3 * (56 * 80 + 28 * 40 + 14 * 20 + 7 * 10)
    row = pool_start + (1 * 5 + 1) * 3 + 1  # max-pool level (stride 64, side 512), y = x = 1, ratio 1
    torch.testing.assert_close(anchors[row], torch.tensor([64.0 - 256, 64 - 256, 64 + 256, 64 + 256]))
    torch.testing.assert_close(anchors, mmdet_anchors((4, 8, 16, 32, 64), grids), rtol=0, atol=0)


def test_roi_pooling_uses_mmdets_levels_and_aligned_roi_align(model):
    pool = model.roi_heads.box_roi_pool
    g = torch.Generator().manual_seed(3)
    feats = {str(i): torch.randn(1, 4, 64 // 2**i, 64 // 2**i, generator=g) for i in range(4)}
    sides = {40.0: 0, 111.9: 0, 112.0: 1, 224.0: 2, 448.0: 3, 900.0: 3}  # sqrt(area) -> level
    boxes = torch.tensor([[10.0, 20.0, 10 + s, 20 + s] for s in sides])
    with torch.no_grad():
        out = pool(feats, [boxes], [(256, 256)])
    for i, (box, level) in enumerate(zip(boxes, sides.values())):
        roi, feat, scale = torch.cat([torch.zeros(1), box])[None], feats[str(level)], 1 / 4 / 2**level
        ref = roi_align(feat, roi, 7, spatial_scale=scale, sampling_ratio=0, aligned=True)
        torch.testing.assert_close(out[i: i + 1], ref, rtol=0, atol=0)
        unaligned = roi_align(feat, roi, 7, spatial_scale=scale, sampling_ratio=0)
        assert not torch.allclose(out[i: i + 1], unaligned)


# ----------------------------------------------------------------------------- strict loading


def test_a_missing_key_fails_in_one_paragraph_naming_file_and_key(sd, tmp_path):
    bad = {k: v for k, v in sd.items() if k != "backbone.norm2.weight"}
    path = save_mmdet(tmp_path / "missing.pth", bad)
    m = small_model()
    before = copy.deepcopy(m.state_dict())
    with pytest.raises(CheckpointError) as err:
        load_mmdet_checkpoint(m, path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert "1 missing keys [backbone.norm2.weight]" in msg and "unexpected" not in msg
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())  # nothing loaded


def test_an_extra_key_fails_in_one_paragraph_naming_it(sd, tmp_path):
    bad = dict(sd, **{"roi_head.bbox_head.fc_extra.weight": torch.zeros(2)})
    path = save_mmdet(tmp_path / "extra.pth", bad)
    with pytest.raises(CheckpointError) as err:
        load_mmdet_checkpoint(small_model(), path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert "1 unexpected keys [roi_head.bbox_head.fc_extra.weight]" in msg and "missing" not in msg


def test_another_class_count_is_a_misshapen_key_in_mmdets_name(sd, tmp_path):
    bad = dict(sd, **{"roi_head.bbox_head.fc_cls.weight": torch.zeros(K + 2, 64)})
    with pytest.raises(CheckpointError, match=r"misshapen keys \[roi_head\.bbox_head\.fc_cls\.weight -> "):
        load_mmdet_checkpoint(small_model(), save_mmdet(tmp_path / "classes.pth", bad))


def test_every_model_parameter_comes_from_exactly_one_mmdet_key(model, sd):
    own = model.state_dict()
    params = [k for k in sd if not k.endswith("relative_position_index")]
    assert len(own) == len(params)  # a bijection of parameters (plus the checked index buffers)


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Empty torch hub and HF caches, HF offline, and any connection attempt refused."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args))
        raise OSError("network access refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield tmp_path
    assert not attempts, f"network access attempted: {attempts}"


def test_a_release_url_not_in_the_torch_hub_cache_fails_naming_the_manual_path(offline):
    url = MMDET_RELEASES["mask_rcnn_swin-t-p4-w7_fpn_1x_coco"]
    name = url.rsplit("/", 1)[1]
    with pytest.raises(WeightsError) as err:
        checkpoint_file(url)
    msg = str(err.value)
    assert "\n" not in msg and url in msg and f"checkpoint=/local/path/{name}" in msg
    cached = offline / "torch" / "hub" / "checkpoints" / name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert checkpoint_file(url) == cached


def test_an_hf_spec_offline_fails_naming_the_manual_path(offline):
    with pytest.raises(WeightsError) as err:
        checkpoint_file("hf:some-org/mask-rcnn-swin-t/model.pth")
    msg = str(err.value)
    assert "\n" not in msg and "some-org/mask-rcnn-swin-t" in msg
    assert "checkpoint=/local/path/model.pth" in msg


# ----------------------------------------------------------------------------- the detector


def test_eval_forward_of_a_two_image_batch_off_window_multiples(model):
    images = [torch.rand(3, 200, 296, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det in out:
        n = det["boxes"].shape[0]
        assert 0 < n <= 100
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].shape == (n,)
        assert det["masks"].shape == (n, 1, 200, 296)
        assert det["labels"].min() >= 1 and det["labels"].max() <= K
        assert det["scores"].min() > 0.05
        assert (det["boxes"][:, 2:] >= det["boxes"][:, :2]).all() and det["boxes"][:, 2].max() <= 296


def test_full_swin_t_has_the_parameter_counts_of_swin_tiny_and_the_mmdet_release():
    model = build_swin_maskrcnn()
    body = backbone_of(model)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    tiny = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0)
    # the same Swin-T minus timm's final norm (768 weights + 768 biases), replaced by 4 stage norms
    assert n(body) == n(tiny) - 2 * 768 == 27_517_818
    assert n(model.backbone.norms) == 2 * (96 + 192 + 384 + 768)
    mmdet_count = sum(torch.Size(s).numel() for s in mmdet_shapes(SWIN_T, SWIN_T_WIDTHS).values())
    background = 4 * 1024 + 4 + 256 + 1  # torchvision's unused background rows (fc_reg, mask logits)
    assert n(model) == mmdet_count + background
    assert 47.7e6 < mmdet_count < 47.9e6  # the release's ~48M (Swin paper: 48M)
    assert [f["num_chs"] for f in body.feature_info] == [96, 192, 384, 768]


# ----------------------------------------------------------------------------- quantization seam


def _float_quantized_matches(model, size) -> bool:
    body = backbone_of(model)
    n_pairs = sum((len(s.blocks) + 1) // 2 for s in body.layers)
    q = quantize_swin(body, FLOAT, RoutingSpec((0.5,) * n_pairs, (0.0,) * n_pairs), None)
    assert isinstance(q, SwinTransformer)
    qmodel = replace_backbone(copy.deepcopy(model), q)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref, got = model.backbone.stage_features(x), qmodel.backbone.stage_features(x)
    assert any(r.single_branch() is None for st in q.layers for r in st.last_routes)  # windows really split
    return all(torch.allclose(a, b, **TOL) for a, b in zip(ref, got))


def test_quantize_swin_transforms_the_timm_geometry_backbone_exactly_at_any_size(ckpt):
    assert _float_quantized_matches(small_model("timm", ckpt), ODD_SIZE)


def test_quantize_swin_transforms_the_mmdet_geometry_backbone_exactly_on_window_multiples(model):
    assert _float_quantized_matches(model, (224, 224))


def test_quantize_swin_keeps_mmdets_geometry_off_window_multiples(model):
    assert _float_quantized_matches(model, ODD_SIZE)


def test_an_unknown_window_padding_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="window_pad='zero'; allowed: mmdet, timm"):
        build_swin_maskrcnn(**SMALL, **SMALL_WIDTHS, window_pad="zero")


def test_window_scores_follow_the_blocks_geometry_pad_then_shift_or_shift_then_pad():
    # rows 1..5 of a 5 x 1 map, windows of 4 x 1, shift 2 (padding: 3 rows)
    tok = torch.arange(1.0, 6.0).reshape(1, 5, 1)
    # mmdet: pad to 8 rows, then roll by -2: [3, 4, 5, P, P, P, 1, 2] -> windows {3,4,5,0}, {0,0,1,2}
    pad_first = window_scores(tok, (4, 1), (2, 0), pad_first=True)
    assert torch.allclose(pad_first, torch.tensor([[50.0**0.5, 5.0**0.5]]))
    # timm: roll the 5 rows by -2, then pad: [3, 4, 5, 1, 2, P, P, P] -> {3,4,5,1}, {2,0,0,0}
    timm = window_scores(tok, (4, 1), (2, 0))
    assert torch.allclose(timm, torch.tensor([[51.0**0.5, 2.0]]))
