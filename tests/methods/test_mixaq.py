"""MixA-Q: the two-branch Swin block, window routing, and its exactness against uniform quantization."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from timm.models.swin_transformer import SwinTransformer

from baselines.sparsevit import SparseViTParams, apply_sparsevit
from baselines.uniform_quant import UniformQuantParams, make_uniform
from baselines.uniform_quant import apply as uniform_apply
from harness.methods.mixaq import MixAQParams, apply, make_mixaq
from harness.models.swin import set_fused_attn, synthetic_images
from harness.quant.qswin import (
    HIGH,
    LOW,
    PRUNED,
    BlockRoute,
    QSwinBlock,
    QuantSpec,
    RoutingSpec,
    expand_pairs,
    quantize_swin,
    window_counts,
    window_order,
    window_scores,
)
from harness.quant.quantizers import ActQuantizer
from harness.suite import SuiteError, load_suite
from harness.workloads.swin import capture, fidelity_metrics, work_counters

FLOAT = QuantSpec(w_bits=32, a_bits_high=32, a_bits_low=32, embed_bits=32)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_swin(img_size: int = 112, depths=(2, 2, 2, 2), seed: int = 0) -> SwinTransformer:
    """A reduced Swin (embed_dim 16) with timm's block structure; eval mode, explicit attention."""
    torch.manual_seed(seed)
    m = SwinTransformer(
        img_size=img_size, embed_dim=16, depths=depths, num_heads=(1, 2, 2, 4), num_classes=10
    )
    set_fused_attn(m, False)
    return m.eval()


