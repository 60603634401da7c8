"""Quantization-aware training: LSQ and straight-through gradients by hand, the trainable copy equal to
the PTQ model it starts from, SAQA's ratio draws, and a trained state loaded back as a point."""

from __future__ import annotations

import math
import re

import pytest
import torch
from safetensors.torch import save_file
from timm.models.swin_transformer import SwinTransformer
from torch.nn.utils import parametrize

from harness.methods.mixaq import MixAQParams
from harness.methods.mixaq import apply as mixaq_apply
from harness.models.swin import set_fused_attn
from harness.quant.qat import (
    LSQQuantizer,
    WeightFakeQuant,
    freeze,
    load_qat_state,
    lsq_fake_quant,
    lsq_modules,
    n_pairs,
    qat_state,
    quantize_from_qat,
    round_ste,
    saqa_ratios,
    set_pair_ratios,
    trainable_copy,
)
from harness.quant.qswin import LOW, QuantSpec, RoutingSpec, quantize_swin
from harness.quant.quantizers import ActQuantizer, fake_quant_uniform, quantize_weight

pytestmark = pytest.mark.usefixtures("one_thread")

W4A4 = QuantSpec(w_bits=4, a_bits_high=4, a_bits_low=4, embed_bits=8, calib="whole")
W4A4A2 = QuantSpec(w_bits=4, a_bits_high=4, a_bits_low=2, embed_bits=8, calib="whole")


def tiny_swin(seed: int = 0) -> SwinTransformer:
    """embed_dim 16, depths 2-2-2-2 at 112 px (16 / 4 / 1 / 1 windows per stage); eval mode."""
    torch.manual_seed(seed)
    m = SwinTransformer(img_size=112, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                        num_classes=10)
    set_fused_attn(m, False)
    return m.eval()


def routing(model, ratio: float = 0.0) -> RoutingSpec:
    n = n_pairs(model)
    return RoutingSpec((ratio,) * n, (0.0,) * n, "l2")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 112, 112, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------- the gradients


def test_round_ste_rounds_forward_and_passes_the_gradient():
    x = torch.tensor([-1.6, -0.4, 0.49, 2.5, 3.51], requires_grad=True)
    y = round_ste(x)
    assert torch.equal(y, torch.round(x.detach()))
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))


def test_lsq_values_equal_the_ptq_fake_quantizer_on_its_grid():
    x = torch.randn(3, 50, 16, generator=torch.Generator().manual_seed(0)) * 3
    for bits, step, zp in ((2, 0.9, 1.0), (4, 0.37, 7.0), (8, 0.031, 120.0)):
        got = lsq_fake_quant(x, torch.tensor(step), torch.tensor(zp), bits)
        want = fake_quant_uniform(x, torch.tensor(step), zp, bits)
        assert torch.equal(got, want), bits


def test_lsq_gradients_by_hand():
    # step 0.5, zero point 2, 2 bits: x/s is clipped to [-2, 1]; x/s = -3.2, -0.7, 0.46, 0.8, 2.6
    x = torch.tensor([-1.6, -0.35, 0.23, 0.4, 1.3], requires_grad=True)
    step = torch.tensor(0.5, requires_grad=True)
    out = lsq_fake_quant(x, step, torch.tensor(2.0), 2)
    assert torch.allclose(out.detach(), torch.tensor([-1.0, -0.5, 0.0, 0.5, 0.5]))  # round(clip(x/s)) * s
    out.sum().backward()
    # x: straight-through inside the clipping range (0.8 rounds to the top code and is still inside)
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))
    # s: round(x/s) - x/s inside, the clipping bound (-2, +1) outside; times 1 / sqrt(numel * qmax)
    by_hand = (-2.0) + (-1.0 + 0.7) + (0.0 - 0.46) + (1.0 - 0.8) + (1.0)
    assert step.grad.item() == pytest.approx(by_hand / math.sqrt(5 * 3), rel=1e-5)


