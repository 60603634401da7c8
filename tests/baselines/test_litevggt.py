"""LiteVGGT-style merging against an independent token-by-token reference written from the paper
and the reference code's algorithm (loops over frames, cells and tokens; no shared merge code); its
FP8 linear layers (``lv_fp8``): the e4m3 scale and rounding by hand, the transform on vggt-tiny."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from baselines import litevggt
from baselines.litevggt import (
    FP8Linear,
    LiteVGGTParams,
    fp8_linear,
    fp8_linear_reference,
    fp8_supported,
    fp8_transform,
    make_litevggt,
    quantize_e4m3,
)
from harness import registry
from harness.models.seam import AttentionLayout, Recorder, VGGTMethod, sdpa_attention
from harness.models.vggt.model import build_vggt
from harness.run.options import RunOptions
from harness.run.runner import run_suite
from harness.store import columns, load
from harness.suite import parse_suite

S, PS, PH, PW, H, D, C = 3, 1, 4, 4, 2, 8, 16  # 3 frames of 1 special + 4x4 patches, 2 heads of 8


def tokens_per_frame(ph=PH, pw=PW):
    return PS + ph * pw


def inputs(seed, ph=PH, pw=PW, batch=1):
    """q, k, v [batch, H, N, D] and x_norm [batch, N, C], float64."""
    g = torch.Generator().manual_seed(seed)
    n = S * tokens_per_frame(ph, pw)
    q, k, v = (torch.randn(batch, H, n, D, generator=g, dtype=torch.float64) for _ in range(3))
    return q, k, v, torch.randn(batch, n, C, generator=g, dtype=torch.float64)


def layout(x=None, layer=0, rec=None, ph=PH, pw=PW):
    return AttentionLayout(frames=S, tokens_per_frame=tokens_per_frame(ph, pw), patch_h=ph, patch_w=pw,
                           patch_start=PS, layer=layer, x_norm=x, recorder=rec)


# -- the reference -------------------------------------------------------------------------------


def ref_scores(x, p, ph, pw):
    """{(frame, row, col): local token variance} from one row's metric x [N, C]."""
    P = tokens_per_frame(ph, pw)
    feats = x
    if 0 < p.lv_proj_dim < x.shape[1]:
        mat = torch.empty(x.shape[1], p.lv_proj_dim, dtype=torch.float64)
        torch.nn.init.orthogonal_(mat, generator=torch.Generator().manual_seed(p.lv_proj_seed))
        feats = x @ mat
    half = p.lv_var_window // 2
    scores = {}
    for f in range(S):
        for i in range(ph):
            for j in range(pw):
                near = [feats[f * P + PS + a * pw + b] for a in range(i - half, i + half + 1)
                        for b in range(j - half, j + half + 1) if 0 <= a < ph and 0 <= b < pw]
                mean = sum(near) / len(near)
                scores[f, i, j] = float(sum(((t - mean) ** 2).sum() for t in near) / len(near))
    return scores


def ref_roles(x, p, ph=PH, pw=PW):
    """{token: "kept" | "target" | "src"} from the forward's first metric x [N, C]."""
    P = tokens_per_frame(ph, pw)
    scores = ref_scores(x, p, ph, pw)
    roles = {}
    for f in range(S):
        for t in range(PS):
            roles[f * P + t] = "target" if p.lv_special_targets else "kept"
        if f == 0:
            for t in range(PS, P):
                roles[t] = "target"
            continue
        anchors = set()
        for ci in range(0, ph, 2):
            for cj in range(0, pw, 2):
                cell = [(a, b) for a in (ci, ci + 1) for b in (cj, cj + 1) if a < ph and b < pw]
                best = cell[0]
                for a, b in cell[1:]:
                    if scores[f, a, b] < scores[f, best[0], best[1]]:
                        best = (a, b)
                anchors.add(best)
        others = sorted(((a, b) for a in range(ph) for b in range(pw) if (a, b) not in anchors),
                        key=lambda ab: -scores[f, ab[0], ab[1]])
        n_protect = min(int(p.lv_protect_frac * ph * pw), len(others))
        for a in range(ph):
            for b in range(pw):
                tok = f * P + PS + a * pw + b
                roles[tok] = "target" if (a, b) in anchors else "src"
        for a, b in others[:n_protect]:
            roles[f * P + PS + a * pw + b] = "kept"
    return roles