def routing(model, ratio=0.0, prune=0.0, importance="l2") -> RoutingSpec:
    n = sum((len(s.blocks) + 1) // 2 for s in model.layers)
    return RoutingSpec((ratio,) * n, (prune,) * n, importance)


def random_split(batch: int, n_windows: int, n_high: int, seed: int = 0) -> BlockRoute:
    g = torch.Generator().manual_seed(seed)
    assign = torch.full((batch, n_windows), LOW, dtype=torch.int64)
    for b in range(batch):
        assign[b, torch.randperm(n_windows, generator=g)[:n_high]] = HIGH
    return BlockRoute(assign, (n_high, n_windows - n_high, 0))


# ----------------------------------------------------------------- quantization off == timm


@pytest.mark.parametrize("block_index", [0, 1], ids=["regular", "shifted"])
def test_float_two_branch_block_equals_timm_block_on_a_padded_map(block_index):
    model = tiny_swin(img_size=160)  # stage 0: 40 x 40 tokens, padded to 42 (36 windows of 7 x 7)
    blk = model.layers[0].blocks[block_index]
    assert any(blk.shift_size) == bool(block_index)
    x = torch.randn(2, 40, 40, blk.dim)
    qb = QSwinBlock(blk, FLOAT)
    with torch.no_grad():
        ref = blk(x)
        split = qb(x, random_split(2, 36, 13))
        whole = qb(x)
    torch.testing.assert_close(split, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole, ref, rtol=1e-5, atol=1e-5)


def test_float_model_with_split_windows_equals_timm_model():
    model = tiny_swin(img_size=160)
    x = synthetic_images(2, 160, seed=3)
    q = quantize_swin(model, FLOAT, routing(model, ratio=0.5), None)
    with torch.no_grad():
        torch.testing.assert_close(q(x), model(x), rtol=1e-5, atol=1e-5)
    assert any(r.single_branch() is None for st in q.layers for r in st.last_routes)  # really split


# ----------------------------------------------------------------- exactness vs uniform


@pytest.mark.parametrize("calib", ["whole", "routed"])
def test_ratio_zero_equals_uniform_high_bits_exactly(calib):
    model = tiny_swin()
    x, cal = synthetic_images(2, 112, seed=1), synthetic_images(2, 112, seed=2)
    mix = apply(model, MixAQParams(w_bits=4, a_bits_high=6, a_bits_low=3, ratio=0.0, calib=calib), cal)
    uni = uniform_apply(model, UniformQuantParams(w_bits=4, a_bits=6), cal)
    with torch.no_grad():
        assert torch.equal(mix(x), uni(x))


@pytest.mark.parametrize("calib", ["whole", "routed"])
def test_all_windows_low_equals_uniform_low_bits_exactly(calib):
    model = tiny_swin()
    x, cal = synthetic_images(2, 112, seed=1), synthetic_images(2, 112, seed=2)
    mix = apply(model, MixAQParams(w_bits=4, a_bits_high=6, a_bits_low=3, ratio=1.0, calib=calib), cal)
    uni = uniform_apply(model, UniformQuantParams(w_bits=4, a_bits=3), cal)
    with torch.no_grad():
        out_mix, out_uni = mix(x), uni(x)
    assert torch.equal(out_mix, out_uni)
    assert all(r.counts[LOW] == r.n_windows for st in mix.layers for r in st.last_routes)


UNIFORM_CASES = [
    dict(w_bits=4, a_bits=3),
    dict(w_bits=6, a_bits=5, embed_bits=32, act_calib="minmax", softmax_quant="log2"),
    dict(w_bits=4, a_bits=4, ptq="repq"),
]


@pytest.mark.parametrize("knobs", UNIFORM_CASES, ids=["w4a3", "w6a5-minmax-log2-float-embed", "w4a4-repq"])
def test_uniform_is_mixaq_with_every_window_high(knobs):
    """uniform at a_bits=b is MixA-Q at a_bits_high = a_bits_low = b, ratio 0, calib whole, bit for bit
    (outputs, quantizer grids, BOPs); and not MixA-Q at another width (the mapping is not ignored)."""
    model = tiny_swin(depths=(2, 2, 3, 2))  # odd depth: the last pair of stage 3 is a single block
    x, cal = synthetic_images(2, 112, seed=1), synthetic_images(2, 112, seed=2)
    b, other = knobs["a_bits"], {k: v for k, v in knobs.items() if k != "a_bits"}

    def as_mixaq(bits: int) -> MixAQParams:
        return MixAQParams(a_bits_high=bits, a_bits_low=bits, ratio=0.0, calib="whole", **other)

    uni = make_uniform(UniformQuantParams(**knobs))(model, cal, seed=3)
    mix = make_mixaq(as_mixaq(b))(model, cal, seed=3)
    wrong = make_mixaq(as_mixaq(b + 1))(model, cal, seed=3)
    with torch.no_grad():
        y_uni, y_mix, y_wrong = uni(x), mix(x), wrong(x)

    def grids(q):
        return [(m.bits, m.kind, m.lo, m.hi, m.scale) for m in q.modules() if isinstance(m, ActQuantizer)]

    assert torch.equal(y_uni, y_mix)
    assert grids(uni) == grids(mix)
    assert work_counters(uni, "linear") == work_counters(mix, "linear")
    assert uni.quant_info.spec == mix.quant_info.spec and uni.quant_info.ref_a_bits == b
    # the seed and the ratios as MixA-Q's; uniform prunes nothing, so it keeps no active-window minimum
    assert uni.quant_info.routing == dataclasses.replace(mix.quant_info.routing, min_active=0)
    assert not torch.equal(y_uni, y_wrong) and grids(uni) != grids(wrong)


def test_uniform_measures_its_bops_speedup_against_the_reference_bits_it_is_given():
    model, cal = tiny_swin(), synthetic_images(2, 112, seed=2)
    assert uniform_apply(model, UniformQuantParams(a_bits=4), cal).quant_info.ref_a_bits == 4
    assert uniform_apply(model, UniformQuantParams(a_bits=4, ref_a_bits=8), cal).quant_info.ref_a_bits == 8
    assert uniform_apply(model, UniformQuantParams(a_bits=4), cal, seed=5).quant_info.routing.seed == 5
    assert uniform_apply(model, UniformQuantParams(a_bits=4), cal).quant_info.routing.seed == 0


def test_uniform_refuses_percentile_knobs_under_repq():
    assert UniformQuantParams(ptq="repq").ptq == "repq"  # its defaults are accepted
    with pytest.raises(ValueError, match=r"act_calib and softmax_quant apply to ptq='percentile' only "
                                         r"\(got act_calib='minmax', softmax_quant='uniform'"):
        UniformQuantParams(ptq="repq", act_calib="minmax")
    with pytest.raises(ValueError, match=r"got act_calib='percentile', softmax_quant='log2'"):
        UniformQuantParams(ptq="repq", softmax_quant="log2")


def test_quantized_copy_leaves_the_float_model_untouched():
    model = tiny_swin()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply(model, MixAQParams(ratio=0.5), synthetic_images(1, 112))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------- window importance and routing


def test_window_scores_regular_partition_is_l2_per_window():
    tok = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4)
    s = window_scores(tok, (2, 2), (0, 0))
    want = [
        torch.tensor(v, dtype=torch.float32).norm()
        for v in ([0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15])
    ]
    torch.testing.assert_close(s[0], torch.stack(want))


def test_window_scores_shifted_partition_rolls_by_minus_shift_first():
    tok = torch.zeros(1, 4, 4)
    tok[0, 1, 1] = 3.0  # rolled by (-1, -1): lands at (0, 0), the first window
    tok[0, 0, 0] = 4.0  # rolled to (3, 3): the last window
    s = window_scores(tok, (2, 2), (1, 1))
    assert s[0].tolist() == [3.0, 0.0, 0.0, 4.0]


