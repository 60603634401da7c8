"""The ``swin-det`` workload: a Swin Mask R-CNN whose backbone is quantized, scored by COCO mAP.

Runs end to end on the tiny ``swin_det_micro`` (random weights) on procedural scenes and on a COCO
folder the test writes; the pieces (the copy of the detector, the head MAC counter, the backbone's
geometry at a detection size, the stage fidelity, the scenes' ground truth) are checked by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from harness import registry
from harness.data import det_scenes
from harness.metrics import work as W
from harness.metrics.coco_eval import coco_results, score_results
from harness.models.checkpoint import CheckpointError
from harness.models.swin_det import DET_MODELS, backbone_of, build_swin_maskrcnn
from harness.run.options import RunOptions
from harness.run.runner import run_suite
from harness.store import load
from harness.suite import parse_suite
from harness.train.det_proxy import DetProxySpec
from harness.workloads.swin import SQNR_CAP_DB
from harness.workloads.swin_det import (
    StageCapture,
    SwinDetParams,
    SwinDetWorkload,
    backbone_input,
    body_at,
    head_macs,
    quantized_detector,
    scene_config,
    scene_inputs,
    score_spread,
    stage_fidelity,
)

pytestmark = pytest.mark.usefixtures("one_thread")

MICRO = DET_MODELS["swin_det_micro"]

SUITE = """
name: swin-det-test
workload: swin-det
reference: fp32
fixed: {model: swin_det_micro, batch: 1, eval_images: 1, calib_images: 1, compare_images: 1, w_bits: 4,
        diag_images: 1}
methods:
  fp32: {}
  uniform: {a_bits: 8}
  mixaq: {a_bits_high: 8, a_bits_low: 4, ratio: 0.5}
  sparsevit: {a_bits: 8, prune_ratio: 0.25}