def ref_groups(roles, x, ratio):
    """Groups of token indices: each target with the src merged into it, every other token alone.
    Every src picks its most cosine-similar target; the top round(ratio * #src) by that merge."""
    targets = [t for t in sorted(roles) if roles[t] == "target"]
    best = {}
    for s in (t for t in sorted(roles) if roles[t] == "src"):
        for t in targets:
            cos = float(x[s] @ x[t] / (x[s].norm() * x[t].norm()))
            if s not in best or cos > best[s][0]:
                best[s] = (cos, t)
    ranked = sorted(best, key=lambda s: -best[s][0])
    merged = ranked[:math.floor(ratio * len(ranked) + 0.5)]
    groups = {t: [t] for t in roles if t not in merged}
    for s in merged:
        groups[best[s][1]].append(s)
    return list(groups.values())


def ref_attention(q, k, v, groups):
    """Every group's mean query attends to every group's mean key / value; members copy the row.
    q, k, v: [H, N, D] of one batch row -> [H, N, D]."""
    out = torch.empty_like(q)
    qm = [q[:, g].mean(1) for g in groups]
    km = torch.stack([k[:, g].mean(1) for g in groups], 1)
    vm = torch.stack([v[:, g].mean(1) for g in groups], 1)
    for g, qg in zip(groups, qm):
        for h in range(q.shape[0]):
            w = torch.softmax(km[h] @ qg[h] / math.sqrt(q.shape[-1]), 0)
            out[h, g] = (w[:, None] * vm[h]).sum(0)
    return out


def reference(q, k, v, x, p, ph=PH, pw=PW, x_match=None):
    """One batch row at a layer that computes: roles from x, matching on x_match (default x)."""
    groups = ref_groups(ref_roles(x[0], p, ph, pw), (x if x_match is None else x_match)[0], p.lv_ratio)
    return ref_attention(q[0], k[0], v[0], groups).unsqueeze(0)


# -- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("special", [False, True])
def test_ratio_zero_equals_plain_attention(special):
    q, k, v, x = inputs(0)
    fn = make_litevggt(LiteVGGTParams(lv_ratio=0.0, lv_special_targets=special))
    torch.testing.assert_close(fn(q, k, v, layout(x)), sdpa_attention(q, k, v))


@pytest.mark.parametrize(
    "ratio, protect, special, proj_dim, grid",
    [(0.5, 0.1, False, 32, (PH, PW)), (0.3, 0.25, True, 32, (PH, PW)), (0.75, 0.0, False, 4, (PH, PW)),
     (0.6, 0.2, False, 5, (3, 5)), (1.0, 0.1, True, 0, (5, 3))],
)
def test_a_computing_layer_matches_the_token_by_token_reference(ratio, protect, special, proj_dim, grid):
    q, k, v, x = inputs(1, *grid)
    p = LiteVGGTParams(lv_ratio=ratio, lv_protect_frac=protect, lv_special_targets=special,
                       lv_proj_dim=proj_dim, lv_proj_seed=3)
    out = make_litevggt(p)(q, k, v, layout(x, ph=grid[0], pw=grid[1]))
    torch.testing.assert_close(out, reference(q, k, v, x, p, *grid))
    assert not torch.allclose(out, sdpa_attention(q, k, v))


def test_a_larger_variance_window_matches_the_reference():
    q, k, v, x = inputs(2, 5, 6)
    p = LiteVGGTParams(lv_ratio=0.5, lv_var_window=5, lv_proj_dim=0)
    out = make_litevggt(p)(q, k, v, layout(x, ph=5, pw=6))
    torch.testing.assert_close(out, reference(q, k, v, x, p, 5, 6))