def test_window_scores_zero_pad_to_whole_windows():
    s = window_scores(torch.ones(1, 3, 3), (2, 2), (0, 0))  # padded to 4 x 4
    assert s[0].tolist() == pytest.approx([2.0, 2**0.5, 2**0.5, 1.0])


def test_window_order_modes():
    scores = torch.tensor([[0.5, 3.0, 1.0, 2.0]])
    assert window_order(scores, "l2")[0].tolist() == [1, 3, 2, 0]
    assert window_order(scores, "reversed")[0].tolist() == [0, 2, 3, 1]
    a = window_order(scores.expand(3, 4), "random", torch.Generator().manual_seed(5))
    b = window_order(scores.expand(3, 4), "random", torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and sorted(a[0].tolist()) == [0, 1, 2, 3]


def test_window_counts_floor_with_float_tolerance():
    assert window_counts(10, 0.9, 0.0) == (1, 9, 0)  # 10 * (1 - 0.9) is 0.999...: still one window
    assert window_counts(64, 0.3, 0.2) == (32, 19, 13)
    assert window_counts(1, 0.5, 0.0) == (0, 1, 0)  # a single window goes low at ratio 0.5
    assert window_counts(4, 0.0, 0.0) == (4, 0, 0)


def test_pair_values_are_sorted_ascending_within_a_stage():
    per_block = expand_pairs((0.1, 0.2, 0.8, 0.0, 0.4, 0.3), (2, 2, 6, 2))
    assert per_block[2] == [0.0, 0.0, 0.4, 0.4, 0.8, 0.8]
    with pytest.raises(ValueError, match="expected 6 per-pair values"):
        expand_pairs((0.1,) * 4, (2, 2, 6, 2))


def test_low_sets_are_nested_within_a_stage():
    model = tiny_swin(img_size=224, depths=(2, 2, 6, 2))
    spec = QuantSpec(w_bits=32, a_bits_high=32, a_bits_low=32, embed_bits=32)
    pairs = (0.0, 0.0, 0.6, 0.2, 0.4, 0.0)
    q = quantize_swin(model, spec, RoutingSpec(pairs, (0.0,) * 6, "l2"), None)
    with torch.no_grad():
        q(synthetic_images(2, 224, seed=4))
    routes = q.layers[2].last_routes  # 14 x 14 tokens: 4 windows, ratios 0.2, 0.4, 0.6 per pair
    assert [r.counts[LOW] for r in routes] == [1, 1, 2, 2, 3, 3]  # 4 - floor(4 (1 - r))
    for earlier, later in zip(routes[2:], routes[4:]):  # same partition (regular/shifted): nested
        assert torch.all((earlier.assign == LOW) <= (later.assign == LOW))


def test_low_windows_are_the_least_important_ones():
    model = tiny_swin(img_size=224)
    q = quantize_swin(model, FLOAT, routing(model, ratio=0.5), None)
    x = synthetic_images(1, 224, seed=6)
    with torch.no_grad():
        stage_in = q.patch_embed(x)
        routes = q.layers[0].routes(stage_in)
    scores = window_scores(stage_in.abs().mean(-1), (7, 7), (0, 0))[0]
    low = routes[0].assign[0] == LOW
    assert low.sum() == 32 and scores[low].max() <= scores[~low].min()


def test_pruned_windows_skip_the_block():
    model = tiny_swin()
    q = quantize_swin(model, FLOAT, routing(model, prune=1.0), None)
    x = torch.randn(2, 28, 28, 16)
    with torch.no_grad():
        assert torch.equal(q.layers[0](x), x)  # every window pruned: the stage is the identity
        img = synthetic_images(1, 112)
        full = apply_sparsevit(model, SparseViTParams(w_bits=32, a_bits=32, embed_bits=32, prune_ratio=0.0),
                               None)(img)
        half = apply_sparsevit(model, SparseViTParams(w_bits=32, a_bits=32, embed_bits=32, prune_ratio=0.5),
                               None)(img)
        torch.testing.assert_close(full, model(img), atol=1e-5, rtol=1e-5)  # nothing pruned: the float model
    assert not torch.allclose(half, full, atol=1e-4)  # pruning half the windows changes the logits


def test_routed_calibration_observes_only_the_routed_windows():
    model = tiny_swin()
    cal = synthetic_images(2, 112, seed=2)
    routed = apply(model, MixAQParams(ratio=0.25, calib="routed"), cal)
    whole = apply(model, MixAQParams(ratio=0.25, calib="whole"), cal)
    aq_r, aq_w = routed.layers[0].blocks[0].aq, whole.layers[0].blocks[0].aq
    assert aq_r[LOW]["fc1_in"].observer.n_seen < aq_r[HIGH]["fc1_in"].observer.n_seen
    assert aq_r[LOW]["fc1_in"].observer.n_seen + aq_r[HIGH]["fc1_in"].observer.n_seen == 2 * 28 * 28 * 16
    assert aq_w[LOW]["fc1_in"].observer is aq_w[HIGH]["fc1_in"].observer


def test_low_bits_above_high_bits_are_rejected_by_the_params():
    with pytest.raises(ValueError, match="a_bits_low=8 must not exceed a_bits_high=4"):
        MixAQParams(a_bits_high=4, a_bits_low=8)
    MixAQParams(a_bits_high=4, a_bits_low=4)  # equal is allowed (uniform as MixA-Q)


@pytest.mark.usefixtures("clean_registry")
def test_suite_with_low_bits_above_high_bits_is_refused_at_load_with_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\n"
        "workload: swin\n"
        "reference: fp32\n"
        "fixed: {model: swin_micro, img_size: 64, batch: 1, calib_images: 1}\n"
        "methods:\n"
        "  fp32: {}\n"
        "  mixaq:\n"
        "    a_bits_low: 8\n"
        "    a_bits_high: 4\n"
    )
    with pytest.raises(SuiteError) as ei:
        load_suite(path)
    (msg,) = ei.value.problems
    assert msg.startswith(f"{path}, line 7: methods.mixaq: invalid combination for method 'mixaq'"), msg
    assert "a_bits_low=8 must not exceed a_bits_high=4" in msg
    assert "before running anything" in str(ei.value)


