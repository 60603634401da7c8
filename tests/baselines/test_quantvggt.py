"""QuantVGGT-style fake quantization (baselines/quantvggt.py): the quantization grids by hand, the
rotation and smoothing as exact reparameterizations, the transform on vggt-tiny, BOPs by hand and
the method stacked with HTTM."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.quantvggt import (
    QuantHTTMParams,
    QuantVGGTParams,
    QVLinear,
    block_linears,
    count_bops,
    kmeans,
    linear_bops,
    make_quantvggt,
    make_quantvggt_httm,
    quantize_tokens_sym,
    quantize_vggt,
    quantize_weight_sym,
    random_signs,
    reconstruct_block,
    rotate,
    rotation_matrix,
    select_frames,
)
from harness.methods.httm import HTTMParams, make_httm
from harness.models.seam import AttentionLayout, VGGTMethod
from harness.models.vggt.layers import patch_positions
from harness.quant.quantizers import quantize_weight
from harness.registry import create_method

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES, HEIGHT, WIDTH = 4, 28, 42  # vggt-tiny: 14 px patches -> 2 x 3 patches + 5 special tokens
TOKENS_PER_FRAME = 5 + 2 * 3
TINY_DIM, TINY_HIDDEN, TINY_DEPTH = 64, 256, 4
NO_LEARNING = dict(qv_calib_epochs=0, qv_lwc=False, qv_lac=False)


@pytest.fixture(scope="module")
def images():
    return torch.rand(1, FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))


def runner(images, seen=None):
    """``run(m)``: one forward of m on the calibration images (as the vggt workload's, no heads)."""

    def run(m):
        if seen is not None:
            seen.append(m)
        with torch.inference_mode():
            m(images, heads=())

    return run


def agg_out(model, images):
    with torch.inference_mode():
        return torch.stack(model.aggregator(images)[0])  # [depth, B, S, P, 2C]


def rel_err(a, b):
    return float((a - b).pow(2).mean() / b.pow(2).mean())


# ----------------------------------------------------------------------------- quantizers by hand


def test_weight_quantizer_4bit_is_symmetric_per_output_channel_with_absmax_over_7():
    w = torch.tensor([[0.7, -0.33, 0.12, 0.0],    # scale 0.7 / 7 = 0.1
                      [2.1, -1.0, 0.44, 0.05]])   # scale 2.1 / 7 = 0.3
    want = torch.tensor([[0.7, -0.3, 0.1, 0.0],
                         [2.1, -0.9, 0.3, 0.0]])
    torch.testing.assert_close(quantize_weight_sym(w, 4), want)


def test_weight_quantizer_8bit_by_hand_and_same_grid_as_the_harness_quantizer():
    w = torch.tensor([[1.27, -0.555, 0.0301]])  # scale 0.01: -55.5 -> -56 (half to even), 3.01 -> 3
    torch.testing.assert_close(quantize_weight_sym(w, 8), torch.tensor([[1.27, -0.56, 0.03]]))
    r = torch.randn(32, 48, generator=torch.Generator().manual_seed(2))
    for bits in (4, 8):
        torch.testing.assert_close(quantize_weight_sym(r, bits), quantize_weight(r, bits))


def test_token_quantizer_4bit_is_symmetric_per_token():
    x = torch.tensor([[0.7, -0.33, 0.12, 0.0],     # token scale 0.7 / 7 = 0.1
                      [-1.4, 0.26, 0.46, 0.07]])   # token scale 1.4 / 7 = 0.2
    want = torch.tensor([[0.7, -0.3, 0.1, 0.0],
                         [-1.4, 0.2, 0.4, 0.0]])
    torch.testing.assert_close(quantize_tokens_sym(x, 4), want)


def test_token_quantizer_clamps_to_minus_2_pow_b_minus_1_and_2_pow_b_minus_1_minus_1():
    x = torch.tensor([[-1.0, 0.3, 0.9]])
    # clipped range: hi = 0.9 * 0.5, lo = -1.0 * 0.5 -> amax 0.5; x / scale = -14, 4.2, 12.6
    scale4, scale8 = 0.5 / 7, 0.5 / 127
    torch.testing.assert_close(quantize_tokens_sym(x, 4, 0.5, 0.5),
                               torch.tensor([[-8.0, 4.0, 7.0]]) * scale4)
    x8 = torch.tensor([[-1.0, 0.3, 0.9]])  # 8 bits: x / scale = -254, 76.2, 228.6
    torch.testing.assert_close(quantize_tokens_sym(x8, 8, 0.5, 0.5),
                               torch.tensor([[-128.0, 76.0, 127.0]]) * scale8)


def test_quantizers_at_16_bits_are_the_identity_and_a_zero_token_stays_zero():
    x = torch.randn(3, 8)
    assert quantize_tokens_sym(x, 16) is x and quantize_weight_sym(x, 16) is x
    assert torch.equal(quantize_tokens_sym(torch.zeros(2, 4), 4), torch.zeros(2, 4))


# ----------------------------------------------------------------------------- rotation and smoothing


def test_hadamard_rotation_by_hand_and_orthonormal():
    r2 = rotation_matrix(torch.tensor([1.0, -1.0]))  # diag(1, -1) [[1, 1], [1, -1]] / sqrt 2
    torch.testing.assert_close(r2, torch.tensor([[1.0, 1.0], [-1.0, 1.0]]) / math.sqrt(2))
    signs = random_signs(64, torch.Generator().manual_seed(3))
    r = rotation_matrix(signs)
    torch.testing.assert_close(r @ r.T, torch.eye(64), atol=1e-6, rtol=0)
    x = torch.randn(5, 64)
    torch.testing.assert_close(rotate(x, signs), x @ r, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="power-of-two"):
        rotate(torch.randn(2, 12), torch.ones(12))


def test_rotated_and_smoothed_linear_equals_the_original_in_float():
    torch.manual_seed(4)
    lin = nn.Linear(32, 16)
    signs = random_signs(32, torch.Generator().manual_seed(5))
    smooth = torch.rand(32) * 10 + 0.05
    x = torch.randn(3, 7, 32)
    q = QVLinear(lin, 16, 16, signs, smooth)
    torch.testing.assert_close(q(x), lin(x), atol=1e-5, rtol=1e-5)
    q.fold()
    torch.testing.assert_close(q(x), lin(x), atol=1e-5, rtol=1e-5)


def test_w16a16_transform_with_rotation_and_smoothing_equals_the_original_model(tiny, images):
    p = QuantVGGTParams(qv_w_bits=16, qv_a_bits=16, qv_alpha=0.8, **NO_LEARNING)
    q = quantize_vggt(tiny, runner(images), p)
    smooth = [m.smooth for m in q.modules() if isinstance(m, QVLinear)]
    assert len(smooth) == 8 * TINY_DEPTH and all(s is not None for s in smooth)
    assert max(float((s - 1).abs().max()) for s in smooth) > 0.5  # smoothing is not a no-op here
    torch.testing.assert_close(agg_out(q, images), agg_out(tiny, images), atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- the transform


def test_transform_calibrates_a_copy_and_leaves_the_original_untouched(tiny, images):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    out_before = agg_out(tiny, images)
    seen: list = []
    q = quantize_vggt(tiny, runner(images, seen), QuantVGGTParams(qv_calib_epochs=1))
    assert len(seen) == 1 and seen[0] is q and q is not tiny
    assert not any(isinstance(m, QVLinear) for m in tiny.modules())
    assert sum(isinstance(m, QVLinear) for m in q.modules()) == 8 * TINY_DEPTH
    after = tiny.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    torch.testing.assert_close(agg_out(tiny, images), out_before, atol=0, rtol=0)


def test_only_the_aggregator_blocks_linears_are_quantized(tiny, images):
    q = quantize_vggt(tiny, runner(images), QuantVGGTParams(**NO_LEARNING))
    names = [n for n, m in q.named_modules() if isinstance(m, QVLinear)]
    assert all(n.startswith(("aggregator.frame_blocks.", "aggregator.global_blocks.")) for n in names)
    assert all(n.endswith(("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")) for n in names)
    plain = [n for n, m in q.named_modules() if type(m) is nn.Linear]
    assert plain and not any(".frame_blocks." in n or ".global_blocks." in n for n in plain)


def test_w8a8_is_closer_to_float_than_w4a4_on_vggt_tiny(tiny, images):
    ref = agg_out(tiny, images)
    err = {}
    for bits in (4, 8):
        p = QuantVGGTParams(qv_w_bits=bits, qv_a_bits=bits, **NO_LEARNING)
        err[bits] = rel_err(agg_out(quantize_vggt(tiny, runner(images), p), images), ref)
    assert 0 < err[8] < err[4] / 10


def test_block_reconstruction_lowers_the_blocks_error_on_the_calibration_frames(tiny):
    block = copy.deepcopy(tiny.aggregator.frame_blocks[1])
    for gamma in (block.ls1.gamma, block.ls2.gamma):
        gamma.data.fill_(1.0)  # make the block's branches matter (tiny's LayerScale is 0.01)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(FRAMES, TOKENS_PER_FRAME, TINY_DIM, generator=g)
    pos = patch_positions(FRAMES, 2, 3, 5, "cpu")
    with torch.no_grad():
        target = block(x, pos, num_positions=4)
    for parent, attr, lin in block_linears(block):
        setattr(parent, attr, QVLinear(lin, 4, 4, random_signs(lin.in_features, g),
                                       torch.ones(lin.in_features), lwc=True, lac=True))
    mask = torch.tensor([True, True, False, True])  # frame 2 left out of the loss

    def loss():
        with torch.no_grad():
            out = block(x, pos, num_positions=4)
        return float(F.mse_loss(out[mask], target[mask]))

    before = loss()
    p = QuantVGGTParams(qv_calib_epochs=20, qv_lr=1e-2)
    reconstruct_block(block, [(x, pos), {"num_positions": 4}, target], mask, (1, FRAMES), p)
    assert loss() < 0.9 * before
    learned = [prm for m in block.modules() if isinstance(m, QVLinear) for prm in m.parameters()]
    assert learned and not any(prm.requires_grad for prm in learned)


# ----------------------------------------------------------------------------- calibration frames


def test_noise_filter_drops_the_outlier_frame():
    p = QuantVGGTParams()
    stats = torch.tensor([[1.0, 1.1, 0.9, 1.05, 9.0, 1.0],     # frame 4: a mean far outside
                          [0.5, 0.52, 0.48, 0.5, 0.51, 0.49]])
    mask = select_frames(stats, torch.linspace(1, 0, 6), p)
    assert mask.tolist() == [True, True, True, True, False, True]
    assert select_frames(None, torch.linspace(1, 0, 6), p).all()


def test_diverse_sampling_keeps_clusters_times_per_cluster_frames_from_every_cluster():
    p = QuantVGGTParams(qv_clusters=2, qv_per_cluster=2, qv_filter=False)
    corr = torch.tensor([1.0, 0.99, 0.98, 0.97, 0.2, 0.21, 0.19, 0.22])
    assert kmeans(corr.unsqueeze(1), 2).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    mask = select_frames(None, corr, p)
    assert int(mask.sum()) == 4 and int(mask[:4].sum()) == 2 and int(mask[4:].sum()) == 2


# ----------------------------------------------------------------------------- BOPs


def test_bops_of_one_linear_layer_by_hand():
    # qkv of vggt-tiny on 2 frames of 11 tokens at W4A8: 22 * 64 * 192 MACs, 4 x 8 bits each
    assert linear_bops(22, 64, 192, 4, 8) == 22 * 64 * 192 * 32


def test_model_bops_by_hand_and_fp_over_w4a4_is_64(tiny, images):
    macs_per_token = TINY_DIM * 3 * TINY_DIM + TINY_DIM * TINY_DIM + 2 * TINY_DIM * TINY_HIDDEN
    macs = 2 * TINY_DEPTH * FRAMES * TOKENS_PER_FRAME * macs_per_token
    plain = count_bops(tiny, FRAMES, TOKENS_PER_FRAME)
    assert plain == {"bops": macs * 32 * 32, "bops_fp": macs * 32 * 32}
    w4a8 = quantize_vggt(tiny, runner(images), QuantVGGTParams(qv_w_bits=4, qv_a_bits=8, **NO_LEARNING))
    assert count_bops(w4a8, FRAMES, TOKENS_PER_FRAME) == {"bops": macs * 4 * 8, "bops_fp": macs * 32 * 32}
    w4a4 = quantize_vggt(tiny, runner(images), QuantVGGTParams(**NO_LEARNING))
    c = count_bops(w4a4, FRAMES, TOKENS_PER_FRAME)
    assert c["bops_fp"] / c["bops"] == 64


# ----------------------------------------------------------------------------- parameters and methods


@pytest.mark.parametrize("kw, match", [
    (dict(qv_w_bits=8, qv_a_bits=4), "qv_a_bits"),
    (dict(qv_calib_epochs=0), "qv_lwc"),
    (dict(qv_smooth=False, qv_lwc=False, qv_lac=False), "learns nothing"),
])
def test_invalid_combinations_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        QuantVGGTParams(**kw)


def test_registered_method_is_a_model_transform_with_bop_counters(tiny, images):
    made = create_method("vggt", "quantvggt", QuantVGGTParams(qv_w_bits=8, qv_a_bits=8, **NO_LEARNING))
    assert isinstance(made, VGGTMethod) and made.attention_fn is None
    q = made.model_transform(tiny, runner(images))
    assert made.work_counters(q, FRAMES, TOKENS_PER_FRAME)["bops"] > 0
    assert isinstance(make_quantvggt(QuantVGGTParams()), VGGTMethod)


def test_stacked_method_runs_httm_attention_on_a_quantized_model(tiny, images):
    p = QuantHTTMParams(head_groups=4, n_s=4, n_t=2, qv_w_bits=8, qv_a_bits=8, **NO_LEARNING)
    httm_part = HTTMParams(**{f.name: getattr(p, f.name) for f in dataclasses.fields(HTTMParams)})
    assert httm_part.head_groups == 4 and httm_part.n_t == 2
    made = make_quantvggt_httm(p)
    assert create_method("vggt", "quantvggt_httm", p).work_counters is count_bops
    g = torch.Generator().manual_seed(6)
    q_, k_, v_ = (torch.randn(1, 4, FRAMES * 21, 8, generator=g) for _ in range(3))
    lay = AttentionLayout(frames=FRAMES, tokens_per_frame=21, patch_h=4, patch_w=4, patch_start=5)
    out = made.attention_fn(q_, k_, v_, lay)
    torch.testing.assert_close(out, make_httm(httm_part)(q_, k_, v_, lay), atol=0, rtol=0)
    assert not torch.allclose(out, F.scaled_dot_product_attention(q_, k_, v_), atol=1e-3)
    q = made.model_transform(tiny, runner(images))
    assert sum(isinstance(m, QVLinear) and m.w_bits == 8 for m in q.modules()) == 8 * TINY_DEPTH
    with torch.inference_mode():
        res = q(images, attention_fn=made.attention_fn, heads=("camera",))
    assert torch.isfinite(res["pose_enc"]).all()