def test_special_tokens_are_never_merged_even_when_identical_to_a_patch():
    q, k, v, x = inputs(3)
    P = tokens_per_frame()
    for f in (1, 2):  # each frame's camera token a copy of one of its patches, in metric and in q, k, v
        x[:, f * P] = x[:, f * P + PS + 5]
        for t in (q, k, v):
            t[:, :, f * P] = t[:, :, f * P + PS + 5]
    p = LiteVGGTParams(lv_ratio=0.8)
    torch.testing.assert_close(make_litevggt(p)(q, k, v, layout(x)), reference(q, k, v, x, p))


def test_batch_rows_decide_independently():
    q, k, v, x = inputs(4, batch=2)
    p = LiteVGGTParams(lv_ratio=0.5)
    out = make_litevggt(p)(q, k, v, layout(x))
    for b in range(2):
        rows = [t[b:b + 1] for t in (q, k, v, x)]
        torch.testing.assert_close(out[b:b + 1], reference(*rows, p))


def test_the_next_layer_reuses_the_first_layers_indices():
    p = LiteVGGTParams(lv_ratio=0.5, lv_recompute_layers=(0,))
    fn = make_litevggt(p)
    q0, k0, v0, x0 = inputs(5)
    q1, k1, v1, x1 = inputs(6)  # layer 1: other q, k, v and another metric
    fn(q0, k0, v0, layout(x0, layer=0))
    out = fn(q1, k1, v1, layout(x1, layer=1))
    torch.testing.assert_close(out, reference(q1, k1, v1, x0, p))
    assert not torch.allclose(out, reference(q1, k1, v1, x1, p))  # a fresh match would differ


def test_a_scheduled_layer_rematches_on_its_own_input_with_the_forwards_roles():
    p = LiteVGGTParams(lv_ratio=0.5, lv_recompute_layers=(0, 2))
    fn = make_litevggt(p)
    layers = [inputs(10 + i) for i in range(4)]
    outs = [fn(q, k, v, layout(x, layer=i)) for i, (q, k, v, x) in enumerate(layers)]
    x0, x2 = layers[0][3], layers[2][3]
    torch.testing.assert_close(outs[1], reference(*layers[1][:3], x0, p))
    torch.testing.assert_close(outs[2], reference(*layers[2][:3], x0, p, x_match=x2))
    torch.testing.assert_close(outs[3], reference(*layers[3][:3], x0, p, x_match=x2))
    assert not torch.allclose(outs[3], reference(*layers[3][:3], x0, p))  # layer 2's match, not layer 0's


def test_counters_say_which_layers_recompute_and_a_new_forward_recomputes():
    p = LiteVGGTParams(lv_ratio=0.5, lv_recompute_layers=(0, 2))
    fn = make_litevggt(p)
    q, k, v, x = inputs(7)
    forward = Recorder()
    per_layer = []
    for layer in range(4):
        rec = Recorder()
        fn(q, k, v, layout(x, layer=layer, rec=rec))
        per_layer.append((rec.counters.get("index_recompute", 0), rec.counters.get("index_reuse", 0)))
        for name, value in rec.counters.items():
            forward.count(name, value)
    assert per_layer == [(1, 0), (0, 1), (1, 0), (0, 1)]
    assert forward.counters["index_recompute"] == 2 and forward.counters["index_reuse"] == 2
    again = Recorder()
    q2, k2, v2, x2 = inputs(8)
    out = fn(q2, k2, v2, layout(x2, layer=0, rec=again))  # layer 0 after layer 3: a new forward
    assert again.counters["index_recompute"] == 1 and "index_reuse" not in again.counters
    torch.testing.assert_close(out, reference(q2, k2, v2, x2, p))