def test_log2_softmax_quantizer_is_used_when_asked():
    model, cal, x = tiny_swin(), synthetic_images(1, 112), synthetic_images(1, 112, seed=3)
    q = apply(model, MixAQParams(ratio=0.5, softmax_quant="log2"), cal)
    quantizer = q.layers[1].blocks[0].aq[LOW]["attn"]
    assert quantizer.kind == "log2"
    seen = []
    handle = quantizer.register_forward_hook(lambda mod, inp, out: seen.append((inp[0], out)))
    with torch.no_grad():
        y = q(x)
    handle.remove()
    probs, out = seen[0]
    nonzero = out[out > 0]
    assert nonzero.numel() > 0
    assert torch.equal(torch.log2(nonzero), torch.log2(nonzero).round())  # every kept value is 2^-k
    low_bits = MixAQParams().a_bits_low
    assert float(nonzero.min()) >= 2.0 ** -(2**low_bits - 2)
    torch.testing.assert_close(out, torch.exp2(-torch.round(-torch.log2(probs))).where(out > 0, 0.0))
    with torch.no_grad():
        y_uniform = apply(model, MixAQParams(ratio=0.5, softmax_quant="uniform"), cal)(x)
    assert not torch.allclose(y, y_uniform)


def test_prune_routes_mark_pruned_windows():
    model = tiny_swin()
    q = quantize_swin(model, QuantSpec(), routing(model, ratio=0.25, prune=0.25), synthetic_images(1, 112))
    with torch.no_grad():
        q(synthetic_images(2, 112, seed=9))
    route = q.layers[0].last_routes[0]  # 16 windows: 8 high, 4 low, 4 pruned per image
    assert route.counts == (8, 4, 4)
    assert ((route.assign == PRUNED).sum(1) == 4).all()


# ----------------------------------------------------------------- what importance buys (random weights)


def test_l2_selection_protects_the_windows_it_ranks_high():
    """With random weights the final-feature SQNR barely depends on which windows go low (see the
    report); what holds robustly is that the windows ranked important keep the most fidelity:
    high-importance-window SQNR is ordered l2 > random > reversed (low-window SQNR the opposite)."""
    model = tiny_swin(img_size=224)
    x, cal = synthetic_images(2, 224, seed=11), synthetic_images(2, 224, seed=12)
    ref = capture(model, x, 2, "cpu", "float32")
    windows = [tuple(s.blocks[0].window_size) for s in model.layers]
    res = {}
    for imp in ("l2", "random", "reversed"):
        q = apply(model, MixAQParams(w_bits=8, a_bits_high=8, a_bits_low=2, ratio=0.5, importance=imp), cal)
        res[imp] = fidelity_metrics(ref, capture(q, x, 2, "cpu", "float32"), windows)
    high = [res[m]["fid_sqnr_high_db"] for m in ("l2", "random", "reversed")]
    low = [res[m]["fid_sqnr_low_db"] for m in ("l2", "random", "reversed")]
    assert high[0] > high[1] > high[2]
    assert low[0] < low[1] < low[2]
