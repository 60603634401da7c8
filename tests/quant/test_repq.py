"""The RepQ-ViT base (``ptq: repq``): scale reparameterization of post-LayerNorm activations, the
log-sqrt2 softmax quantizer, RepQ-ViT's range search, and the two-branch Swin built on them.

Expected values are worked out by hand from the definitions (RepQ-ViT, ICCV 2023), not by calling
the code under test: D = mean per-channel scale, Z = round(mean zero point), r = s / D,
b = (Z - z) D, LayerNorm gamma / r and beta / r - b, next linear W r and bias + Q(W r) b.
"""

from __future__ import annotations

import math

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from baselines.uniform_quant import UniformQuantParams
from baselines.uniform_quant import apply as uniform_apply
from harness.methods.mixaq import MixAQParams, apply
from harness.models.swin import set_fused_attn, synthetic_images
from harness.quant.qswin import HIGH, LOW
from harness.quant.quantizers import (
    FLOAT_BITS,
    ActQuantizer,
    fake_quant_log2,
    search_log_max,
    search_range,
    search_ranges,
)
from harness.quant.repq import channel_fold, fold_layernorm, fold_linear, reparameterize
from harness.suite import SuiteError, load_suite

pytestmark = pytest.mark.usefixtures("one_thread")

# Four channels of very different ranges, 4-bit minmax grids (qmax 15), worked out by hand:
# [-0.5, 1.0] -> s 0.1, z 5; [-6, 24] -> s 2.0, z 3; [-0.02, 0.28] -> s 0.02, z 1; [-3, 4.5] -> s 0.5, z 6
CH_LO = [-0.5, -6.0, -0.02, -3.0]
CH_HI = [1.0, 24.0, 0.28, 4.5]
CH_SCALE = [0.1, 2.0, 0.02, 0.5]
CH_ZP = [5.0, 3.0, 1.0, 6.0]
D = (0.1 + 2.0 + 0.02 + 0.5) / 4  # 0.655
Z = 4.0  # round(mean(5, 3, 1, 6)) = round(3.75); RepQ-ViT would keep 3.75
R = [s / D for s in CH_SCALE]
B = [(Z - z) * D for z in CH_ZP]


def hand_fold() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(R, dtype=torch.float64), torch.tensor(B, dtype=torch.float64)


def tiny_swin(img_size: int = 112, seed: int = 0) -> SwinTransformer:
    """A reduced Swin (embed_dim 16) with timm's block structure; eval mode, explicit attention."""
    torch.manual_seed(seed)
    m = SwinTransformer(img_size=img_size, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                        num_classes=10)
    set_fused_attn(m, False)
    return m.eval()


def layernorm(weight: list[float], bias: list[float]) -> nn.LayerNorm:
    norm = nn.LayerNorm(len(weight))
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(weight))
        norm.bias.copy_(torch.tensor(bias))
    return norm


# ----------------------------------------------------------------- the fold (harness.quant.repq)