def test_the_same_layer_called_again_recomputes_as_at_the_attention_scope():
    p = LiteVGGTParams(lv_ratio=0.5, lv_recompute_layers=(0,))
    fn = make_litevggt(p)
    for seed in (20, 21):
        rec = Recorder()
        q, k, v, x = inputs(seed)
        out = fn(q, k, v, layout(x, layer=3, rec=rec))
        assert rec.counters["index_recompute"] == 1 and "index_reuse" not in rec.counters
        torch.testing.assert_close(out, reference(q, k, v, x, p))


def test_work_counters_on_a_hand_computed_case():
    q, k, v, x = inputs(9)
    rec = Recorder()
    make_litevggt(LiteVGGTParams())(q, k, v, layout(x, rec=rec))
    # frames 1, 2: 4 anchors, int(0.1 * 16) = 1 protected, 11 src each, all merged: 51 - 22 = 29 slots
    assert rec.counters["tokens_q"] == 29 * H and rec.counters["tokens_kv"] == 29 * H
    assert rec.counters["attn_flops"] == 4 * H * 29 * 29 * D
    # 22 src against 16 frame-0 patches + 8 anchors in C = 16 channels (lv_proj_dim 32 >= C: no projection)
    assert rec.counters["match_flops"] == 2 * 22 * 24 * C
    assert rec.counters["match_bytes"] == (S * PH * PW + S * tokens_per_frame()) * C * 8


def test_without_x_norm_it_matches_on_the_keys_averaged_over_heads():
    q, k, v, _ = inputs(11)
    p = LiteVGGTParams(lv_ratio=0.5, lv_proj_dim=0)
    rec = Recorder()
    with pytest.warns(UserWarning, match="x_norm is None"):
        out = make_litevggt(p)(q, k, v, layout(None, rec=rec))
    torch.testing.assert_close(out, reference(q, k, v, k.mean(1), p))
    assert rec.counters["metric_fallback"] == 1


def test_a_single_frame_is_plain_attention():
    q, k, v, x = (t[..., :tokens_per_frame(), :] for t in inputs(12))
    lay = AttentionLayout(frames=1, tokens_per_frame=tokens_per_frame(), patch_h=PH, patch_w=PW,
                          patch_start=PS, x_norm=x)
    torch.testing.assert_close(make_litevggt(LiteVGGTParams())(q, k, v, lay), sdpa_attention(q, k, v))


def test_bad_knobs_and_layouts_are_refused():
    with pytest.raises(ValueError, match="lv_var_window=4 must be odd"):
        LiteVGGTParams(lv_var_window=4)
    with pytest.raises(ValueError, match="lv_recompute_layers"):
        LiteVGGTParams(lv_recompute_layers=(0, -1))
    q, k, v, x = (t[..., :-1, :] for t in inputs(13))
    with pytest.raises(ValueError, match="LiteVGGT: layout has"):
        make_litevggt(LiteVGGTParams())(q, k, v, layout(x))


# -- FP8 linear layers (lv_fp8) ------------------------------------------------------------------

FP8_FRAMES, FP8_HEIGHT, FP8_WIDTH = 2, 28, 42  # vggt-tiny: 14 px patches -> 2 x 3 patches per frame
TINY_DEPTH = 4
CPU_REFUSAL = ("litevggt lv_fp8: the model runs on cpu, but FP8 matmuls (torch._scaled_mm on float8_e4m3fn) "
               "need a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell); lv_fp8: false "
               "runs the merging alone")


@pytest.fixture(scope="module")
def images():
    return torch.rand(1, FP8_FRAMES, 3, FP8_HEIGHT, FP8_WIDTH, generator=torch.Generator().manual_seed(1))


def aggregator_out(model, images):
    with torch.inference_mode():
        return torch.stack(model.aggregator(images)[0])  # [depth, B, S, P, 2C]


def no_run(model):
    raise AssertionError("the FP8 transform needs no calibration forward")


def fake_fp8_gpu(monkeypatch):
    """Every device counts as FP8-capable and FP8Linear computes the reference on the CPU."""
    monkeypatch.setattr(litevggt, "fp8_supported", lambda device: True)
    monkeypatch.setattr(FP8Linear, "forward", lambda self, x: fp8_linear_reference(x, self.weight, self.bias))