timing: {warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}
metrics: {evaluate: true, breakdown: false}
"""


def _run(text: str, out) -> dict:
    run_suite(parse_suite(text), out, RunOptions(progress=False, argv=["test"]))
    return {r["method"]: r for _, r in load(out).points.iterrows()}


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _run(SUITE, tmp_path_factory.mktemp("det") / "run")


def test_workload_and_the_four_swin_methods_are_registered():
    registry.load_builtins()
    assert registry.get_workload("swin-det") is SwinDetWorkload
    assert registry.method_names("swin-det") == ["fp32", "mixaq", "sparsevit", "uniform"]


def test_every_method_runs_and_reports_map_beside_backbone_bops(rows):
    assert {m: r["status"] for m, r in rows.items()} == dict.fromkeys(rows, "ok")
    for r in rows.values():
        for col in ("q_bbox_map", "q_bbox_map50", "q_segm_map", "work_bops", "work_bops_model"):
            assert 0.0 <= r[col] if col.startswith("q_") else r[col] > 0, col
    # the float backbone at 32 x 32 bits; the quantized ones far below it
    fp, uni = rows["fp32"], rows["uniform"]
    assert fp["work_bops"] == pytest.approx(fp["work_macs"] * 32 * 32)
    assert uni["work_bops"] < fp["work_bops"] / 20
    # mixaq at ratio 0.5 sends windows low: cheaper than its uniform A8 base; pruning executes fewer MACs
    assert rows["mixaq"]["work_low_window_frac"] > 0 and rows["mixaq"]["work_bops_speedup"] > 1.0
    assert rows["sparsevit"]["work_pruned_window_frac"] > 0
    assert rows["sparsevit"]["work_macs"] < uni["work_macs"]
    # the heads are float and counted at 32 x 32 bits on top of the backbone
    for r in rows.values():
        assert r["work_bops_model"] == pytest.approx(r["work_bops"] + r["work_macs_heads"] * 32 * 32)


def test_the_importance_diagnostic_runs_for_mixaq_on_the_stages_with_enough_windows(rows):
    mix = rows["mixaq"]
    body = body_at(backbone_of(MICRO.build(seed=0)), (128, 128))  # 112 px scenes, padded to a multiple of 32
    first = [st.blocks[0] for st in body.layers]
    windows = [math.ceil(b.input_resolution[0] / b.window_size[0])
               * math.ceil(b.input_resolution[1] / b.window_size[1]) for b in first]
    stages = [i for i, n in enumerate(windows) if n >= 4]  # the diagnostic needs >= 4 windows
    assert stages and len(stages) < 4
    cols = [f"fid_imp_sens_spearman_stage{i}" for i in range(4)]
    for i, col in enumerate(cols):
        assert (-1.0 <= mix[col] <= 1.0) if i in stages else math.isnan(mix.get(col, math.nan))
    assert mix["fid_imp_sens_spearman"] == pytest.approx(sum(mix[cols[i]] for i in stages) / len(stages))
    assert all(math.isnan(rows[m].get("fid_imp_sens_spearman", math.nan)) for m in ("fp32", "uniform"))


def test_the_reference_has_no_fidelity_columns_and_the_others_do(rows):
    assert math.isnan(rows["fp32"]["fid_sqnr_stage0_db"])
    for m in ("uniform", "mixaq", "sparsevit"):
        assert 0 < rows[m]["fid_sqnr_stage0_db"] < SQNR_CAP_DB
        assert 0.5 < rows[m]["fid_cos_stage0"] < 1.0
    # mixaq sends its low-importance windows to A4: they carry more noise than uniform A8's
    assert rows["mixaq"]["fid_sqnr_low_db"] < rows["uniform"]["fid_sqnr_low_db"] - 0.5


def test_the_quantized_copy_leaves_the_float_detector_unchanged():
    model = MICRO.build(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    body = backbone_of(model)
    other = MICRO.build(seed=1)
    copy = quantized_detector(model, backbone_of(other))
    assert backbone_of(copy) is backbone_of(other) and backbone_of(model) is body
    assert copy.roi_heads is not model.roi_heads  # the heads are copies, not shared objects
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the copy's heads hold the float detector's weights
    assert torch.equal(copy.roi_heads.box_head.fc6.weight, model.roi_heads.box_head.fc6.weight)


def test_backbone_input_is_the_normalized_image_padded_to_32():
    model = MICRO.build()
    img = torch.rand(3, 112, 100)
    x = backbone_input(model, [img], "cpu")
    assert x.shape == (1, 3, 128, 128)  # 112 x 100 (min = max size 112: no resize) padded to 32
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(x[0, :, :112, :100], (img - mean) / std, atol=1e-6)
    assert x[0, :, 112:].abs().sum() == 0 and x[0, :, :, 100:].abs().sum() == 0


def test_the_transformed_backbone_has_the_geometry_of_the_input_size_and_keeps_the_windows():
    body = backbone_of(MICRO.build())
    sized = body_at(body, (128, 96))
    geom = W.SwinGeometry.from_model(sized)
    res = [b.resolution for b in geom.blocks]
    assert res == [(32, 24), (16, 12), (8, 6), (4, 3)]  # stride 4, 8, 16, 32
    assert {b.window for b in geom.blocks} == {(7, 7)}
    assert [b.n_windows for b in geom.blocks] == [5 * 4, 3 * 2, 2 * 1, 1]
    assert geom.patch_embed_macs == 32 * 24 * 16 * 3 * 4 * 4
    assert tuple(body.patch_embed.grid_size) != (32, 24)  # the float body itself is not resized
    # the resized copy computes what the float body computes, at that size and at another
    for hw in ((128, 96), (64, 160)):
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            assert torch.allclose(sized.forward_features(x), body.forward_features(x), atol=1e-5)


@torch.no_grad()
def test_head_macs_counts_convolutions_and_linear_layers_outside_the_backbone():
    model = MICRO.build()
    x = torch.randn(1, 3, 128, 128)
    feats = model.backbone(x)
    # FPN: 1x1 laterals C_i -> 16 and 3x3 outputs 16 -> 16 on maps 32, 16, 8, 4 (channels 16..128)
    maps = [32, 16, 8, 4]
    chans = [16, 32, 64, 128]
    fpn = sum(m * m * 16 * c for m, c in zip(maps, chans)) + sum(m * m * 16 * 16 * 9 for m in maps)
    assert head_macs(model, lambda: model.backbone(x)) == fpn
    # RPN head on the five levels (+ the 2 x 2 max-pool level): 3x3 16->16, 1x1 cls 16->3, reg 16->12
    levels = maps + [2]
    rpn = sum(m * m * (16 * 16 * 9 + 16 * 3 + 16 * 12) for m in levels)
    assert head_macs(model, lambda: model.rpn.head(list(feats.values()))) == rpn
    # box head on 10 RoIs: fc6 (16*7*7 -> 32), fc7 (32 -> 32), cls (32 -> 6), reg (32 -> 24)
    rois = torch.randn(10, 16, 7, 7)
    box = 10 * (16 * 49 * 32 + 32 * 32 + 32 * 6 + 32 * 24)
    assert head_macs(model, lambda: model.roi_heads.box_predictor(model.roi_heads.box_head(rois))) == box
    # mask predictor on 3 RoIs: 2x2 stride-2 deconv 16 -> 16 on 14 x 14, then 1x1 16 -> 6 on 28 x 28
    m_in = torch.randn(3, 16, 14, 14)
    mask = 3 * 14 * 14 * 16 * 16 * 4 + 3 * 28 * 28 * 16 * 6
    assert head_macs(model, lambda: model.roi_heads.mask_predictor(m_in)) == mask
    # the backbone's own layers are not counted
    assert head_macs(model, lambda: backbone_of(model)(x)) == 0


def _cap(*chunks: list[torch.Tensor]) -> StageCapture:
    """One stage; chunks of [n, H, W, C] outputs with a flat importance map."""
    return StageCapture(out=[[c] for c in chunks], tok=[[torch.ones(c.shape[:3])] for c in chunks])


def test_stage_fidelity_sums_energies_over_chunks_before_taking_the_ratio():
    ref_a, ref_b = torch.full((1, 7, 7, 2), 1.0), torch.full((1, 7, 7, 2), 3.0)
    test_a, test_b = ref_a + 0.1, ref_b + 0.3  # chunk SQNRs 20 dB each
    test_a2 = ref_a + 1.0  # chunk a at 0 dB
    row = stage_fidelity(_cap(ref_a, ref_b), _cap(test_a2, test_b), [(7, 7)])
    # signal 98 * (1 + 9) = 980, noise 98 * (1 + 0.09) = 106.82 -> 9.627 dB (the mean of the
    # per-chunk dB values would be 10 dB)
    assert row["fid_sqnr_stage0_db"] == pytest.approx(10 * math.log10(980 / 106.82), abs=1e-5)
    same = stage_fidelity(_cap(ref_a, ref_b), _cap(test_a, test_b), [(7, 7)])
    assert same["fid_sqnr_stage0_db"] == pytest.approx(20.0)
    assert same["fid_cos_stage0"] == pytest.approx(1.0)
    assert stage_fidelity(_cap(ref_a), _cap(ref_a), [(7, 7)])["fid_sqnr_stage0_db"] == SQNR_CAP_DB


def test_scene_ground_truth_scores_itself_perfectly_and_a_shifted_copy_does_not():
    cfg = scene_config(SwinDetParams(model="swin_det_micro"))
    assert cfg.img_size == 112 and cfg.radius_px[1] == pytest.approx(12.0)
    inputs = scene_inputs(cfg, det_scenes.VAL_SEED, 3)
    scenes = [det_scenes.make_det_scene(cfg, det_scenes.VAL_SEED, i) for i in range(3)]
    for img, s in zip(inputs.images, scenes):  # the scene at 8-bit levels, as a saved scene
        assert torch.equal(img, (s.image * 255).round() / 255) and not torch.equal(img, s.image)
    preds = [{"boxes": s.boxes, "labels": s.labels, "scores": torch.ones(len(s.labels)),
              "masks": s.masks[:, None].float()} for s in scenes]
    ids = [r.image_id for r in inputs.records]
    stats = score_results(inputs.gt, coco_results(inputs.gt, inputs.records, preds), ids)
    assert stats["bbox_mAP"] == pytest.approx(1.0) and stats["segm_mAP"] == pytest.approx(1.0)
    # predictions paired with the wrong images score (near) nothing
    rolled = preds[1:] + preds[:1]
    stats = score_results(inputs.gt, coco_results(inputs.gt, inputs.records, rolled), ids)
    assert stats["bbox_mAP"] < 0.2


def test_a_coco_folder_runs_with_calibration_images_apart_from_the_evaluated_ones(tmp_path):
    cfg = scene_config(SwinDetParams(model="swin_det_micro"))
    det_scenes.write_coco_folder(cfg, tmp_path / "coco", 3)
    text = SUITE.replace("fixed: {", f"fixed: {{images: coco, data_path: '{tmp_path / 'coco'}', ")
    text = text.replace("  uniform: {a_bits: 8}\n  mixaq: {a_bits_high: 8, a_bits_low: 4, ratio: 0.5}\n"
                        "  sparsevit: {a_bits: 8, prune_ratio: 0.25}\n", "  uniform: {a_bits: 8}\n")
    rows = _run(text, tmp_path / "run")
    assert rows["uniform"]["status"] == "ok" and rows["uniform"]["fid_sqnr_stage0_db"] > 0
    too_many = text.replace("calib_images: 1", "calib_images: 3")
    rows = _run(too_many, tmp_path / "run2")
    assert rows["uniform"]["status"] == "failed"
    assert "not enough for 1 evaluated + 3 calibration images" in rows["uniform"]["error"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"images": "coco"}, "images: coco needs data_path"),
        ({"images": "coco", "data_path": "/no/such/coco"}, "data_path '/no/such/coco' does not exist"),
        ({"data_path": "/tmp"}, "is set but images is 'scenes'"),
    ],
)
def test_input_paths_are_checked_before_anything_runs(params, expected):
    problems = SwinDetWorkload().check_paths(SwinDetParams(**params))
    assert any(expected in p for p in problems), problems


def test_a_checkpoint_saved_from_the_detector_loads_strictly_and_another_model_is_refused(tmp_path):
    trained = MICRO.build(seed=3)
    path = tmp_path / "det.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    text = (f"name: t\nworkload: swin-det\nfixed: {{model: swin_det_micro, checkpoint: '{path}'}}\n"
            "methods: {fp32: {}}\n")
    model = SwinDetWorkload().build_model(_point(text))
    for k, v in trained.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    other = DET_MODELS["swin_det_proxy"].build()
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match=r"det\.safetensors does not match the Swin Mask R-CNN"):
        SwinDetWorkload().build_model(_point(text))


def _point(text: str):
    return parse_suite(text).points()[0]


def test_head_macs_ignores_modules_of_other_kinds():
    model = MICRO.build()
    assert head_macs(model, lambda: nn.functional.relu(torch.ones(3))) == 0


def test_the_proxy_detector_is_the_architecture_the_proxy_trains():
    trained = build_swin_maskrcnn(**DetProxySpec().model_kwargs()).state_dict()
    named = DET_MODELS["swin_det_proxy"].build().state_dict()
    assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in named.items()}
    assert DET_MODELS["swin_det_proxy"].num_classes == det_scenes.NUM_CLASSES
    assert scene_config(SwinDetParams()) == DetProxySpec().scenes  # the scenes it was scored on


def test_score_spread_is_the_population_std_over_the_mean_as_in_the_swin_workload():
    tok = torch.cat([torch.ones(1, 7, 7), torch.full((1, 7, 7), 3.0)], dim=2)  # two windows
    # window scores 7 and 21 (L2 over 49 equal tokens): std 7 (population), mean 14
    cap = StageCapture(out=[[torch.zeros(1, 7, 14, 1)]], tok=[[tok]])
    assert score_spread(cap, [(7, 7)]) == {"work_score_cv_stage0": pytest.approx(0.5)}
