"""Fake quantizers: grids, round trips, ranges, clipping and calibration."""

from __future__ import annotations

import pytest
import torch

from harness.quant.quantizers import (
    ActQuantizer,
    RangeObserver,
    act_qparams,
    fake_quant_log2,
    fake_quant_uniform,
    quantize_weight,
    search_range,
    weight_scale,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_weight_scale_is_per_output_channel_max_over_qmax():
    w = torch.tensor([[1.0, -3.5, 0.5], [0.25, 0.1, -0.2]])
    scale = weight_scale(w, 4)  # qmax = 7
    assert scale.shape == (2, 1)
    assert torch.allclose(scale.flatten(), torch.tensor([3.5 / 7, 0.25 / 7]))


def test_weight_values_on_the_grid_are_unchanged():
    torch.manual_seed(0)
    w = torch.randn(8, 16)
    once = quantize_weight(w, 4)
    assert torch.equal(quantize_weight(once, 4), once)


def test_weight_error_is_at_most_half_a_step_per_channel():
    torch.manual_seed(1)
    w = torch.randn(6, 3, 4, 4) * torch.linspace(0.1, 5, 6).view(6, 1, 1, 1)
    err = (quantize_weight(w, 3) - w).abs().reshape(6, -1).amax(1)
    assert torch.all(err <= weight_scale(w, 3).flatten() / 2 + 1e-6)


def test_weight_grid_is_symmetric_narrow_range_and_keeps_zero_channels():
    w = torch.cat([torch.linspace(-1, 1, 101).unsqueeze(0), torch.zeros(1, 101)])
    q = quantize_weight(w, 2)  # qmax = 1: levels {-1, 0, 1} x scale
    assert set(q[0].tolist()) == {-1.0, 0.0, 1.0}
    assert torch.equal(q[1], torch.zeros(101))


def test_weight_bits_32_is_identity():
    w = torch.randn(3, 3)
    assert quantize_weight(w, 32) is w


def test_act_qparams_range_always_contains_zero():
    scale, zp = act_qparams(0.5, 2.0, 8)  # lo raised to 0
    assert zp == 0.0 and scale == pytest.approx(2.0 / 255)
    scale, zp = act_qparams(-3.0, -1.0, 4)  # hi raised to 0
    assert zp == 15.0 and scale == pytest.approx(3.0 / 15)


def test_act_values_on_the_grid_are_unchanged():
    scale, zp = act_qparams(-1.3, 2.9, 4)
    grid = (torch.arange(16, dtype=torch.float32) - zp) * scale
    assert torch.equal(fake_quant_uniform(grid, scale, zp, 4), grid)


def test_act_error_is_at_most_half_a_step_inside_the_range():
    lo, hi = -0.7, 3.1
    scale, zp = act_qparams(lo, hi, 3)
    x = torch.linspace(lo, hi, 1001)
    err = (fake_quant_uniform(x, scale, zp, 3) - x).abs()
    assert float(err.max()) <= scale / 2 + 1e-6


def test_act_clips_values_outside_the_range_to_the_grid_ends():
    scale, zp = act_qparams(-1.0, 1.0, 4)
    q = fake_quant_uniform(torch.tensor([-50.0, 50.0]), scale, zp, 4)
    assert q[0] == pytest.approx((0 - zp) * scale) and q[1] == pytest.approx((15 - zp) * scale)


def test_search_minmax_returns_the_observed_extremes():
    x = torch.randn(1000)
    assert search_range(x, -4.0, 5.0, 4, "minmax") == (-4.0, 5.0)


def test_percentile_search_clips_an_outlier_and_lowers_the_error():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(20000), torch.tensor([60.0])])
    lo, hi = search_range(x, float(x.min()), float(x.max()), 4, "percentile")
    assert hi < 60.0

    def mse(a, b):
        s, z = act_qparams(a, b, 4)
        return float((fake_quant_uniform(x, s, z, 4) - x).pow(2).mean())

    assert mse(lo, hi) < mse(float(x.min()), float(x.max()))


def test_percentile_search_keeps_minmax_when_no_clipping_helps():
    x = torch.tensor([-1.0, 1.0] * 500)  # two grid-exact values: min/max is already error-free
    assert search_range(x, -1.0, 1.0, 2, "percentile") == (-1.0, 1.0)


def test_observer_keeps_exact_extremes_and_caps_samples_per_call():
    obs = RangeObserver(max_samples_per_call=100)
    obs.observe(torch.linspace(-2, 1, 10_000))
    obs.observe(torch.tensor([[3.0]]))
    assert (obs.lo, obs.hi) == (-2.0, 3.0)
    assert obs.n_seen == 10_001
    assert obs.samples.numel() <= 101


def test_act_quantizer_observes_then_quantizes():
    q = ActQuantizer(4, calib="minmax")
    x = torch.linspace(-1, 2, 50)
    q.observing = True
    assert torch.equal(q(x), x)  # observing passes through
    q.observing = False
    q.finalize()
    assert (q.lo, q.hi) == (-1.0, 2.0)
    assert len(torch.unique(q(x))) <= 16


def test_act_quantizer_refuses_to_run_uncalibrated():
    with pytest.raises(RuntimeError, match="before calibration"):
        ActQuantizer(8)(torch.ones(3))


def test_act_quantizer_rejects_unknown_kind_and_calibration():
    with pytest.raises(ValueError, match="allowed: uniform, log2"):
        ActQuantizer(8, kind="cubic")
    with pytest.raises(ValueError, match="allowed: minmax, percentile"):
        ActQuantizer(8, calib="mean")


def test_shared_observer_calibrates_two_bit_widths_on_the_same_values():
    obs = RangeObserver()
    hi, lo = ActQuantizer(8, calib="minmax", observer=obs), ActQuantizer(2, calib="minmax", observer=obs)
    hi.observing = True
    hi(torch.linspace(-1, 3, 100))
    hi.observing = False
    hi.finalize()
    lo.finalize()
    assert (hi.lo, hi.hi) == (lo.lo, lo.hi) == (-1.0, 3.0)
    assert hi.scale == pytest.approx(4 / 255) and lo.scale == pytest.approx(4 / 3)


def test_log2_keeps_powers_of_two_and_zero():
    x = torch.tensor([1.0, 0.5, 0.25, 2.0**-6, 0.0])
    assert torch.equal(fake_quant_log2(x, 3), x)  # codes 0..6 are 2^-q, code 7 is zero


def test_log2_rounds_in_the_log_domain_and_flushes_tiny_values():
    q = fake_quant_log2(torch.tensor([0.7, 0.3, 2.0**-10]), 3)
    assert q.tolist() == [0.5, 0.25, 0.0]  # -log2: 0.51 -> 1, 1.74 -> 2, 10 > 6 -> zero


def test_float_bits_are_identity_even_when_observing():
    q = ActQuantizer(32)
    q.observing = True
    x = torch.randn(4)
    assert q(x) is x and q.observer.n_seen == 0