def scaled_mm_device(kind):
    """A device for the torch._scaled_mm path, or a pytest skip saying why there is none."""
    if kind == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device: the FP8 path needs CUDA compute capability >= 8.9")
        device = torch.device("cuda")
        if not fp8_supported(device):
            pytest.skip(f"{torch.cuda.get_device_name(device)} is below compute capability 8.9 (no FP8)")
        return device
    try:
        torch._scaled_mm(torch.zeros(16, 16, dtype=torch.float8_e4m3fn),
                         torch.zeros(16, 16, dtype=torch.float8_e4m3fn).t(), torch.tensor(1.0),
                         torch.tensor(1.0), out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError) as err:
        pytest.skip(f"this torch has no CPU torch._scaled_mm ({err})")
    return torch.device("cpu")


def test_the_scale_maps_the_amax_to_448_the_e4m3fn_max():
    values, scale = quantize_e4m3(torch.tensor([-3.5, 1.0, 2.0]))
    assert float(scale) == 128.0  # 448 / 3.5, not 240 / 3.5 (e4m3fnuz) nor 57344 / 3.5 (e5m2)
    assert values.dtype == torch.float8_e4m3fn
    assert values.float().tolist() == [-448.0, 128.0, 256.0]
    assert (values.float() / scale).tolist() == [-3.5, 1.0, 2.0]


def test_an_all_zero_tensor_gets_scale_one_and_stays_zero():
    values, scale = quantize_e4m3(torch.zeros(2, 3))
    assert float(scale) == 1.0 and values.float().abs().sum() == 0


def test_e4m3_rounds_to_nearest_with_ties_to_even_by_hand():
    # amax 448: scale 1. Steps: 0.125 in [1, 2), 2 in [16, 32), 1/32 in [0.25, 0.5), 2^-9 below 2^-6
    x = torch.tensor([448.0, 1.0625, 1.1875, 17.0, 0.3, -2.0 ** -10, 3 * 2.0 ** -10])
    values, scale = quantize_e4m3(x)
    assert float(scale) == 1.0
    assert values.float().tolist() == [448.0, 1.0, 1.25, 16.0, 0.3125, 0.0, 2.0 ** -8]


def test_the_reference_fp8_linear_by_hand():
    # x at scale 1: 1.0625 -> 1.0; W = [[1, 1], [0, 2]] at scale 224: exact
    x = torch.tensor([[[448.0, 1.0625]]])
    weight, bias = torch.tensor([[1.0, 1.0], [0.0, 2.0]]), torch.tensor([0.5, -1.0])
    y = fp8_linear_reference(x, weight, bias)
    assert y.shape == (1, 1, 2) and y.dtype == torch.float32
    assert y.flatten().tolist() == [449.5, 1.0]  # float: [449.5625, 1.125]
    assert fp8_linear_reference(x, weight).flatten().tolist() == [449.0, 2.0]


@pytest.mark.parametrize("kind", ["cuda", "cpu"])
def test_the_scaled_mm_path_and_the_module_compute_the_reference(kind):
    device = scaled_mm_device(kind)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 37, 64, generator=g) * 3).to(device)
    linear = nn.Linear(64, 48).to(device)
    want = fp8_linear_reference(x, linear.weight, linear.bias)
    got = fp8_linear(x, *quantize_e4m3(linear.weight.detach()), linear.bias)
    assert got.shape == (2, 37, 48) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(FP8Linear(linear)(x), want, rtol=1e-5, atol=1e-5)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = FP8Linear(linear)(x)
    assert out.dtype == torch.bfloat16  # as an nn.Linear under autocast
    torch.testing.assert_close(out.float(), want, rtol=1e-2, atol=1e-2)


