"""Equal-BOPs pairing of window pruning with MixA-Q, the single-window stage, and the importance
diagnostics (score spread, importance-vs-sensitivity rank correlation)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from baselines.sparsevit import SparseViTParams, apply_sparsevit, prune_ratios_for_speedup, pruned_bops
from harness.methods.mixaq import MixAQParams, apply
from harness.metrics import work as W
from harness.models.swin import build_swin, synthetic_images
from harness.quant.qswin import PRUNED, window_counts
from harness.quant.sensitivity import (
    importance_sensitivity,
    score_cv,
    spearman,
    stage_outputs,
    window_sensitivity,
)
from harness.workloads.swin import work_counters

pytestmark = pytest.mark.usefixtures("one_thread")

FLOAT = dict(w_bits=32, embed_bits=32)


@pytest.fixture(scope="module")
def proxy_shape() -> nn.Module:
    """swin_proxy at 224 px (random weights): Swin-T's window counts 64 / 16 / 4 / 1."""
    torch.set_num_threads(1)
    return build_swin("swin_proxy", 224, seed=0)


def test_min_active_keeps_a_single_window_from_being_pruned():
    assert window_counts(1, 0.0, 0.5) == (0, 0, 1)  # SparseViT's plain floor prunes it
    assert window_counts(1, 0.0, 0.5, min_active=1) == (1, 0, 0)
    assert window_counts(64, 0.0, 0.5, min_active=1) == (32, 0, 32)  # larger stages: unchanged
    assert window_counts(4, 0.25, 0.75, min_active=1) == (0, 1, 3)


def test_pruning_leaves_stage_4_running_by_default_and_the_identity_with_min_active_0(proxy_shape):
    x = synthetic_images(1, 224, seed=3)
    kept = apply_sparsevit(proxy_shape, SparseViTParams(a_bits=32, prune_ratio=0.5, **FLOAT), None)
    plain = apply_sparsevit(
        proxy_shape, SparseViTParams(a_bits=32, prune_ratio=0.5, min_active_windows=0, **FLOAT), None
    )
    stage4_in = {}
    for q in (kept, plain):
        q.layers[3].register_forward_hook(
            lambda m, a, y, q=q: stage4_in.__setitem__(id(q), (m.downsample(a[0]), y))
        )
        with torch.inference_mode():
            q(x)
    k_in, k_out = stage4_in[id(kept)]
    p_in, p_out = stage4_in[id(plain)]
    assert [r.counts for r in kept.layers[3].last_routes] == [(1, 0, 0), (1, 0, 0)]
    assert not torch.allclose(k_in, k_out)  # stage 4 still computes
    assert [r.counts for r in plain.layers[3].last_routes] == [(0, 0, 1), (0, 0, 1)]
    assert torch.equal(p_in, p_out)  # every window pruned: the whole stage is the identity
    assert kept.layers[0].last_routes[0].counts == (32, 0, 32)


@pytest.mark.parametrize("ratio", [0.2, 0.4, 0.8])
def test_sparsevit_at_mixaqs_measured_speedup_has_equal_bops(proxy_shape, ratio):
    calib = synthetic_images(1, 224, seed=1)
    x = synthetic_images(2, 224, seed=2)
    mix = apply(proxy_shape, MixAQParams(w_bits=4, a_bits_high=8, a_bits_low=4, ratio=ratio), calib)
    with torch.inference_mode():
        mix(x)
    mix_row = work_counters(mix, "linear")
    sv = apply_sparsevit(
        proxy_shape,
        SparseViTParams(w_bits=4, a_bits=8, target_bops_speedup=mix_row["work_bops_speedup"]),
        calib,
    )
    with torch.inference_mode():
        sv(x)
    sv_row = work_counters(sv, "linear")
    assert sv_row["work_bops"] == pytest.approx(mix_row["work_bops"], rel=0.005)
    assert sv_row["work_pruned_window_frac"] > 0
    # stage 4 keeps its window; pruned routes are marked
    assert all(r.counts[PRUNED] == 0 for r in sv.layers[3].last_routes)


def test_the_old_half_ratio_pairing_was_not_equal_bops(proxy_shape):
    """Prune ratio r/2 against MixA-Q r (the previous suite) misses by far more than the solver."""
    geom = W.SwinGeometry.from_model(proxy_shape)
    depths = [2, 2, 4, 2]
    ref = W.bops(geom, 8, 4, 8)
    half = ref / pruned_bops(geom, depths, (0.2,) * 5, 4, 8, 8, min_active=0)  # r = 0.4 -> p = 0.2
    solved = prune_ratios_for_speedup(geom, depths, 1.3355, 4, 8, 8)
    assert abs(half - 1.3355) > 0.1
    assert ref / pruned_bops(geom, depths, solved, 4, 8, 8) == pytest.approx(1.3355, rel=0.005)