def test_weight_fake_quant_is_straight_through():
    w = torch.randn(6, 5, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out = WeightFakeQuant(4)(w)
    assert torch.equal(out, quantize_weight(w.detach(), 4))
    c = torch.randn(6, 5)
    (out * c).sum().backward()
    assert torch.equal(w.grad, c)


# --------------------------------------------------------------------------- the trainable copy


def test_trainable_copy_computes_the_ptq_model_and_keeps_float_latent_weights(images):
    model = tiny_swin()
    r = routing(model, 0.5)
    ptq = quantize_swin(model, W4A4A2, r, images[:2])
    q = trainable_copy(model, W4A4A2, r, images[:2])
    with torch.no_grad():
        assert torch.equal(q(images), ptq(images))
    latent = q.layers[1].blocks[0].block.attn.qkv.parametrizations.weight.original
    assert torch.equal(latent, model.layers[1].blocks[0].attn.qkv.weight)  # float, not the quantized values
    assert not torch.equal(latent, quantize_weight(latent, 4))
    assert not any(isinstance(m, ActQuantizer) and m.bits < 32 for m in q.modules())
    steps = {n: float(m.step.detach()) for n, m in lsq_modules(q).items()}
    assert steps["layers.0.blocks.0.aq.1.fc1_in"] == pytest.approx(
        ptq.layers[0].blocks[0].aq[1]["fc1_in"].scale)  # A2 branch: its own calibrated step


def test_training_reaches_the_steps_and_weights_of_the_branches_that_ran(images):
    model = tiny_swin()
    q = trainable_copy(model, W4A4A2, routing(model, 0.0), images[:2]).train()
    q(images).square().mean().backward()
    quant = lsq_modules(q)
    assert quant["layers.0.blocks.0.aq.0.qkv_in"].step.grad.abs() > 0
    assert quant["layers.0.blocks.0.aq.1.qkv_in"].step.grad is None  # ratio 0: the low branch never ran
    assert int(quant["layers.0.blocks.0.aq.0.qkv_in"].trained_steps) == 1
    assert int(quant["layers.0.blocks.0.aq.1.qkv_in"].trained_steps) == 0
    latent = q.layers[0].blocks[0].block.mlp.fc2.parametrizations.weight.original
    assert latent.grad is not None and latent.grad.abs().sum() > 0
    set_pair_ratios(q, (0.8,) * n_pairs(q))
    q(images).square().mean().backward()
    assert int(quant["layers.0.blocks.0.aq.1.qkv_in"].trained_steps) == 1


def test_qat_refuses_log_and_repq_quantizers(images):
    model = tiny_swin()
    with pytest.raises(ValueError, match="softmax_quant: uniform"):
        trainable_copy(model, QuantSpec(w_bits=4, a_bits_high=4, a_bits_low=4, softmax_quant="log2",
                                        calib="whole"), routing(model), images[:1])
    with pytest.raises(ValueError, match="percentile"):
        trainable_copy(model, QuantSpec(w_bits=4, a_bits_high=4, a_bits_low=4, reparam_ln=True,
                                        act_calib="repq", calib="whole"), routing(model), images[:1])


# ----------------------------------------------------------------------------------- SAQA ratios


def test_saqa_ratios_are_deterministic_capped_on_the_grid_and_spread():
    draws = [saqa_ratios(torch.Generator().manual_seed(s), 6) for s in range(1500)]
    assert draws[:5] == [saqa_ratios(torch.Generator().manual_seed(s), 6) for s in range(5)]
    flat = torch.tensor(draws, dtype=torch.float64)
    assert flat.max() <= 0.8 + 1e-9 and flat.min() >= 0
    assert torch.allclose(flat * 10, torch.round(flat * 10), atol=1e-6)
    totals = flat.sum(1)
    # six independent uniform ratios on [0, 0.8] have a total std of 0.8 * sqrt(6 / 12) = 0.566;
    # uniform-sum sampling spreads them wider (uniform before the rejection of ratios above 0.8, which
    # thins the large totals: std 0.73, a quarter below 0.5, a tenth above 2)
    assert totals.std() > 0.68
    assert (totals < 0.5).float().mean() > 0.2 and (totals > 2.0).float().mean() > 0.08
    # no pair systematically favoured (Dirichlet(1, ..., 1) is exchangeable)
    per_pair = flat.mean(0)
    assert (per_pair.max() - per_pair.min()) < 0.05


def test_set_pair_ratios_sorts_within_a_stage_and_keeps_prune_ratios(images):
    model = SwinTransformer(img_size=112, embed_dim=16, depths=(2, 2, 4, 2), num_heads=(1, 2, 2, 4))
    n = n_pairs(model)
    q = quantize_swin(model, W4A4A2, RoutingSpec((0.0,) * n, (0.1,) * n), images[:1])
    set_pair_ratios(q, (0.3, 0.2, 0.6, 0.1, 0.4))
    assert [r for r, _ in q.layers[2].block_ratios] == [0.1, 0.1, 0.6, 0.6]
    assert [p for _, p in q.layers[2].block_ratios] == [0.1] * 4
    assert [r for r, _ in q.layers[0].block_ratios] == [0.3, 0.3]


# ------------------------------------------------------------------------ a trained state as a point


def perturbed_trained(model, images, spec=W4A4, ratio=0.0, seed=3):
    """A trainable copy after one step of training and a random change of every parameter."""
    q = trainable_copy(model, spec, routing(model, ratio), images[:2]).train()
    q(images).square().mean().backward()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in q.parameters():
            p.mul_(1 + 0.2 * torch.rand(p.shape, generator=g))
    return q.eval()


def test_a_saved_state_loads_back_as_the_same_quantized_model(tmp_path, images):
    model = tiny_swin()
    trained = perturbed_trained(model, images, W4A4A2, ratio=0.5)
    save_file({k: v.contiguous() for k, v in qat_state(trained).items()}, str(tmp_path / "q.safetensors"))
    params = MixAQParams(w_bits=4, a_bits_high=4, a_bits_low=2, ratio=0.5, calib="whole",
                         qat=str(tmp_path / "q.safetensors"))
    point = mixaq_apply(model, params, images[:2])
    with torch.no_grad():
        want = freeze(trained)(images)
        assert torch.equal(point(images), want)
        ptq = quantize_swin(model, W4A4A2, routing(model, 0.5), images[:2])
        assert not torch.allclose(ptq(images), want)
    assert point.qat_counts["calibrated"] == sum(  # stages 2 and 3 have one window: never low at 0.5
        1 for n in lsq_modules(trained) if ".aq.1." in n and n.startswith(("layers.2", "layers.3")))
    assert not any(p.requires_grad for p in point.parameters())
    assert not any(parametrize.is_parametrized(m) for m in point.modules())  # weights baked by freeze
    w = point.layers[1].blocks[0].block.attn.qkv.weight
    assert torch.equal(w, quantize_weight(w, 4))  # ... to their quantized values, not the latent ones
    assert not torch.equal(w, model.layers[1].blocks[0].attn.qkv.weight)


def test_uniform_on_a_qat_state_is_mixaq_on_it_with_every_window_high(tmp_path, images):
    from baselines.uniform_quant import UniformQuantParams
    from baselines.uniform_quant import apply as uniform_apply

    model = tiny_swin()
    trained = perturbed_trained(model, images, W4A4, ratio=0.0)
    path = str(tmp_path / "u.safetensors")
    save_file({k: v.contiguous() for k, v in qat_state(trained).items()}, path)
    uni = uniform_apply(model, UniformQuantParams(w_bits=4, a_bits=4, qat=path), images[:2])
    mix = mixaq_apply(model, MixAQParams(w_bits=4, a_bits_high=4, a_bits_low=4, ratio=0.0, calib="whole",
                                         qat=path), images[:2])
    ptq = uniform_apply(model, UniformQuantParams(w_bits=4, a_bits=4), images[:2])
    with torch.no_grad():
        assert torch.equal(uni(images), mix(images))
        assert not torch.allclose(uni(images), ptq(images))  # the state was used
    with pytest.raises(ValueError, match="trains from ptq='percentile'"):
        UniformQuantParams(qat=path, ptq="repq")


def test_quantizers_the_state_never_trained_keep_their_calibration(tmp_path, images):
    model = tiny_swin()
    trained = perturbed_trained(model, images, W4A4, ratio=0.0)  # uniform QAT: the low branch never ran
    state = qat_state(trained)
    fresh = trainable_copy(model, W4A4A2, routing(model, 0.5), images[:2])
    counts = load_qat_state(fresh, state, "test")
    quant = lsq_modules(fresh)
    ptq = quantize_swin(model, W4A4A2, routing(model, 0.5), images[:2])
    hi, lo = quant["layers.0.blocks.1.aq.0.v"], quant["layers.0.blocks.1.aq.1.v"]
    assert float(hi.step.detach()) == float(state["layers.0.blocks.1.aq.0.v.step"])  # learned at A4
    # A2: calibrated
    assert float(lo.step.detach()) == pytest.approx(ptq.layers[0].blocks[1].aq[1]["v"].scale)
    blk = fresh.layers[0].blocks[1]
    assert torch.equal(blk.norm1[LOW].weight, blk.norm1[0].weight)  # the untrained low branch: trained norms
    assert torch.equal(blk.norm1[0].weight, state["layers.0.blocks.1.block.norm1.weight"])
    assert counts["learned"] == sum(1 for n in quant if ".aq.0." in n or ".aq." not in n)
    assert counts["calibrated"] == sum(1 for n in quant if ".aq.1." in n)


def test_a_state_of_another_architecture_is_refused_with_its_keys(images):
    state = qat_state(trainable_copy(tiny_swin(), W4A4, routing(tiny_swin()), images[:1]))
    other = SwinTransformer(img_size=112, embed_dim=16, depths=(2, 2, 4, 2), num_heads=(1, 2, 2, 4)).eval()
    fresh = trainable_copy(other, W4A4, routing(other), images[:1])
    with pytest.raises(ValueError, match=r"checkpoint ckpt\.safetensors does not fit.*missing.*layers\.2"):
        load_qat_state(fresh, state, "ckpt.safetensors")
    same = trainable_copy(tiny_swin(), W4A4, routing(tiny_swin()), images[:1])
    extra = {**state, "extra.weight": torch.zeros(1), "layers.0.blocks.9.aq.0.q.step": torch.tensor(1.0)}
    with pytest.raises(ValueError, match=r"does not fit this point's model: unexpected \[extra\.weight\]\. "):
        load_qat_state(same, extra, "ckpt")
    wrong = {**state, "head.fc.inner.bias": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"other shapes \[head\.fc\.inner\.bias\]"):
        load_qat_state(same, wrong, "ckpt")


def test_the_qat_knob_is_checked_when_the_suite_loads(tmp_path):
    with pytest.raises(ValueError, match="qat: checkpoint .*does not exist"):
        MixAQParams(qat=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="ptq='percentile'"):
        MixAQParams(qat="proxy:swin-proxy", ptq="repq")
    assert isinstance(LSQQuantizer(4, 0.1, 3.0)(torch.zeros(2)), torch.Tensor)


# ------------------------------------------------------------------- pinned edges (issue 28)


def whole(message: str) -> str:
    """A pattern matching exactly ``message`` (pytest.raises searches)."""
    return "^" + re.escape(message) + "$"


def test_lsq_gradient_scale_of_a_one_element_tensor_is_one_over_sqrt_qmax():
    # step 0.5, zero point 2, 2 bits: x/s = 0.6 is inside [-2, 1] and rounds to 1
    x = torch.tensor([0.3])
    step = torch.tensor(0.5, requires_grad=True)
    lsq_fake_quant(x, step, torch.tensor(2.0), 2).sum().backward()
    assert step.grad.item() == pytest.approx((1.0 - 0.6) / math.sqrt(1 * 3), rel=1e-5)


def test_lsq_quantizer_counts_only_training_forwards_with_gradients():
    m = LSQQuantizer(4, 0.1, 3.0)
    x = torch.linspace(-0.5, 1.0, 7)
    m.eval()(x)  # eval, gradients enabled: not training
    assert int(m.trained_steps) == 0
    with torch.no_grad():
        m.train()(x)  # training mode without gradients (a validation pass): not counted either
    assert int(m.trained_steps) == 0
    m.train()(x)
    assert int(m.trained_steps) == 1
    assert m.trained_steps.dtype == torch.int64


def test_lsq_quantizer_returns_the_input_dtype():
    m = LSQQuantizer(4, 0.25, 3.0)
    x = torch.tensor([-1.0, 0.1, 0.3, 5.0], dtype=torch.bfloat16)
    y = m(x)
    assert y.dtype == torch.bfloat16
    # round(clamp(x / 0.25, -3, 12)) * 0.25 (x as bf16 holds it): -0.75, 0.0, 0.25, 3.0
    assert torch.equal(y.float(), torch.tensor([-0.75, 0.0, 0.25, 3.0]))


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_lsq_quantizer_repr_shows_bits_step_and_zero_point():
    assert LSQQuantizer(4, 0.1, 3.0).extra_repr() == "bits=4, step=0.1, zero_point=3"


def test_from_ptq_names_the_quantizer_it_refuses():
    tail = ": train from ptq: percentile with softmax_quant: uniform"
    with pytest.raises(ValueError, match=whole(
            "QAT learns uniform per-tensor activation steps, not a log2 quantizer" + tail)):
        LSQQuantizer.from_ptq(ActQuantizer(4, kind="log2"))
    with pytest.raises(ValueError, match=whole(
            "QAT learns uniform per-tensor activation steps, not a per-channel (RepQ-ViT) quantizer" + tail)):
        LSQQuantizer.from_ptq(ActQuantizer(4, per_channel=True))
    with pytest.raises(ValueError, match=whole(
            "QAT starts from a calibrated quantizer: this one saw no calibration data")):
        LSQQuantizer.from_ptq(ActQuantizer(4))


def test_trainable_copy_refuses_repq_with_its_whole_message():
    model = tiny_swin()
    with pytest.raises(ValueError, match=whole(
            "QAT starts from ptq: percentile (RepQ-ViT's folds are post-training only)")):
        trainable_copy(model, QuantSpec(w_bits=4, a_bits_high=4, a_bits_low=4, reparam_ln=True,
                                        act_calib="repq", calib="whole"), routing(model), None)


def test_freeze_bakes_weight_parametrizations_only():
    lin = torch.nn.Linear(5, 6)
    parametrize.register_parametrization(lin, "weight", WeightFakeQuant(4))
    other = torch.nn.Linear(5, 6)
    parametrize.register_parametrization(other, "bias", WeightFakeQuant(4))  # not a weight: left alone
    latent = lin.parametrizations.weight.original.detach().clone()
    freeze(torch.nn.Sequential(lin, other))
    assert not parametrize.is_parametrized(lin)
    assert torch.equal(lin.weight, quantize_weight(latent, 4))
    assert parametrize.is_parametrized(other, "bias") and not parametrize.is_parametrized(other, "weight")


def test_saqa_one_pair_is_allowed_and_takes_the_whole_uniform_total():
    for seed in range(5):
        u = float(torch.rand((), generator=torch.Generator().manual_seed(seed)))
        got = saqa_ratios(torch.Generator().manual_seed(seed), 1, max_ratio=0.8, grid=0)
        assert got == (round(u * 0.8, 6),)  # the total is uniform on [0, max_ratio * n_pairs]
    assert len(saqa_ratios(torch.Generator().manual_seed(0), 1)) == 1
    with pytest.raises(ValueError, match=whole("n_pairs must be >= 1, got 0")):
        saqa_ratios(torch.Generator().manual_seed(0), 0)


def test_saqa_splits_the_total_by_float64_exponentials():
    g = torch.Generator().manual_seed(7)
    total = float(torch.rand((), generator=g)) * 0.8 * 2
    u = torch.rand(2, generator=g, dtype=torch.float64)
    e = [-math.log(float(v)) for v in u]
    want = tuple(round(total * x / (e[0] + e[1]), 6) for x in e)
    assert max(want) <= 0.8  # this draw is accepted at once
    got = saqa_ratios(torch.Generator().manual_seed(7), 2, max_ratio=0.8, grid=0)
    assert got == pytest.approx(want, abs=2e-6)


def test_saqa_max_ratio_zero_gives_zeros_and_an_impossible_cap_is_refused():
    assert saqa_ratios(torch.Generator().manual_seed(0), 3, max_ratio=0.0) == (0.0, 0.0, 0.0)
    # a negative cap: the two ratios sum to at least -2 and cannot both be <= -1
    with pytest.raises(RuntimeError, match=whole("no SAQA draw within 10000 tries")):
        saqa_ratios(torch.Generator().manual_seed(0), 2, max_ratio=-1.0)


@pytest.fixture(scope="module")
def w4a4_state(images) -> dict[str, torch.Tensor]:
    """The saved state of a W4A4 copy trained one step at ratio 0 (the low branch never ran)."""
    return qat_state(perturbed_trained(tiny_swin(), images, W4A4, ratio=0.0))


def test_a_state_without_trained_steps_is_calibrated_not_learned(w4a4_state, images):
    model = tiny_swin()
    state = {k: v for k, v in w4a4_state.items() if not k.endswith(".trained_steps")}
    fresh = trainable_copy(model, W4A4, routing(model), images[:2])
    before = {n: float(m.step.detach()) for n, m in lsq_modules(fresh).items()}
    counts = load_qat_state(fresh, state, "test")
    assert counts == {"learned": 0, "calibrated": len(before)}
    assert {n: float(m.step.detach()) for n, m in lsq_modules(fresh).items()} == before


def test_a_quantizer_whose_bits_the_state_lacks_keeps_its_calibration(w4a4_state, images):
    model = tiny_swin()
    name = "layers.0.blocks.0.aq.0.qkv_in"
    assert int(w4a4_state[f"{name}.trained_steps"]) > 0
    state = {k: v for k, v in w4a4_state.items() if k != f"{name}.bits"}
    fresh = trainable_copy(model, W4A4, routing(model), images[:2])
    quant = lsq_modules(fresh)
    calibrated = float(quant[name].step.detach())
    counts = load_qat_state(fresh, state, "test")
    assert float(quant[name].step.detach()) == calibrated != float(w4a4_state[f"{name}.step"])
    assert counts["learned"] == sum(1 for n in quant if ".aq.1." not in n) - 1


def test_an_untrained_low_branch_takes_both_high_branch_norms(w4a4_state, images):
    model = tiny_swin()
    fresh = trainable_copy(model, W4A4A2, routing(model, 0.5), images[:2])
    load_qat_state(fresh, w4a4_state, "test")
    blk = fresh.layers[0].blocks[1]
    assert not torch.equal(w4a4_state["layers.0.blocks.1.norm2.1.weight"],
                           w4a4_state["layers.0.blocks.1.block.norm2.weight"])  # the saved low norm differs
    for norm in (blk.norm1, blk.norm2):
        assert torch.equal(norm[LOW].weight, norm[0].weight) and torch.equal(norm[LOW].bias, norm[0].bias)
    assert torch.equal(blk.norm2[0].weight, w4a4_state["layers.0.blocks.1.block.norm2.weight"])


def test_a_misfit_state_is_refused_with_the_whole_message(w4a4_state, images):
    model = tiny_swin()
    same = trainable_copy(model, W4A4, routing(model), images[:1])
    state = {k: v for k, v in w4a4_state.items() if k != "head.fc.inner.bias"}
    state["extra"] = torch.zeros(1)  # a key without a dot is not a quantizer's
    with pytest.raises(ValueError, match=whole(
            "QAT checkpoint ckpt does not fit this point's model: missing [head.fc.inner.bias]; "
            "unexpected [extra]. It was trained for another architecture (model, embed_bits or a layer "
            "quantized at float bits)")):
        load_qat_state(same, state, "ckpt")


def test_quantize_from_qat_keeps_ref_a_bits_and_names_the_file_in_errors(tmp_path, w4a4_state, images):
    path = tmp_path / "q.safetensors"
    save_file({k: v.contiguous() for k, v in w4a4_state.items()}, str(path))
    model = tiny_swin()
    assert trainable_copy(model, W4A4, routing(model), images[:1], ref_a_bits=8).quant_info.ref_a_bits == 8
    q = quantize_from_qat(model, W4A4, routing(model), images[:1], str(path), ref_a_bits=8)
    assert q.quant_info.ref_a_bits == 8
    other = SwinTransformer(img_size=112, embed_dim=16, depths=(2, 2, 4, 2), num_heads=(1, 2, 2, 4)).eval()
    with pytest.raises(ValueError, match=r"^QAT checkpoint q\.safetensors does not fit this point's model: "):
        quantize_from_qat(other, W4A4, routing(other), images[:1], str(path))