def test_channel_fold_is_mean_scale_rounded_mean_zero_point_and_their_ratios():
    fold = channel_fold(torch.tensor(CH_SCALE), torch.tensor(CH_ZP))
    r, b = hand_fold()
    assert fold.scale == pytest.approx(D) and fold.zero_point == Z
    torch.testing.assert_close(fold.r, r, rtol=1e-6, atol=0)
    torch.testing.assert_close(fold.b, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("with_bias", [True, False], ids=["qkv/fc1 (bias)", "merging reduction (no bias)"])
def test_folded_layernorm_and_linear_compute_the_original_in_float(with_bias):
    """(a) gamma / r, beta / r - b on the LayerNorm and W r, bias + W r b on the linear: same output."""
    torch.manual_seed(0)
    norm = layernorm([1.0, -2.0, 0.5, 3.0], [0.1, 2.0, -1.0, 0.0])
    lin = nn.Linear(4, 3, bias=with_bias)
    x = torch.randn(6, 4) * 3
    want = lin(norm(x))
    fold = channel_fold(torch.tensor(CH_SCALE), torch.tensor(CH_ZP))
    folded_norm = layernorm([1.0, -2.0, 0.5, 3.0], [0.1, 2.0, -1.0, 0.0])
    fold_layernorm(folded_norm, fold)
    folded_lin = fold_linear(lin, fold, FLOAT_BITS)
    r, b = hand_fold()
    with torch.no_grad():
        torch.testing.assert_close(folded_norm.weight.double(), torch.tensor([1.0, -2.0, 0.5, 3.0]) / r)
        torch.testing.assert_close(folded_norm.bias.double(), torch.tensor([0.1, 2.0, -1.0, 0.0]) / r - b)
        torch.testing.assert_close(folded_lin.weight.double(), lin.weight.double() * r)
        torch.testing.assert_close(folded_lin(folded_norm(x)), want, rtol=1e-5, atol=1e-5)


def test_folded_linear_is_requantized_per_output_channel_and_keeps_a_zero_input_exact():
    """The folded weight W r is quantized per output row (4 bits: max |row| / 7), and the bias is
    compensated with that quantized weight: the folded image of 0 (-b) gives exactly the old bias."""
    torch.manual_seed(1)
    lin = nn.Linear(4, 3)
    fold = channel_fold(torch.tensor(CH_SCALE), torch.tensor(CH_ZP))
    folded = fold_linear(lin, fold, 4)
    r, b = hand_fold()
    wr = lin.weight.detach().double() * r
    step = wr.abs().amax(dim=1, keepdim=True) / 7
    with torch.no_grad():
        torch.testing.assert_close(folded.weight.double(), torch.round(wr / step) * step,
                                   rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(folded(-b.float()), lin.bias, rtol=1e-5, atol=1e-5)


def test_per_tensor_codes_of_the_folded_activation_are_the_per_channel_codes():
    """(b) Per-channel 4-bit grids (s_c, z_c) folded to (D, Z): for every value,
    round(y'_c / D) + Z == clamp(round(y_c / s_c) + z_c, 0, 15) with y' = y / r - b, so the
    per-tensor result mapped back (r (y' + b)) is the per-channel result. Values include clipping on
    both ends and fractions in [0.25, 0.5) that a fractional Z (3.75) would round differently."""
    y = torch.tensor([
        [-0.5, -6.0, -0.02, -3.0],  # each channel's minimum
        [1.0, 24.0, 0.28, 4.5],  # ... and maximum
        [0.33, 7.3, 0.0066, 1.15],  # y / s fractions 0.3, 0.65, 0.33, 0.3
        [-0.87, -40.0, 0.5, 9.0],  # clipped below (ch 0, 1) and above (ch 2, 3)
        [0.0, 0.0, 0.0, 0.0],
    ])
    qz = ActQuantizer(4, calib="minmax", per_channel=True)
    qz.observing = True
    qz(y[:2])  # calibrate on the extremes only: the minmax grids above
    qz.observing = False
    qz.finalize()
    torch.testing.assert_close(qz.scale, torch.tensor(CH_SCALE), rtol=1e-6, atol=0)
    assert qz.zero_point.tolist() == CH_ZP

    scale, zp = torch.tensor(CH_SCALE, dtype=torch.float64), torch.tensor(CH_ZP, dtype=torch.float64)
    codes = torch.clamp(torch.round(y.double() / scale) + zp, 0, 15)
    want = (codes - zp) * scale  # per-channel fake quantization, by hand
    torch.testing.assert_close(qz(y).double(), want, rtol=1e-6, atol=1e-6)

    fold = channel_fold(qz.scale, qz.zero_point)
    assert (fold.scale, fold.zero_point) == (pytest.approx(D), Z)
    qz.set_per_tensor(fold.scale, fold.zero_point)
    out = qz(fold.apply(y)).double()
    assert torch.equal(torch.round(out / D) + Z, codes)
    torch.testing.assert_close(fold.unapply(out), want, rtol=1e-5, atol=1e-5)
    r, b = hand_fold()
    torch.testing.assert_close(fold.apply(y).double(), y.double() / r - b, rtol=1e-6, atol=1e-6)


def test_reparameterize_folds_the_quantizer_norm_and_linear_together():
    torch.manual_seed(2)
    norm, lin = layernorm([1.0, -2.0, 0.5, 3.0], [0.1, 2.0, -1.0, 0.0]), nn.Linear(4, 5)
    qz = ActQuantizer(4, calib="minmax", per_channel=True)
    qz.observing = True
    qz(torch.tensor([CH_LO, CH_HI]))
    qz.observing = False
    qz.finalize()
    folded, zero_image = reparameterize(qz, norm, lin, FLOAT_BITS)
    assert not qz.per_channel and qz.scale == pytest.approx(D) and qz.zero_point == Z
    torch.testing.assert_close(zero_image.double(), -hand_fold()[1], rtol=1e-6, atol=1e-7)
    x = torch.randn(3, 4)
    with torch.no_grad():
        original = lin(layernorm([1.0, -2.0, 0.5, 3.0], [0.1, 2.0, -1.0, 0.0])(x))
        torch.testing.assert_close(folded(norm(x)), original, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(folded(zero_image), lin.bias, rtol=1e-5, atol=1e-5)
    assert reparameterize(ActQuantizer(FLOAT_BITS, per_channel=True), norm, lin, 4) is None  # float: no fold


# ----------------------------------------------------------------- log-sqrt2 quantizer and range search


def test_log_sqrt2_levels_by_hand():
    """(c) 3 bits, max 0.8: codes 0..6 are 0.8 * 2^(-q/2), code 7 is 0. -2 log2(x / 0.8):
    1.0 -> -0.64 -> 0; 0.6 -> 0.83 -> 1; 0.3 -> 2.83 -> 3; 0.1 -> 6; 0.07 -> 7.03 -> 7 (zero)."""
    x = torch.tensor([1.0, 0.8, 0.6, 0.3, 0.1, 0.07, 0.0])
    want = [0.8, 0.8, 0.8 / math.sqrt(2), 0.8 / 2 / math.sqrt(2), 0.1, 0.0, 0.0]
    got = fake_quant_log2(x, 3, x_max=0.8, steps_per_octave=2)
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    # the log2 quantizer (one level per octave) on the same values: 0.6 -> 0.8, 0.3 -> 0.4 (0.8 / 2)
    assert fake_quant_log2(x, 3, x_max=0.8)[2:4].tolist() == pytest.approx([0.8, 0.4], rel=1e-6)


def test_repq_search_picks_the_least_error_percentile_when_it_is_the_narrowest():
    """(d) Values 0, 1, 2, 3 (5000 / 5000 / 5000 / 4997) and three outliers 6, 6, 9 (N = 20000).
    Percentiles (linear, pos = p (N-1)): 0.999 -> 3, 0.9999 -> 6, 0.99999 -> 6 + 0.8 * 3 = 8.4;
    lower ones 0. At 2 bits, [0, 3] has grid 0..3: error only on the 3 outliers (9 + 9 + 36);
    [0, 6] has grid 0, 2, 4, 6: every 1 and 3 is off by 1; [0, 8.4] is worse."""
    x = torch.cat([torch.zeros(5000), torch.ones(5000), torch.full((5000,), 2.0), torch.full((4997,), 3.0),
                   torch.tensor([6.0, 6.0, 9.0])])
    assert search_range(x, 0.0, 9.0, 2, "repq") == (0.0, 3.0)


def test_repq_search_picks_the_least_error_percentile_when_it_is_the_widest():
    """(d) Values 0, 1, 2 (5000 / 5000 / 9979), then 2.5, eighteen 2.9 and two 3 (N = 20000):
    0.999 -> 2.5 + 0.001 * 0.4, 0.9999 -> 2.9 + 0.0001 * 0.1, 0.99999 -> 3. Only [0, 3] keeps the
    grid 0..3 under the bulk (error 0.25 + 18 * 0.01); the narrower ones misplace 1 and 2."""
    x = torch.cat([torch.zeros(5000), torch.ones(5000), torch.full((9979,), 2.0), torch.tensor([2.5]),
                   torch.full((18,), 2.9), torch.tensor([3.0, 3.0])])
    lo, hi = search_range(x, 0.0, 3.0, 2, "repq")
    assert (lo, hi) == (0.0, pytest.approx(float(torch.quantile(x.double(), 0.99999))))
    assert hi == pytest.approx(3.0)


def test_repq_search_has_no_min_max_candidate_unlike_percentile():
    """Values 0, 3, 6 (5000 / 5000 / 9999) and one 9: min/max [0, 9] is the exact grid 0, 3, 6, 9
    (error 0). ``percentile`` keeps it; RepQ-ViT's search only has 0.999 / 0.9999 -> 6 and
    0.99999 -> 6 + 0.80001 * 3 ~ 8.4, and picks ~8.4 (grid 0, 2.8, 5.6, 8.4: errors 0.2, 0.4, 0.6)."""
    x = torch.cat([torch.zeros(5000), torch.full((5000,), 3.0), torch.full((9999,), 6.0),
                   torch.tensor([9.0])])
    assert search_range(x, 0.0, 9.0, 2, "percentile") == (0.0, 9.0)
    lo, hi = search_range(x, 0.0, 9.0, 2, "repq")
    assert lo == 0.0 and hi == pytest.approx(float(torch.quantile(x.double(), 0.99999)))
    assert hi == pytest.approx(8.4, abs=1e-4)


def test_per_channel_search_is_the_per_tensor_search_on_each_channel():
    torch.manual_seed(3)
    cols = torch.randn(3000, 3) * torch.tensor([0.1, 5.0, 1.0]) + torch.tensor([0.0, 2.0, -1.0])
    cols[7, 1] = 60.0  # an outlier in one channel only
    lo, hi = cols.double().amin(0), cols.double().amax(0)
    got_lo, got_hi = search_ranges(cols.T, lo, hi, 4, "repq")
    for c in range(3):
        want = search_range(cols[:, c], float(lo[c]), float(hi[c]), 4, "repq")
        assert (float(got_lo[c]), float(got_hi[c])) == want


def test_log_max_search_and_quantizer_pick_the_percentile_whose_levels_fit():
    """Probabilities on the 3-bit log-sqrt2 levels of max 0.5 (0.5 * 2^(-q/2), q = 0..6; 19979 values),
    then 0.42, eighteen 0.45, two 0.5: the candidates are ~0.42 (0.999), ~0.45 (0.9999) and 0.5
    (0.99999); only 0.5 puts levels on the bulk."""
    levels = torch.tensor([0.5 * 2 ** (-q / 2) for q in range(7)])
    bulk = levels.repeat(19979 // 7 + 1)[:19979]
    x = torch.cat([bulk, torch.tensor([0.42]), torch.full((18,), 0.45), torch.tensor([0.5, 0.5])])
    assert search_log_max(x, 0.5, 3, "repq", 2) == pytest.approx(0.5)
    qz = ActQuantizer(3, kind="log_sqrt2", calib="repq")
    qz.observing = True
    qz(x)
    qz.observing = False
    qz.finalize()
    assert qz.hi == pytest.approx(0.5)
    torch.testing.assert_close(qz(levels), levels)  # levels stay
    assert qz(torch.tensor([0.5 * 2**-3.5])).item() == 0.0  # code 7 is zero


# ----------------------------------------------------------------- the two-branch Swin with ptq: repq


def post_ln_quantizers(q: nn.Module) -> list[ActQuantizer]:
    out = []
    for stage in q.layers:
        if hasattr(stage.downsample, "reduction"):
            out.append(stage.downsample.reduction.aq)
        for blk in stage.blocks:
            out += [blk.aq[br][name] for br in (HIGH, LOW) for name in ("qkv_in", "fc1_in")]
    return out


@pytest.mark.parametrize("calib", ["routed", "whole"])
def test_repq_mixaq_runs_with_per_branch_folds(calib):
    """(e) Each branch folds with its own grids: both branches folded, own qkv / fc1, different
    per-tensor grids at 6 and 3 bits; the high branch's folded linears are the block's own."""
    model, cal, x = tiny_swin(), synthetic_images(2, 112, seed=2), synthetic_images(2, 112, seed=1)
    with torch.no_grad():
        model.layers[0].blocks[0].attn.qkv.weight *= 5  # peaked attention: probabilities over several levels
    q = apply(model, MixAQParams(a_bits_high=6, a_bits_low=3, ratio=0.5, calib=calib, ptq="repq"), cal)
    probs = q.layers[0].blocks[0].aq[LOW]["attn"]
    seen = []
    handle = probs.register_forward_hook(lambda mod, inp, out: seen.append(out))
    with torch.no_grad():
        y, y_float = q(x), model(x)
    handle.remove()
    codes = -2 * torch.log2(seen[0][seen[0] > 0] / probs.hi)  # log-sqrt2 levels: max * 2^(-q/2)
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-4)
    assert set(codes.round().long().tolist()) <= set(range(7)) and (codes.round() % 2 == 1).any()
    assert torch.isfinite(y).all() and not torch.equal(y, y_float)
    assert 10 * torch.log10(y_float.pow(2).sum() / (y - y_float).pow(2).sum()) > 5  # close, not noise
    blk = q.layers[0].blocks[0]
    assert blk.folded == [True, True]
    assert blk.qkv[HIGH] is blk.block.attn.qkv and blk.fc1[HIGH] is blk.block.mlp.fc1
    assert not torch.equal(blk.qkv[HIGH].weight, blk.qkv[LOW].weight)
    hi, lo = blk.aq[HIGH]["qkv_in"], blk.aq[LOW]["qkv_in"]
    assert (hi.bits, lo.bits) == (6, 3) and hi.scale != lo.scale
    calibrated = [qz for qz in post_ln_quantizers(q) if qz.calibrated]
    skipped = 2 * 2 * 2 if calib == "routed" else 0  # routed: stages 2, 3 have one window, low: high idle
    assert len(calibrated) == 3 + 8 * 2 * 2 - skipped and not any(qz.per_channel for qz in calibrated)
    assert {blk.aq[br]["attn"].kind for br in (HIGH, LOW)} == {"log_sqrt2"}
    assert q.quant_info.spec.reparam_ln and q.quant_info.spec.act_calib == "repq"


@pytest.mark.parametrize("calib", ["routed", "whole"])
def test_repq_mixaq_at_the_ends_equals_repq_uniform_exactly(calib):
    """(e) Ratio 0 is uniform W4A6 and all windows low is uniform W4A3, fold included: the low
    branch folds with grids at its own bit width, from its own calibration data."""
    model, cal, x = tiny_swin(), synthetic_images(2, 112, seed=2), synthetic_images(2, 112, seed=1)

    def mix(ratio: float) -> nn.Module:
        return apply(model, MixAQParams(w_bits=4, a_bits_high=6, a_bits_low=3, ratio=ratio, calib=calib,
                                        ptq="repq"), cal)

    def uniform(bits: int) -> nn.Module:
        return uniform_apply(model, UniformQuantParams(w_bits=4, a_bits=bits, ptq="repq"), cal)

    with torch.no_grad():
        assert torch.equal(mix(0.0)(x), uniform(6)(x))
        assert torch.equal(mix(1.0)(x), uniform(3)(x))


def test_repq_uniform_folds_every_post_layernorm_activation_and_merging():
    model, cal = tiny_swin(), synthetic_images(2, 112, seed=2)
    q = uniform_apply(model, UniformQuantParams(w_bits=4, a_bits=4, ptq="repq"), cal)
    merging = q.layers[1].downsample
    assert merging.reduction.inner.bias is not None  # timm's reduction has none: the fold adds it
    assert not torch.equal(merging.norm.weight, model.layers[1].downsample.norm.weight)
    assert all(not qz.per_channel and qz.calibrated for qz in post_ln_quantizers(q)[:1] +
               [blk.aq[HIGH][n] for st in q.layers for blk in st.blocks for n in ("qkv_in", "fc1_in")])
    with torch.no_grad():
        assert torch.isfinite(q(synthetic_images(1, 112, seed=5))).all()


def test_folded_swin_with_padded_windows_computes_the_float_model_without_quantization():
    """(a) on the model: float weights, both branches folded (A8 / A4, routed, half the windows low),
    then every activation quantizer switched off: the float model's output, padded windows included
    (160 px: 40 x 40 tokens padded to 42; padded tokens take the folded image of 0)."""
    model, cal, x = tiny_swin(160), synthetic_images(2, 160, seed=2), synthetic_images(2, 160, seed=1)
    params = MixAQParams(w_bits=32, embed_bits=32, a_bits_high=8, a_bits_low=4, ratio=0.5, ptq="repq")
    q = apply(model, params, cal)
    assert q.layers[0].blocks[0].folded == [True, True]
    for qz in q.modules():
        if isinstance(qz, ActQuantizer):
            qz.bits = FLOAT_BITS
    with torch.no_grad():
        torch.testing.assert_close(q(x), model(x), rtol=1e-4, atol=1e-4)


def test_default_ptq_is_percentile_with_no_fold():
    """The default builds what it built before this option: per-tensor post-LayerNorm quantizers, no
    folded branch, the branches share the block's qkv / fc1, the uniform softmax quantizer."""
    assert MixAQParams().ptq == UniformQuantParams().ptq == "percentile"
    model, cal = tiny_swin(), synthetic_images(1, 112, seed=2)
    q = apply(model, MixAQParams(ratio=0.5), cal)
    blk = q.layers[0].blocks[0]
    assert blk.folded == [False, False]
    assert blk.qkv[LOW] is blk.qkv[HIGH] is blk.block.attn.qkv and blk.fc1[LOW] is blk.block.mlp.fc1
    assert not any(qz.per_channel for qz in q.modules() if isinstance(qz, ActQuantizer))
    assert (blk.aq[LOW]["attn"].kind, blk.aq[LOW]["qkv_in"].calib) == ("uniform", "percentile")
    assert torch.equal(q.layers[1].downsample.norm.weight, model.layers[1].downsample.norm.weight)


# ----------------------------------------------------------------- the knob


@pytest.mark.parametrize("other", [dict(softmax_quant="log2"), dict(act_calib="minmax")])
def test_repq_refuses_the_knobs_it_replaces(other):
    with pytest.raises(ValueError, match="ptq='repq' uses RepQ-ViT's range search"):
        MixAQParams(ptq="repq", **other)
    with pytest.raises(ValueError, match="ptq='repq' uses RepQ-ViT's range search"):
        UniformQuantParams(ptq="repq", **other)
    MixAQParams(ptq="percentile", **other)  # fine without repq


@pytest.mark.usefixtures("clean_registry")
def test_suite_sweeping_ptq_loads_and_an_unknown_base_is_refused(tmp_path):
    head = ("name: ptq\nworkload: swin\nreference: fp32\n"
            "fixed: {model: swin_micro, img_size: 64, batch: 1, calib_images: 1}\n")
    good = tmp_path / "good.yaml"
    good.write_text(head + "methods:\n  fp32: {}\n  uniform: {ptq: [percentile, repq]}\n"
                    "  mixaq: {ptq: [repq], ratio: [0.5]}\n")
    points = load_suite(good).points()
    assert sorted(p.params["ptq"] for p in points if p.method != "fp32") == ["percentile", "repq", "repq"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(head + "methods:\n  fp32: {}\n  uniform: {ptq: repqvit}\n")
    with pytest.raises(SuiteError) as ei:
        load_suite(bad)
    assert "repqvit" in str(ei.value) and "'percentile', 'repq'" in str(ei.value)