def test_spearman_matches_scipy_with_ties_and_flags_constant_rows():
    a = torch.tensor([[1.0, 2, 3, 4], [4.0, 3, 2, 1], [1.0, 1, 2, 5], [2.0, 2, 2, 2]])
    b = torch.tensor([[10.0, 20, 30, 40], [1.0, 2, 3, 4], [3.0, 1, 2, 2], [1.0, 2, 3, 4]])
    rho = spearman(a, b)
    assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(-1.0)
    assert rho[2] == pytest.approx(spearmanr(a[2], b[2]).statistic)
    assert torch.isnan(rho[3])


def test_score_cv_is_zero_for_a_flat_map_and_known_for_one_hot_window():
    flat = torch.ones(1, 14, 14)
    assert float(score_cv(flat, (7, 7))[0]) == pytest.approx(0.0, abs=1e-12)
    one = torch.zeros(1, 14, 14)
    one[0, :7, :7] = 1.0  # window scores (7, 0, 0, 0): std / mean = sqrt(3)
    assert float(score_cv(one, (7, 7))[0]) == pytest.approx(3**0.5)
    assert score_cv(torch.ones(1, 7, 7), (7, 7)) is None  # a single window has no spread


class _LeakyNorm(nn.Module):
    """The high branch's LayerNorm plus ``gain`` times the raw (pre-norm) input: a low branch whose
    added error grows with the window's activation magnitude (what the L2 score measures)."""

    def __init__(self, norm: nn.Module, gain: float) -> None:
        super().__init__()
        self.norm, self.gain = norm, gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + self.gain * x * x.abs().mean(-1, keepdim=True)


def _contrast_images(n: int, size: int) -> torch.Tensor:
    """Images whose 4 x 4 cells range from faint to strong noise (different activation magnitudes)."""
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(n, 3, size, size)
    cell = size // 4
    for i in range(4):
        for j in range(4):
            amp = 0.05 + 2.0 * ((i * 4 + j) * 5 % 16) / 15
            img[:, :, i * cell : (i + 1) * cell, j * cell : (j + 1) * cell] = amp * torch.randn(
                n, 3, cell, cell, generator=g
            )
    return img


def test_sensitivity_follows_the_score_when_the_low_branch_error_is_made_to():
    """Stage 2 of swin_micro at 224 px (16 windows, input after patch merging, not normalized)."""
    model = build_swin("swin_micro", 224, seed=0)
    q = apply(model, MixAQParams(a_bits_high=32, a_bits_low=32, calib="whole", **FLOAT), None)
    for blk in q.layers[1].blocks:
        blk.norm1[1] = _LeakyNorm(blk.norm1[0], gain=0.05)
    images = _contrast_images(2, 224)
    scores, sens = importance_sensitivity(q, images, min_windows=4, stages=[1])[1]
    assert scores.shape == sens.shape == (2, 16)
    assert (sens > 0).all()
    assert float(spearman(scores, sens).mean()) > 0.7
    # a float low branch identical to the high one adds nothing beyond batching round-off
    q_same = apply(model, MixAQParams(a_bits_high=32, a_bits_low=32, calib="whole", **FLOAT), None)
    _, same = importance_sensitivity(q_same, images[:1], min_windows=4, stages=[1])[1]
    assert float(same.max()) < 0.01 * float(sens.min())


def test_sensitivity_in_chunks_equals_one_batch_and_stage_outputs_sum_each_stage_mse():
    model = build_swin("swin_micro", 112, seed=0)
    q = apply(model, MixAQParams(a_bits_high=8, a_bits_low=2, calib="whole"), _contrast_images(1, 112))
    image = _contrast_images(1, 112)[0]
    whole = window_sensitivity(q, image, 0)
    chunked = window_sensitivity(q, image, 0, chunk=3)  # 16 windows: chunks of 3, 3, 3, 3, 3, 1
    assert torch.allclose(chunked, whole, rtol=1e-4, atol=0)
    assert int(whole.argmax()) != int(whole.argmin())
    # stage_outputs: the squared distance of two images' outputs is the sum over stages of each stage's MSE
    a, b = _contrast_images(2, 112).unbind(0)
    feats = {}
    hooks = [st.register_forward_hook(lambda m, _i, y, k=k: feats.setdefault(k, []).append(y))
             for k, st in enumerate(q.layers)]
    with torch.no_grad():
        out = stage_outputs(q, torch.stack([a, b]))
    for h in hooks:
        h.remove()
    by_hand = sum(float((f[0][0] - f[0][1]).pow(2).mean()) for f in feats.values())
    assert float((out[0] - out[1]).pow(2).sum()) == pytest.approx(by_hand, rel=1e-4)
    errors = window_sensitivity(q, image, 1, outputs=stage_outputs)
    assert errors.shape == (4,) and (errors > 0).all()
