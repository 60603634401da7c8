"""HeSS's own sensitivity (arXiv 2603.25336): per-head Fisher traces of the ground-truth camera and
point-cloud errors with respect to each head's query projection W_Q^h, normalized per error over the
heads of a layer and mixed with lambda; and the ``vggt`` workload's gradient probe that computes
them. The trace is checked against a hand-derived gradient (no autograd), a head whose keys are zero
must get exactly no Fisher information, and the whole calibration runs through the runner."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from baselines.hess import HeSSParams, make_hess, mix_scores, query_fisher_traces
from harness.models.seam import GradCalibration
from harness.models.vggt import build_vggt
from harness.run.options import RunOptions
from harness.run.runner import run_suite
from harness.store import columns as C
from harness.store import load
from harness.suite import parse_suite
from harness.workloads.vggt import CALIB_SCENE_OFFSET, Inputs, load_inputs
from harness.workloads.vggt_grad import grad_calibration, qkv_grads_only

pytestmark = pytest.mark.usefixtures("one_thread")

C_DIM, HEADS = 4, 2  # head_dim 2: head h's queries are rows 2h, 2h + 1 of the fused weight


def micro_qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3 * C_DIM, C_DIM, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, C_DIM, generator=g, dtype=torch.float64)
    return w, x


def hand_trace(w, x, rows):
    """tr F of ``loss = sum_n sum_{r in rows} (x_n . w_r)^2``: d loss / d w_r = sum_n 2 (x_n . w_r) x_n."""
    w = w.detach()
    total = 0.0
    for r in rows:
        grad = sum(2 * float(x[n] @ w[r]) * x[n] for n in range(x.shape[0]))
        total += float(grad @ grad)
    return total


def test_the_trace_is_the_squared_gradient_norm_of_each_heads_query_rows():
    w, x = micro_qkv()
    q = x @ w.T  # [5, 3C]: q | k | v, each head's d = 2 columns in head order
    loss = q[:, 2:4].pow(2).sum() + 0.5 * q[:, C_DIM + 0:C_DIM + 2].pow(2).sum()  # head 1's q; head 0's k
    (tr,) = query_fisher_traces(loss, {3: w}, HEADS).values()
    assert tr.dtype == torch.float64 and tr.shape == (HEADS,)
    # the keys of head 0 carry no query information; head 1's query rows are 2 and 3
    assert tr.tolist() == pytest.approx([0.0, hand_trace(w, x, [2, 3])], rel=1e-12)


def test_a_loss_three_times_larger_has_nine_times_the_fisher_trace():
    w, x = micro_qkv(1)
    q = x @ w.T
    base = query_fisher_traces(q[:, :C_DIM].sum().pow(2), {0: w}, HEADS)[0]
    tripled = query_fisher_traces(3 * q[:, :C_DIM].sum().pow(2), {0: w}, HEADS)[0]
    torch.testing.assert_close(tripled, 9 * base)
    assert (base > 0).all()


def test_a_layer_the_loss_does_not_reach_has_zero_traces():
    w, x = micro_qkv(2)
    unused = torch.ones(3 * C_DIM, C_DIM, dtype=torch.float64, requires_grad=True)
    loss = (x @ w.T)[:, :C_DIM].pow(2).sum()
    traces = query_fisher_traces(loss, {0: w, 1: unused}, HEADS)
    assert traces[1].tolist() == [0.0, 0.0] and (traces[0] > 0).all()


def test_each_error_is_normalized_over_the_heads_before_the_lambda_mix():
    cam, pc = torch.tensor([1.0, 3.0]), torch.tensor([30.0, 10.0])
    assert mix_scores(cam, pc, 0.5).tolist() == pytest.approx([0.5, 0.5])  # raw sums would give 0.70 / 0.30
    assert mix_scores(cam, pc, 0.8).tolist() == pytest.approx([0.35, 0.65])
    assert mix_scores(cam, pc, 1.0).tolist() == pytest.approx([0.25, 0.75])
    assert mix_scores(torch.zeros(2), pc, 0.5).tolist() == pytest.approx([0.625, 0.375])  # no info: even


def fake_probe(calls, layers=(0, 1, 2)):
    """A GradProbe over micro layers: scene j's camera loss reaches head 0's queries with weight j + 1
    and head 1's with weight 1, its point loss head 1's with weight 2 (so the traces are known)."""
    weights = {i: micro_qkv(10 + i)[0] for i in layers}
    x = micro_qkv(99)[1]

    def probe(fn, frames=None, scene=0):
        calls.append((frames, scene))
        cam = sum((scene + 1) * (x @ w.T)[:, 0:2].pow(2).sum() + (x @ w.T)[:, 2:4].pow(2).sum()
                  for w in weights.values())
        pts = sum(2 * (x @ w.T)[:, 2:4].pow(2).sum() for w in weights.values())
        return GradCalibration(losses={"camera": cam, "points": pts}, qkv=weights, heads=HEADS,
                               stats={"inlier_frac": 0.25 * (scene + 1)})

    return probe, weights, x


def test_the_calibration_sums_scenes_skips_early_layers_and_mixes_with_lambda():
    calls: list = []
    probe, weights, x = fake_probe(calls)
    method = make_hess(HeSSParams(hess_sparsity=0.5, start_layer=1, hess_lambda=0.3, hess_calib_frames=7,
                                  hess_calib_scenes=2))
    assert method.calibrate is None and method.calibrate_grad is not None
    method.calibrate_grad(probe)
    assert calls == [(7, 0), (7, 1)]
    scores = method.attention_fn.scores
    assert sorted(scores) == [1, 2]  # layer 0 is before start_layer: plain attention, not scored
    for i in (1, 2):
        # camera: head 0 with scene weights 1 and 2 (squared: 1 + 4), head 1 with 1 twice; points: head 1
        t0, t1 = hand_trace(weights[i], x, [0, 1]), hand_trace(weights[i], x, [2, 3])
        cam = torch.tensor([5 * t0, 2 * t1], dtype=torch.float64)
        pts = torch.tensor([0.0, 4 * 2 * t1], dtype=torch.float64)
        torch.testing.assert_close(scores[i], mix_scores(cam, pts, 0.3))
        assert scores[i].tolist() == pytest.approx([0.3 * 5 * t0 / (5 * t0 + 2 * t1),
                                                    0.3 * 2 * t1 / (5 * t0 + 2 * t1) + 0.7])
    assert method.work_counters(None, 8, 10) == {"hess_inlier_frac": pytest.approx(0.375)}


def test_a_calibration_out_of_device_memory_says_which_knob_to_lower():
    def probe(fn, frames=None, scene=0):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    method = make_hess(HeSSParams(hess_calib_frames=20))
    with pytest.raises(ValueError, match=r"hess_calib_frames=20 frames\) ran out of device memory; lower "
                                         r"hess_calib_frames .*output_error.*Tried to allocate 20.00 GiB"):
        method.calibrate_grad(probe)


def test_zero_calibration_frames_ask_for_the_points_own():
    calls: list = []
    method = make_hess(HeSSParams(hess_calib_frames=0))
    method.calibrate_grad(fake_probe(calls)[0])
    assert calls == [(None, 0)]


def test_the_output_error_score_needs_no_gradients():
    method = make_hess(HeSSParams(hess_score="output_error"))
    assert method.calibrate is not None and method.calibrate_grad is None


# ------------------------------------------------------------------- the workload's gradient probe


@pytest.fixture(scope="module")
def tiny_scene() -> tuple[torch.nn.Module, Inputs]:
    from harness.workloads.vggt import VGGTParams

    torch.manual_seed(0)
    model = build_vggt("vggt-tiny", lean=True)
    p = VGGTParams(preset="vggt-tiny", frames=2, height=28, width=42)
    return model, load_inputs(p, 5 + CALIB_SCENE_OFFSET, "cpu")


def calibration(model, inputs, qkv):
    return grad_calibration(model, inputs.images, None, device="cpu", dtype="float32",
                            gt_points=inputs.gt_points, gt_extrinsics=inputs.frames.extrinsics,
                            valid=inputs.frames.valid, qkv=qkv, seed=0)


def test_only_the_qkv_weights_take_gradients_and_every_flag_and_lean_mode_come_back(tiny_scene):
    model, inputs = tiny_scene
    model.camera_head.requires_grad_(False)  # a mixed state, to see it restored as it was
    before = {name: t.requires_grad for name, t in model.named_parameters()}
    with qkv_grads_only(model) as qkv:
        assert not model.lean  # lean mode detaches the kept layer outputs: no gradient would reach qkv
        grad_names = {name for name, t in model.named_parameters() if t.requires_grad}
        assert grad_names == {f"aggregator.global_blocks.{i}.attn.qkv.weight" for i in range(4)}
        assert sorted(qkv) == [0, 1, 2, 3] and qkv[2] is model.aggregator.global_blocks[2].attn.qkv.weight
        calib = calibration(model, inputs, qkv)
        traces = query_fisher_traces(calib.losses["camera"], qkv, calib.heads)
    assert model.lean and {n: t.requires_grad for n, t in model.named_parameters()} == before
    assert all(t.grad is None for t in model.parameters())
    assert calib.heads == 4 and set(calib.losses) == {"camera", "points"}
    assert all(float(tr.sum()) > 0 for tr in traces.values())
    model.camera_head.requires_grad_(True)


def test_a_head_whose_keys_are_zero_has_no_query_fisher_information(tiny_scene):
    """Zero keys (W_K rows, bias and the shared k-norm bias at 0) make head 2's attention uniform in
    layer 1 whatever its queries: its W_Q gradient is exactly 0 there, and only there."""
    model, inputs = tiny_scene
    import copy

    model = copy.deepcopy(model)
    attn = model.aggregator.global_blocks[1].attn
    C, d = attn.qkv.weight.shape[1], attn.head_dim
    with torch.no_grad():
        rows = slice(C + 2 * d, C + 3 * d)  # the keys of head 2
        attn.qkv.weight[rows] = 0
        attn.qkv.bias[rows] = 0
        attn.k_norm.bias.zero_()
    with qkv_grads_only(model) as qkv:
        calib = calibration(model, inputs, qkv)
        assert float(calib.losses["camera"].detach()) > 0
        for name in ("camera", "points"):
            traces = query_fisher_traces(calib.losses[name], qkv, calib.heads)
            if name == "points" and calib.stats["inlier_frac"] == 0.0:
                continue  # no inlier: no information anywhere (an exact 0 loss)
            assert traces[1][2] == 0.0
            assert (traces[1][[0, 1, 3]] > 0).all() and (traces[2] > 0).all()


SUITE = """
name: hess-fisher
workload: vggt
reference: vggt
fixed: {preset: vggt-tiny, frames: 2, height: 28, width: 42, scope: model}
methods:
  vggt: {}
  hess: {hess_sparsity: 0.5, hess_q_block: 4, hess_k_block: 2, hess_calib_frames: 3, hess_calib_scenes: 2}
timing: {warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}
metrics: {evaluate: true}
"""


def test_the_fisher_calibration_runs_through_the_runner_before_timing(tmp_path):
    from harness import registry

    registry.load_builtins()
    out = tmp_path / "run"
    run_suite(parse_suite(SUITE, source="hess-fisher.yaml"), out, RunOptions(progress=False, argv=["t"]))
    rows = load(out).points.set_index(C.METHOD)
    row = rows.loc["hess"]
    assert row[C.STATUS] == C.OK, row[C.ERROR]
    assert row["work_calib_forwards"] == 2 and row["work_calib_s"] > 0
    assert 0.0 <= row["work_hess_inlier_frac"] <= 1.0
    assert 0 < row["work_kept_block_frac"] < 1 and row["fid_depth_rel_err"] >= 0
    assert pd.isna(rows.loc["vggt", "work_hess_inlier_frac"])