def test_fp8_needs_cuda_compute_capability_8_9(monkeypatch):
    assert not fp8_supported(torch.device("cpu"))
    for capability, ok in [((8, 0), False), ((8, 6), False), ((8, 9), True), ((9, 0), True), ((10, 0), True)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert fp8_supported(torch.device("cuda", 0)) is ok, capability


def test_the_transform_refuses_a_cpu_model_and_says_what_fp8_needs(tiny):
    with pytest.raises(ValueError) as err:
        fp8_transform(tiny, no_run)
    assert str(err.value) == CPU_REFUSAL
    method = make_litevggt(LiteVGGTParams(lv_fp8=True))
    with pytest.raises(ValueError, match="lv_fp8: false runs the merging alone"):
        method.model_transform(tiny, no_run)


def test_the_transform_swaps_exactly_qkv_fc1_fc2_of_every_block_on_a_copy(tiny, images, monkeypatch):
    fake_fp8_gpu(monkeypatch)
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    out_before = aggregator_out(tiny, images)
    fp8 = fp8_transform(tiny, no_run)
    assert fp8 is not tiny
    blocks = [*fp8.aggregator.frame_blocks, *fp8.aggregator.global_blocks]
    assert len(blocks) == 2 * TINY_DEPTH
    for block in blocks:
        assert [type(m) for m in (block.attn.qkv, block.mlp.fc1, block.mlp.fc2)] == [FP8Linear] * 3
        assert type(block.attn.proj) is nn.Linear
        assert block.mlp.fc1.weight_fp8.dtype == torch.float8_e4m3fn
    assert sum(isinstance(m, FP8Linear) for m in fp8.modules()) == 3 * 2 * TINY_DEPTH  # nothing else
    # the model passed in is untouched
    assert not any(isinstance(m, FP8Linear) for m in tiny.modules())
    after = tiny.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    torch.testing.assert_close(aggregator_out(tiny, images), out_before, atol=0, rtol=0)
    # the copy computes in FP8: close to float, not equal
    out = aggregator_out(fp8, images)
    err = float((out - out_before).pow(2).mean() / out_before.pow(2).mean())
    assert 0 < err < 1e-3


def test_a_layer_width_scaled_mm_cannot_take_is_refused(monkeypatch):
    fake_fp8_gpu(monkeypatch)
    odd = build_vggt("vggt-tiny")
    odd.aggregator.global_blocks[1].mlp.fc1 = nn.Linear(64, 40)
    with pytest.raises(ValueError, match=r"global block 1 mlp\.fc1 maps 64 -> 40 features; .* by 16"):
        fp8_transform(odd, no_run)


def test_lv_fp8_false_keeps_a_bare_attention_fn_and_true_adds_the_transform():
    plain = make_litevggt(LiteVGGTParams())
    assert not isinstance(plain, VGGTMethod) and callable(plain)
    method = make_litevggt(LiteVGGTParams(lv_fp8=True))
    assert isinstance(method, VGGTMethod)
    assert method.model_transform is fp8_transform and method.calibrate is None
    q, k, v, x = inputs(14)
    torch.testing.assert_close(method.attention_fn(q, k, v, layout(x)), plain(q, k, v, layout(x)),
                               atol=0, rtol=0)


FP8_SUITE = """
name: lv-fp8
workload: vggt
reference: vggt
fixed: {preset: vggt-tiny, frames: 2, height: 28, width: 42, scope: model}
methods:
  litevggt: {lv_fp8: true}
  vggt: {}
timing: {warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}
"""


def test_on_cpu_the_fp8_point_fails_with_the_refusal_and_the_sweep_goes_on(tmp_path):
    registry.load_builtins()
    out = tmp_path / "run"
    run_suite(parse_suite(FP8_SUITE, source="lv-fp8.yaml"), out, RunOptions(progress=False, argv=["t"]))
    rows = load(out).points.set_index(columns.METHOD)
    assert rows.loc["litevggt", columns.STATUS] == columns.FAILED
    assert CPU_REFUSAL in rows.loc["litevggt", columns.ERROR]
    assert rows.loc["vggt", columns.STATUS] == columns.OK, rows.loc["vggt", columns.ERROR]
