"""The bytes model of the memory wall (harness/metrics/memory_model.py) against the allocations of the
real code, and the wall and its page.

How the methods' models are checked: each method's real ``attention_fn`` runs on CPU tensors under
:class:`LiveBytes` (which counts every storage an operator creates, from creation to death), at small
shapes with the real per-frame structure (camera + register tokens, a patch grid, several frames and
heads); the tracker's peak minus the attention output the wall counts (``[B, H, N, d]`` in the
compute dtype) must equal the total of the method's ``seam_peak_bytes``, less its ``cached:`` terms
(index tensors built on a shape's first call: every call here is the second one).

The code that runs is the GPU code path with three stand-ins, each allocating what the GPU kernel
allocates and nothing else:

- the Triton merge kernels (``HARNESS_MERGE_KERNELS=triton``): the real wrappers of
  ``harness.methods.triton_merge`` run (their ``torch.empty`` / ``zeros`` / casts are counted); only
  the jitted kernels are replaced by torch code that runs with the tracker paused (the kernels keep
  their similarity tiles in registers);
- FlexAttention (block-sparse's ``flex`` backend): the compiled kernel returns an output and a
  float32 logsumexp; the stand-in allocates those two (the block mask is built for real);
- SDPA needs none: on CPU it picks the fused flash kernel (output + logsumexp, no N x N matrix)
  for these inputs, as CUDA does; a boolean mask becomes an additive float mask in both.

Tolerance: none (0 bytes). The ledger replays every allocation of the code path, down to the
small index tensors (aranges, nonzero, repeat_interleave), so any wrong formula shows. What the
tracker cannot see, and the model leaves out alike, are allocations inside a kernel (workspaces).
The one data-dependent quantity, HTTM's outliers per head group, is made exact by giving every head
the same queries (each group then flags budget / G; the model assumes that even spread).

Autocast cases run under ``torch.autocast("cpu", bfloat16)`` with float32 q, k, x_norm and bf16 v,
as the GPU seam sees them (CUDA's LayerNorm returns float32 under autocast): SDPA and matmul cast
to bf16 on CPU as on CUDA, which checks the model's cast terms.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from baselines import avggt, blocksparse, litevggt
from baselines import tome as tome_module
from baselines.avggt import AVGGTParams, make_avggt
from baselines.blocksparse import BlockSparseParams, make_blocksparse
from baselines.fastvggt import FastVGGTParams, cell_dst_mask, make_fastvggt
from baselines.hess import HeSSAttention, HeSSParams
from baselines.litevggt import LiteVGGTParams, make_litevggt, matching_bytes
from baselines.quantvggt import QuantHTTMParams, QuantVGGTParams, quantize_vggt
from baselines.spark3r import Spark3RParams, make_spark3r
from baselines.tome import ToMeParams, make_tome
from harness import registry
from harness.measure.alloc_tracker import LiveBytes
from harness.methods import httm, kernels, merging
from harness.methods.httm import HTTMParams, make_httm
from harness.methods.plain import PlainParams, make_plain
from harness.metrics import memory_model as MM
from harness.models.seam import AttentionLayout, sdpa_attention
from harness.models.vggt.model import build_vggt
from harness.models.vggt.presets import VGGTConfig, default_intermediate_layers, get_preset
from harness.store import RunWriter
from harness.store import columns as C
from reports import memory_wall as W

pytestmark = pytest.mark.usefixtures("one_thread")

VGGT_1B = get_preset("vggt-1b")
LIVE = [LiveBytes()]  # the tracker of the running measurement (the kernel stand-ins pause it)


# ----------------------------------------------------------------------------- stand-ins and runs


class _Launch:
    """``kernel[grid](*args)`` of a jitted Triton kernel, done by ``fn`` with the tracker paused."""

    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, grid):
        def launch(*args, **kw):
            with LIVE[0].paused():
                self.fn(*args)
        return launch


def _best_match_kernel(src, cand, score, index, *_):
    sim = torch.bmm(src.float(), F.normalize(cand.float(), dim=-1).transpose(1, 2))
    best, arg = sim.max(-1)
    score.copy_(best / src.float().norm(dim=-1).clamp_min(1e-12))
    index.copy_(arg)


def _segment_sum_kernel(x, slots, sums, N, M, d, H, G, *_):
    for b in range(x.shape[0]):
        for h in range(H):
            sums[b, h].index_add_(0, slots[b, h // (H // G)], x[b, h].float())


def _flex_stand_in(q, k, v, block_mask=None, kernel_options=None):
    if torch.is_autocast_enabled("cpu"):  # flex_attention's autocast shim casts q, k, v first
        q, k, v = (t.to(torch.get_autocast_dtype("cpu")) for t in (q, k, v))
    out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    lse = torch.empty(q.shape[:-1], dtype=torch.float32)  # the kernel's logsumexp, dropped by the wrapper
    del lse
    return out


@pytest.fixture
def gpu_path(monkeypatch):
    """The merging primitives on their Triton path (kernels stood in) and flex with a stand-in kernel."""
    pytest.importorskip("triton")
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # lets the kernel path accept CPU tensors
    tm = kernels.triton_merge()
    monkeypatch.setattr(tm, "_best_match_kernel", _Launch(_best_match_kernel))
    monkeypatch.setattr(tm, "_segment_sum_kernel", _Launch(_segment_sum_kernel))
    monkeypatch.setattr(blocksparse, "_flex_fn", lambda device_type: _flex_stand_in)


@pytest.fixture
def dense_best_match(monkeypatch):
    """``best_match`` on its torch path without the chunk budget: one src x dst similarity matrix."""
    original = merging.best_match

    def dense(src, cand, need_score=True, chunk_elems=None):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(kernels.ENV_VAR, "torch")
            return original(src, cand, need_score, chunk_elems=1 << 62)

    monkeypatch.setattr(merging, "best_match", dense)


def _inputs(S=4, h=4, w=6, ps=5, H=4, d=8, autocast=False, same_q_heads=False, layer=0):
    """q, k (contiguous), v (a strided view of a qkv tensor, as in the model), the layout and its
    SeamShape (device "cpu": the CPU chunk budgets)."""
    g = torch.Generator().manual_seed(S * 100 + h * 10 + w)
    P = ps + h * w
    N = S * P
    q, k, v = torch.randn(1, N, 3, H, d, generator=g).permute(2, 0, 3, 1, 4).unbind(0)
    q = (q[:, :1].expand_as(q) if same_q_heads else q).contiguous()
    k = k.contiguous()
    x_norm = torch.randn(1, N, H * d, generator=g)
    shape = MM.SeamShape(frames=S, tokens_per_frame=P, patch_h=h, patch_w=w, patch_start=ps, heads=H,
                         head_dim=d, elem_bytes=4, layer=layer, depth=4, device="cpu")
    if autocast:
        v = v.to(torch.bfloat16)
        shape = dataclasses.replace(shape, elem_bytes=2, qk_elem_bytes=4, norm_elem_bytes=4, autocast=True)
    layout = AttentionLayout(frames=S, tokens_per_frame=P, patch_h=h, patch_w=w, patch_start=ps, layer=layer,
                             x_norm=x_norm, depth=shape.depth)
    return q, k, v, layout, shape


def _measure(fn, q, k, v, layout, autocast: bool) -> tuple[LiveBytes, torch.Tensor]:
    """The second call's allocations (the first fills the methods' shape caches)."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with torch.no_grad(), ctx:
        fn(q, k, v, layout)
        gc.collect()
        live = LiveBytes(record=True)
        LIVE[0] = live
        with live:
            out = fn(q, k, v, layout)
    return live, out


def _compare(params, make, **kw) -> tuple[float, float, dict[str, float]]:
    """(measured peak minus the modelled output, the model's total less its cached terms, the terms)."""
    q, k, v, layout, shape = _inputs(**kw)
    live, _ = _measure(make(params), q, k, v, layout, kw.get("autocast", False))
    terms = MM.seam_peak(params, shape)
    cached = sum(b for name, b in terms.items() if name.startswith("cached:"))
    return live.peak - MM.output_bytes(shape), MM.seam_total(terms) - cached, terms


CASES = {
    "plain": (PlainParams(), make_plain, {}),
    "plain, autocast": (PlainParams(), make_plain, {"autocast": True}),
    "tome": (ToMeParams(), make_tome, {}),
    "tome, top-r of the A half (argsort)": (ToMeParams(tome_ratio=0.3), make_tome, {"S": 3, "h": 5, "w": 3}),
    "tome, proportional attention": (ToMeParams(prop_attn=True), make_tome, {}),
    "tome, autocast": (ToMeParams(prop_attn=True), make_tome, {"autocast": True}),
    "fastvggt": (FastVGGTParams(), make_fastvggt, {}),
    "fastvggt, half the src": (FastVGGTParams(fv_ratio=0.5), make_fastvggt, {"S": 3, "h": 5, "w": 3}),
    "fastvggt, autocast": (FastVGGTParams(), make_fastvggt, {"autocast": True}),
    "httm, one head group": (HTTMParams(n_s=8, n_t=2, head_groups=1), make_httm, {}),
    "httm, head-wise": (HTTMParams(n_s=8, n_t=2, head_groups=4, outlier_frac=0.25), make_httm,
                        {"same_q_heads": True}),
    "httm, groups of two heads": (HTTMParams(n_s=8, n_t=2, head_groups=2, outlier_frac=0.25), make_httm,
                                  {"same_q_heads": True, "S": 3, "h": 5, "w": 3}),
    "httm, autocast": (HTTMParams(n_s=8, n_t=2, head_groups=2, outlier_frac=0.25), make_httm,
                       {"same_q_heads": True, "autocast": True}),
    "avggt, frame attention": (AVGGTParams(frame_layers=1), make_avggt, {}),
    "avggt, frame attention, autocast": (AVGGTParams(frame_layers=1), make_avggt, {"autocast": True}),
    "avggt, subsampled": (AVGGTParams(frame_layers=0), make_avggt, {}),
    "avggt, subsampled, autocast": (AVGGTParams(frame_layers=0), make_avggt, {"autocast": True}),
    "avggt, subsampled, no diagonal": (AVGGTParams(frame_layers=0, keep_diagonal=False), make_avggt,
                                       {"S": 3, "h": 5, "w": 3}),
    "blocksparse, gather": (BlockSparseParams(bs_q_block=16, bs_k_block=8, bs_backend="gather"),
                            make_blocksparse, {}),
    "blocksparse, flex": (BlockSparseParams(bs_q_block=16, bs_k_block=8, bs_backend="flex"),
                          make_blocksparse, {}),
    "blocksparse, gather, autocast": (BlockSparseParams(bs_q_block=16, bs_k_block=8, bs_backend="gather"),
                                      make_blocksparse, {"autocast": True}),
    "blocksparse, flex, autocast": (BlockSparseParams(bs_q_block=16, bs_k_block=8, bs_backend="flex"),
                                    make_blocksparse, {"autocast": True}),
    "blocksparse, gather, cumulative-mass cut": (
        BlockSparseParams(bs_q_block=16, bs_k_block=8, bs_backend="gather", bs_cdf=0.5),
        make_blocksparse, {}),
    "spark3r, merged queries over pruned keys (low tier)": (Spark3RParams(), make_spark3r, {}),
    "spark3r, sensitive layer": (Spark3RParams(), make_spark3r, {"layer": 2}),
    "spark3r, two group shapes": (Spark3RParams(sp_group_frames=3, sp_q_merge=0.25), make_spark3r,
                                  {"S": 5, "h": 5, "w": 3}),
    "spark3r, keys pruned only": (Spark3RParams(sp_q_merge=0.0), make_spark3r, {}),
    "spark3r, queries merged only": (Spark3RParams(sp_kv_prune=0.0, sp_schedule="constant"), make_spark3r,
                                     {}),
    "spark3r, autocast": (Spark3RParams(), make_spark3r, {"autocast": True, "layer": 3}),
    "blocksparse, flex, no dense special": (
        BlockSparseParams(bs_q_block=16, bs_k_block=8, bs_backend="flex", bs_dense_special=False),
        make_blocksparse, {"S": 3, "h": 5, "w": 3}),
}


# ----------------------------------------------------------------------------- the methods' models


@pytest.mark.parametrize("case", list(CASES))
def test_a_methods_model_equals_the_bytes_its_code_allocates(gpu_path, case):
    params, make, kw = CASES[case]
    measured, model, terms = _compare(params, make, **kw)
    assert measured == model, f"{case}: measured {measured:.0f} B, model {model:.0f} B; terms {terms}"


def test_chunked_gathers_and_deviations_are_modelled_chunk_by_chunk(gpu_path, monkeypatch):
    monkeypatch.setitem(merging.GATHER_CHUNK_ELEMS, "cpu", 3000)  # several blocks per gather, several gathers
    monkeypatch.setattr(httm, "DEV_CHUNK_ELEMS", 300)
    measured, model, _ = _compare(HTTMParams(n_s=8, n_t=2, head_groups=4, outlier_frac=0.25), make_httm,
                                  same_q_heads=True)
    assert measured == model
    monkeypatch.setattr(avggt, "KEY_CHUNK_ELEMS", 4000)  # query frames in chunks
    monkeypatch.setattr(blocksparse, "GATHER_CHUNK_ELEMS", 5000)
    for params, make in ((AVGGTParams(frame_layers=0), make_avggt),
                         (BlockSparseParams(bs_q_block=16, bs_k_block=8, bs_backend="gather"),
                          make_blocksparse)):
        measured, model, _ = _compare(params, make)
        assert measured == model, type(params).__name__


@pytest.mark.parametrize("autocast", [False, True])
def test_the_dense_similarity_variant_equals_a_one_shot_torch_best_match(gpu_path, dense_best_match,
                                                                        autocast):
    params = MM.DenseSimilarity(FastVGGTParams())
    measured, model, terms = _compare(params, lambda p: make_fastvggt(p.base), S=8, h=8, w=8,
                                      autocast=autocast)
    assert measured == model
    assert MM.largest(terms) == "similarity (src x dst)"  # the matrix makes this peak


def test_a_similarity_counted_per_head_or_in_another_dtype_would_not_match(gpu_path, dense_best_match):
    params = MM.DenseSimilarity(FastVGGTParams())
    measured, model, terms = _compare(params, lambda p: make_fastvggt(p.base), S=8, h=8, w=8)
    sim = terms["similarity (src x dst)"]
    heads = 4
    assert measured == model
    assert measured != model + (heads - 1) * sim  # one matrix per head: it is shared (one decision row)
    assert measured != model - sim / 2  # bf16: float32 without autocast
    assert measured != model + sim  # twice (e.g. a copy for the max)


def test_the_cached_terms_are_what_the_method_caches_keep_after_a_first_call(gpu_path):
    q, k, v, layout, shape = _inputs()
    for params, make, clear in (
        (ToMeParams(), make_tome, [tome_module._tome_partition]),
        (HTTMParams(n_s=8, n_t=2, head_groups=4), make_httm, [httm._temporal_blocks, httm._block_partition]),
    ):
        for cache in clear:
            cache.cache_clear()
        with torch.no_grad(), LiveBytes() as live:
            out = make(params)(q, k, v, layout)
        cached = sum(b for name, b in MM.seam_peak(params, shape).items() if name.startswith("cached:"))
        assert live.current - out.nbytes == cached, type(params).__name__


def test_plain_attention_has_no_term_quadratic_in_tokens():
    s = MM.SeamShape.gpu(VGGT_1B, 100)
    terms = MM.plain_bytes(s)
    N, C, H = s.tokens, VGGT_1B.embed_dim, VGGT_1B.num_heads
    assert terms == {"q in bf16 (autocast copy)": N * C * 2, "k in bf16 (autocast copy)": N * C * 2,
                     "logsumexp (float32)": H * N * 4}
    bf16_model = dataclasses.replace(s, qk_elem_bytes=0, norm_elem_bytes=0, autocast=False)
    assert MM.plain_bytes(bf16_model) == {"logsumexp (float32)": H * N * 4}  # nothing but the fused kernel's
    double = MM.SeamShape.gpu(VGGT_1B, 200)
    assert MM.seam_total(MM.plain_bytes(double)) == 2 * MM.seam_total(terms)


def test_a_method_without_its_own_model_is_not_modelled():
    @dataclasses.dataclass(frozen=True)
    class Child(HTTMParams):
        bits: int = 8

    @dataclasses.dataclass(frozen=True)
    class Bare:
        pass

    s = MM.SeamShape.gpu(VGGT_1B, 100)
    assert MM.seam_peak(Child(), s) is None and MM.seam_peak(Bare(), s) is None
    assert MM.seam_peak(HTTMParams(), s) is not None
    wall = MM.memory_wall({"bare": Bare()}, [100], VGGT_1B, MM.HEIGHT, MM.WIDTH)
    row = wall.iloc[0]
    assert row["largest"] == MM.NOT_MODELLED and math.isnan(row["peak_gb"]) and row["fits"] is None


# ----------------------------------------------------------------------------- calibrated, stateful methods


@pytest.mark.parametrize("backend", ["gather", "flex"])
@pytest.mark.parametrize("autocast", [False, True])
def test_hess_equals_the_bytes_its_code_allocates_at_its_calibrated_largest_budget(gpu_path, backend,
                                                                                     autocast):
    """HeSS's top-k is as wide as its largest head budget, which the calibration decides: the model
    given that budget matches to the byte."""
    params = HeSSParams(hess_q_block=16, hess_k_block=8, hess_backend=backend)
    q, k, v, layout, shape = _inputs(autocast=autocast, layer=2)
    attention = HeSSAttention(params)

    def probe(fn):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for layer in range(shape.depth):
                fn(q, k, v, dataclasses.replace(layout, layer=layer))

    attention.calibrate(probe)
    largest = int(attention.head_budgets(2, layout).max())
    live, _ = _measure(attention, q, k, v, layout, autocast)
    terms = params.seam_peak_bytes(shape, largest_budget=largest)
    cached = sum(b for name, b in terms.items() if name.startswith("cached:"))
    assert live.peak - MM.output_bytes(shape) == MM.seam_total(terms) - cached


def test_hess_without_a_calibration_is_modelled_at_the_cap_of_its_head_budgets():
    s = MM.SeamShape.gpu(VGGT_1B, 100, layer=23)
    nk = -(-s.frames * (s.tokens_per_frame - s.patch_start) // HeSSParams().hess_k_block)
    assert HeSSParams().seam_peak_bytes(s) == HeSSParams().seam_peak_bytes(s, largest_budget=nk)
    uniform = HeSSParams(hess_allocation="uniform").seam_peak_bytes(s)
    assert uniform == HeSSParams().seam_peak_bytes(s, largest_budget=nk - int(0.75 * nk))
    assert MM.seam_total(uniform) < MM.seam_total(HeSSParams().seam_peak_bytes(s))


LITE = LiteVGGTParams(lv_recompute_layers=(0, 2))
SMALL = {"S": 3, "h": 5, "w": 3}
LITE_CASES = {
    # name: (params, layers called first, the measured call's layer, _inputs keywords)
    "reuse": (LITE, [0], 1, {}),
    "recompute": (LITE, [0, 1], 2, {}),
    "new forward": (LITE, [0, 1], 0, {}),
    "new forward, autocast": (LITE, [0, 1], 0, {"autocast": True}),
    "recompute, autocast": (LITE, [0, 1], 2, {"autocast": True}),
    "new forward, projected": (dataclasses.replace(LITE, lv_proj_dim=8), [0, 1], 0, {}),
    "new forward, projected, autocast": (dataclasses.replace(LITE, lv_proj_dim=8), [0, 1], 0,
                                         {"autocast": True}),
    "new forward, half merged, special targets": (
        dataclasses.replace(LITE, lv_ratio=0.5, lv_special_targets=True), [0, 1], 0, SMALL),
    "new forward, nothing merged": (dataclasses.replace(LITE, lv_ratio=0.0), [0, 1], 0, SMALL),
    "new forward, nothing protected": (dataclasses.replace(LITE, lv_protect_frac=0.0), [0, 1], 0, SMALL),
}


def _measure_after(fn, q, k, v, layout, layers, layer, autocast, merge=None):
    """A call at ``layer`` after calls at ``layers``, the tracker on from the first call: what the
    earlier calls left in the method's caches (and this call frees) is counted. ``merge``: stands in
    for litevggt's shared_merge_attention."""
    litevggt.projection.cache_clear()  # made inside the tracked calls
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    live = LiveBytes(record=True)
    LIVE[0] = live
    with torch.no_grad(), ctx, live, pytest.MonkeyPatch.context() as mp:
        for earlier in layers:
            fn(q, k, v, dataclasses.replace(layout, layer=earlier))
        gc.collect()
        live.reset_peak()
        if merge is not None:
            mp.setattr(litevggt, "shared_merge_attention", merge)
        out = fn(q, k, v, dataclasses.replace(layout, layer=layer))
    return live, out


@pytest.mark.parametrize("case", list(LITE_CASES))
def test_litevggt_equals_the_bytes_its_calls_allocate_with_their_cache(gpu_path, case):
    """The cache the earlier calls of a forward left (partitions, slot map, counts, unmerge index, the
    projection) is part of the model's terms here: the tracker saw it made."""
    params, layers, layer, kw = LITE_CASES[case]
    q, k, v, layout, shape = _inputs(**kw)
    live, _ = _measure_after(make_litevggt(params), q, k, v, layout, layers, layer, kw.get("autocast", False))
    terms = MM.seam_peak(params, dataclasses.replace(shape, layer=layer))
    assert live.peak - MM.output_bytes(shape) == MM.seam_total(terms), terms


@pytest.mark.parametrize("case", [c for c in LITE_CASES if LITE_CASES[c][2] in LITE.lv_recompute_layers])
def test_litevggts_matching_before_its_merge_equals_its_replay(gpu_path, case):
    """With the merge stood in by one that allocates nothing, the call's peak is its matching's (the
    geometry scores, roles, partitions and assignment), which the full call's peak may hide."""
    params, layers, layer, kw = LITE_CASES[case]
    q, k, v, layout, shape = _inputs(**kw)
    live, _ = _measure_after(make_litevggt(params), q, k, v, layout, layers, layer, kw.get("autocast", False),
                             merge=lambda q, k, v, sm, rec: q)
    led = MM.Ledger()
    matching_bytes(led, dataclasses.replace(shape, layer=layer), params)
    assert live.peak == led.peak


# ----------------------------------------------------------------------------- the forward's model


def _small_model(lean: bool):
    cfg = VGGTConfig(img_size=16, patch_size=4, embed_dim=32, depth=6, num_heads=4, dino_depth=1,
                     dino_num_heads=4,
                     intermediate_layer_idx=default_intermediate_layers(6), camera_trunk_depth=1,
                     camera_num_heads=4, dpt_features=8, dpt_out_channels=(8, 8, 8, 8))
    torch.manual_seed(0)
    return cfg, build_vggt(cfg, lean=lean)


@pytest.mark.parametrize("lean", [True, False])
def test_the_forward_model_equals_the_aggregators_allocations(lean):
    """float32 on CPU (no autocast: every element 4 bytes, lean layers kept in float32). At every
    global call the bytes alive are the model's terms at the call (less the output, not yet made,
    and what existed before: weights, frames); the aggregator's peak is the largest moment."""
    cfg, model = _small_model(lean)
    S, height, width = 3, 16, 20
    images = torch.rand(1, S, 3, height, width)
    keep = model.layers_needed(("camera", "depth")) if lean else None
    live = LiveBytes()
    seen = {}

    def fn(q, k, v, layout):
        seen[layout.layer] = live.current
        return sdpa_attention(q, k, v, layout)

    with torch.no_grad():
        model.aggregator(images, attention_fn=fn, keep_layers=keep)  # RoPE tables cached
        gc.collect()
        with live:
            model.aggregator(images, attention_fn=fn, keep_layers=keep)
    fw = MM.Forward(cfg, S, height, width, lean=lean, autocast=False, elem=4, device="cpu")
    held = fw.persistent()
    before = held["weights"] + held["input frames (float32)"] + held[
        "outputs held by the harness (2 x depth + confidence)"]
    for layer in range(cfg.depth):
        terms = MM.model_peak_bytes(cfg, S, height, width, lean=lean, layer=layer, autocast=False, elem=4,
                                    device="cpu")
        assert seen[layer] == sum(terms.values()) - terms["attention output"] - before, layer
    stages = MM.stage_peaks(cfg, S, height, width, lean=lean, autocast=False, elem=4, device="cpu")
    del stages["heads"]  # the aggregator only
    calls = [sum(fw.persistent().values()) + sum(fw.at_call(i).values())
             + MM.seam_total(MM.plain_bytes(fw.seam_shape(i))) for i in range(cfg.depth)]
    assert live.peak == max(*stages.values(), *calls) - before


def test_the_dino_stage_equals_the_patch_embeddings_allocations():
    cfg, model = _small_model(True)
    images = torch.rand(1, 3, 3, 16, 20)
    with torch.no_grad():
        model.aggregator.embed(images)
        with LiveBytes() as live:
            model.aggregator.embed(images)
    fw = MM.Forward(cfg, 3, 16, 20, autocast=False, elem=4, device="cpu")
    held = fw.persistent()
    before = held["weights"] + held["input frames (float32)"] + held[
        "outputs held by the harness (2 x depth + confidence)"]
    assert live.peak == fw.dino() - before


def test_the_weights_term_counts_every_parameter_of_the_model_the_harness_builds():
    model = build_vggt("vggt-1b", device="meta")
    params = sum(p.numel() for p in model.parameters())
    terms = MM.model_peak_bytes(VGGT_1B, 100, MM.HEIGHT, MM.WIDTH)
    assert terms["weights"] == pytest.approx(4 * params, abs=1e3)  # + the two 3-float normalization buffers
    assert 4.5e9 < terms["weights"] < 5.1e9  # VGGT-1B without its track head, float32


# ----------------------------------------------------------------------------- a method changing the model


TINY_FRAMES, TINY_H, TINY_W = 4, 28, 42  # vggt-tiny: 14 px patches, 2 x 3 patches + 5 special tokens


def _calibration_run(images):
    def run(m):
        with torch.inference_mode():
            m(images, heads=())

    return run


@pytest.fixture(scope="module")
def quantized():
    """vggt-tiny, its QuantVGGT copy (one reconstruction epoch: the learned factors had gradients) and
    the tracker of the transform."""
    torch.manual_seed(0)
    model = build_vggt("vggt-tiny")
    images = torch.rand(1, TINY_FRAMES, 3, TINY_H, TINY_W, generator=torch.Generator().manual_seed(1))
    params = QuantVGGTParams(qv_calib_epochs=1)
    gc.collect()
    with LiveBytes() as live:
        copy = quantize_vggt(model, _calibration_run(images), params)
        gc.collect()
    return model, copy, params, live


def test_quantvggts_held_terms_are_the_tensors_of_its_transformed_copy(quantized):
    """The copy beside the original: its parameters (every weight again, float) and buffers (signs);
    the reconstruction frees its gradients, and the transform keeps nothing else but the copy's
    deep-copied RoPE tables and normalization constants (under a KB here)."""
    model, copy, params, live = quantized
    fw = MM.Forward(model.config, TINY_FRAMES, TINY_H, TINY_W, autocast=False, elem=4, device="cpu")
    held = MM.seam_total(params.model_extra_bytes(fw).held)
    assert all(t.grad is None for t in copy.parameters())
    assert held == sum(t.nbytes for t in [*copy.parameters(), *copy.buffers()])
    assert 0 <= live.current - held < 1024
    assert held > fw.persistent()["weights"]  # every weight again: fake quantization stores floats


def _mlp_linear_peaks(mlp, fw, width: int, autocast: bool) -> tuple[int, int, torch.Tensor]:
    """fc1 on a float32 input [1, tokens, width], then fc2 on its GELU output, under bf16 autocast or
    not: (fc1's LiveBytes peak, fc2's peak plus its input, which the fc2 moment counts, fc2's output)."""
    x = torch.randn(1, fw.tokens, width)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        mlp.fc1(x)
        with LiveBytes() as fc1:
            hidden = mlp.fc1(x)
        gelu = mlp.act(hidden)
        del hidden
        with LiveBytes() as fc2:
            out = mlp.fc2(gelu)
    return fc1.peak, fc2.peak + gelu.nbytes, out


@pytest.mark.parametrize("autocast", [False, True])
def test_quantvggts_fake_quantized_mlp_linears_equal_their_allocations(quantized, autocast):
    """fc1 on norm2's float32 output, fc2 on the GELU output (bf16 under autocast): the Hadamard
    transform, the per-token quantization and the linear, each a moment of the model."""
    model, copy, params, _ = quantized
    fw = MM.Forward(model.config, TINY_FRAMES, TINY_H, TINY_W, autocast=autocast, elem=2 if autocast else 4,
                    device="cpu")
    fc1_moment, fc2_moment = params.model_extra_bytes(fw).moments.values()
    fc1, fc2, _ = _mlp_linear_peaks(copy.aggregator.global_blocks[-1].mlp, fw, model.config.embed_dim,
                                    autocast)
    assert fc1 == MM.seam_total(fc1_moment.terms)
    assert fc2 == MM.seam_total(fc2_moment.terms)
    assert MM.largest(fc2_moment.terms).startswith("fc2 ")  # its temporaries, not the GELU output


def _modelled_aggregator_peaks(cfg, S: int, height: int, width: int,
                               params) -> tuple[dict[str, float], float]:
    """A lean float32 CPU aggregator forward of a changed model whose copy's weights are not cached:
    (the model's moments of ``params``' model_extra_bytes, the largest other modelled moment: stages
    and global calls), each less what is alive before the aggregator runs (weights, input frames and
    the held outputs), so that they compare with a LiveBytes peak taken around the aggregator."""
    fw = MM.Forward(cfg, S, height, width, lean=True, autocast=False, elem=4, device="cpu",
                    weight_cache=False)
    held = fw.persistent()
    before = held["weights"] + held["input frames (float32)"] + held[
        "outputs held by the harness (2 x depth + confidence)"]
    moments = {name: sum(held.values()) + m.forward + MM.seam_total(m.terms) - before
               for name, m in params.model_extra_bytes(fw).moments.items()}
    stages = MM.stage_peaks(cfg, S, height, width, lean=True, autocast=False, elem=4, device="cpu",
                            weight_cache=False)
    del stages["heads"]
    calls = [sum(held.values()) + sum(fw.at_call(i).values())
             + MM.seam_total(MM.plain_bytes(fw.seam_shape(i))) for i in range(cfg.depth)]
    return moments, max(*stages.values(), *calls) - before


def test_the_quantized_aggregator_peaks_at_the_modelled_fc2_moment():
    """float32 on CPU, as the forward's own test: the quantized copy's aggregator holds at most what
    the model's largest moment says, and fc2's fake quantization is that moment."""
    cfg, model = _small_model(True)
    S, height, width = 3, 16, 20
    images = torch.rand(1, S, 3, height, width)
    params = QuantVGGTParams(qv_calib_epochs=1)
    copy = quantize_vggt(model, _calibration_run(images), params)
    keep = copy.layers_needed(("camera", "depth"))
    with torch.no_grad():
        copy.aggregator(images, attention_fn=sdpa_attention, keep_layers=keep)
        gc.collect()
        with LiveBytes() as live:
            copy.aggregator(images, attention_fn=sdpa_attention, keep_layers=keep)
    moments, others = _modelled_aggregator_peaks(cfg, S, height, width, params)
    assert live.peak == moments[f"MLP fc2, fake-quantized, layer {cfg.depth - 1}"]
    assert live.peak > others


@pytest.fixture(scope="module")
def fp8_copied():
    """vggt-tiny (widths 64, 192, 256: multiples of 16, as ``_scaled_mm`` needs), LiteVGGT's FP8 copy
    of it (:func:`fp8_copy`, what ``fp8_transform`` returns after its CUDA check) and the tracker of
    the copying."""
    torch.manual_seed(0)
    model = build_vggt("vggt-tiny")
    gc.collect()
    with LiveBytes() as live:
        copy = litevggt.fp8_copy(model)
        gc.collect()
    return model, copy, live


def test_litevggts_fp8_held_terms_are_the_tensors_of_its_copy(fp8_copied):
    """The FP8 copy beside the original: every parameter again (float) with the model's buffers, and
    each FP8Linear's e4m3 weight and float32 scale; nothing else but the copy's deep-copied RoPE
    tables and normalization constants (under a KB here). Without lv_fp8 nothing is added."""
    model, copy, live = fp8_copied
    fw = MM.Forward(model.config, TINY_FRAMES, TINY_H, TINY_W, autocast=False, elem=4, device="cpu")
    extra = LiteVGGTParams(lv_fp8=True).model_extra_bytes(fw)
    held = MM.seam_total(extra.held)
    fp8 = [m for m in copy.modules() if isinstance(m, litevggt.FP8Linear)]
    assert len(fp8) == 3 * 2 * model.config.depth
    assert not any(t.requires_grad for t in copy.parameters()) and not extra.weight_cache
    assert held == sum(t.nbytes for t in [*copy.parameters(), *copy.buffers()])
    assert extra.held["FP8 copy: e4m3 weights (1 byte each)"] == sum(m.weight_fp8.nbytes for m in fp8)
    assert 0 <= live.current - held < 1024
    assert LiteVGGTParams().model_extra_bytes(fw) == MM.ModelExtra()  # weight_cache True


@pytest.mark.parametrize("autocast", [False, True])
def test_litevggts_fp8_mlp_linears_equal_their_allocations(fp8_copied, autocast):
    """fc1 on norm2's float32 output, fc2 on the GELU output (bf16 under autocast), each an FP8Linear
    (torch._scaled_mm runs on the CPU): x's float32 copy and e4m3 cast, the GEMM's output, the bias
    cast and the sum, each a moment of the model."""
    model, copy, _ = fp8_copied
    fw = MM.Forward(model.config, TINY_FRAMES, TINY_H, TINY_W, autocast=autocast, elem=2 if autocast else 4,
                    device="cpu")
    fc1_moment, fc2_moment = LiteVGGTParams(lv_fp8=True).model_extra_bytes(fw).moments.values()
    mlp = copy.aggregator.global_blocks[-1].mlp
    assert isinstance(mlp.fc1, litevggt.FP8Linear) and isinstance(mlp.fc2, litevggt.FP8Linear)
    fc1, fc2, out = _mlp_linear_peaks(mlp, fw, model.config.embed_dim, autocast)
    assert out.dtype == (torch.bfloat16 if autocast else torch.float32)
    assert fc1 == MM.seam_total(fc1_moment.terms)
    assert fc2 == MM.seam_total(fc2_moment.terms)
    assert MM.largest(fc2_moment.terms) == "fc2 x in float32 (scaled, clamped)"


def test_the_fp8_aggregator_peaks_at_the_modelled_fc2_moment():
    """float32 on CPU, as the forward's own test: LiteVGGT's FP8 copy's aggregator (plain attention at
    the seam: the copy is the model term) holds at most what the model's largest moment says, and
    fc2's FP8 cast of its 4C-wide input is that moment."""
    cfg, model = _small_model(True)
    S, height, width = 2, 8, 12  # 22 tokens: the CPU's _scaled_mm is slow (about 10 M MAC/s)
    images = torch.rand(1, S, 3, height, width)
    keep = model.layers_needed(("camera", "depth"))
    with torch.no_grad():
        model.aggregator(images, attention_fn=sdpa_attention, keep_layers=keep)  # RoPE tables cached
        copy = litevggt.fp8_copy(model)  # with them: no warm-up forward of the (slow on CPU) FP8 copy
        gc.collect()
        with LiveBytes() as live:
            copy.aggregator(images, attention_fn=sdpa_attention, keep_layers=keep)
    moments, others = _modelled_aggregator_peaks(cfg, S, height, width, LiteVGGTParams(lv_fp8=True))
    assert live.peak == moments[f"MLP fc2, FP8, layer {cfg.depth - 1}"]
    assert live.peak > others


def test_quantvggt_httm_counts_httms_seam_and_quantvggts_model():
    s = MM.SeamShape.gpu(VGGT_1B, 100, layer=23)
    stacked = QuantHTTMParams(n_s=128, n_t=30)
    assert MM.seam_peak(stacked, s) == MM.seam_peak(stacked.part(HTTMParams), s)
    assert MM.seam_peak(QuantVGGTParams(), s) == MM.plain_bytes(s)
    fw = MM.Forward(VGGT_1B, 100, MM.HEIGHT, MM.WIDTH)
    assert stacked.model_extra_bytes(fw) == QuantVGGTParams().model_extra_bytes(fw)
    assert not QuantVGGTParams().model_extra_bytes(fw).weight_cache  # the copy's weights do not require grad


# ----------------------------------------------------------------------------- the wall at VGGT-1B


@pytest.fixture(scope="module")
def wall(model_data):
    return pd.DataFrame(model_data["rows"])


def test_every_registered_vggt_method_has_a_modelled_row(wall):
    registry.load_builtins()
    modelled = set(wall[wall["fits"].notna()]["method"])
    assert set(registry.method_names("vggt")) <= modelled


def test_quantvggts_rows_hold_a_second_copy_of_the_weights_and_peak_at_fc2(wall, model_data):
    last = wall[wall["frames"] == 1000].set_index("method")
    weights = MM.model_peak_bytes(VGGT_1B, 1000, MM.HEIGHT, MM.WIDTH)["weights"] / MM.GB
    for method in ("quantvggt", "quantvggt_httm"):
        assert last.loc[method, "model_extra_gb"] == pytest.approx(weights, rel=0.01)
        assert last.loc[method, "peak_at"] == "MLP fc2, fake-quantized, layer 23"
        assert last.loc[method, "peak_gb"] > last.loc["vggt", "peak_gb"] + weights
    assert (wall[wall["method"] == "vggt"]["model_extra_gb"] == 0).all()
    assert "Fake quantization holds float weights" in W.render(model_data, None)


def test_litevggts_fp8_row_holds_the_weights_again_and_their_e4m3_copy(wall, model_data):
    """``litevggt (lv_fp8)``: the suite's LiteVGGT with lv_fp8; its copy is every weight again (float32)
    plus 1 byte per weight and a 4-byte scale of the 48 blocks' qkv, fc1, fc2; it peaks at fc2's
    float32 copy of its 4C-wide input."""
    assert MM.gpu_methods(["litevggt"]) == {"litevggt": LiteVGGTParams(lv_ratio=1.0),
                                            "litevggt (lv_fp8)": LiteVGGTParams(lv_ratio=1.0, lv_fp8=True)}
    last = wall[wall["frames"] == 1000].set_index("method")
    row = last.loc["litevggt (lv_fp8)"]
    weights = MM.model_peak_bytes(VGGT_1B, 1000, MM.HEIGHT, MM.WIDTH)["weights"]
    C, depth = VGGT_1B.embed_dim, VGGT_1B.depth
    e4m3 = 2 * depth * (3 * C * C + 2 * C * 4 * C)
    assert row["model_extra_gb"] * MM.GB == pytest.approx(weights + e4m3 + 2 * depth * 3 * 4)
    assert 0.55e9 < e4m3 < 0.56e9
    assert row["peak_at"] == "MLP fc2, FP8, layer 23"
    assert row["largest"] == "fc2 x in float32 (scaled, clamped)"
    assert row["peak_gb"] > last.loc["litevggt", "peak_gb"] + weights / MM.GB
    assert (f"its copy holds {row['model_extra_gb']:.1f} GB and its peak, {row['peak_gb']:.1f} GB, comes at "
            "MLP fc2, FP8") in W.render(model_data, None)


def test_the_wall_grows_with_frames_for_every_modelled_method(wall):
    modelled = wall[wall["fits"].notna()]
    assert {"vggt", "tome", "fastvggt", "httm", "blocksparse", "avggt", "litevggt", "hess", "spark3r",
            "quantvggt", "quantvggt_httm"} <= set(modelled["method"])
    for method, rows in modelled.groupby("method"):
        rows = rows.sort_values("frames")
        for col in ("tokens", "model_gb", "peak_gb"):
            assert rows[col].is_monotonic_increasing and rows[col].is_unique, (method, col)


def test_the_wall_uses_the_gpu_preset_settings_and_lists_the_dense_variant(wall):
    methods = MM.gpu_methods(["httm", "avggt", "fastvggt"])
    assert (methods["httm"].n_s, methods["httm"].n_t, methods["avggt"].frame_layers) == (128, 30, 8)
    assert list(methods) == ["httm", "avggt", "fastvggt", "fastvggt (dense similarity)"]
    assert set(wall["method"]) >= {"vggt", "fastvggt (dense similarity)"}


def test_fastvggts_similarity_at_1000_frames_is_its_src_times_dst_counts(wall):
    """By hand: frame 0's 1036 patches and one patch per 2x2 cell of every later frame are the dst; the
    other patches of frames >= 1 are src except the salient ones (every 10th token); one bf16 matrix
    (the matmul's dtype under autocast) for the one decision row, not one per head."""
    S, h, w, ps = 1000, 28, 37, 5
    P = ps + h * w
    N = S * P
    cells = math.ceil(h / 2) * math.ceil(w / 2)
    dst = h * w + (S - 1) * cells
    is_src = torch.zeros(S, P, dtype=torch.bool)
    is_src[1:, ps:] = ~cell_dst_mask(S - 1, h, w, FastVGGTParams().merge_seed).view(S - 1, h * w)
    salient = torch.arange(0, N, N // int(0.1 * N))[: int(0.1 * N)]
    src = int(is_src.sum()) - int(is_src.view(-1)[salient].sum())
    assert (dst, src) == (266_770, 692_371)
    terms = MM.seam_peak(MM.DenseSimilarity(FastVGGTParams()), MM.SeamShape.gpu(VGGT_1B, S, layer=23))
    assert terms["similarity (src x dst)"] == src * dst * 2
    row = wall[(wall["method"] == "fastvggt (dense similarity)") & (wall["frames"] == S)].iloc[0]
    assert row["largest"] == "similarity (src x dst)" and row["largest_gb"] > 80 and not row["fits"]


def test_at_1000_frames_plain_lean_vggt_fits_and_block_sparse_does_not(wall):
    last = wall[wall["frames"] == 1000].set_index("method")
    assert last.loc["vggt", "fits"] and last.loc["httm", "fits"] and last.loc["fastvggt", "fits"]
    assert not last.loc["blocksparse", "fits"]
    official = MM.memory_wall({"vggt": PlainParams()}, [1000], VGGT_1B, MM.HEIGHT, MM.WIDTH, lean=False)
    assert not official.iloc[0]["fits"]  # every layer kept in float32: the official VGGT does not


def test_no_method_peaks_below_plain_attention(wall):
    plain = wall[wall["method"] == "vggt"].set_index("frames")["peak_gb"]
    for _, row in wall[wall["fits"].notna()].iterrows():
        assert row["peak_gb"] >= plain[row["frames"]] - 1e-9, row["method"]


# ----------------------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def model_data():
    """What ``python -m harness.metrics.memory_model --json`` prints, computed in this process."""
    return json.loads(json.dumps(MM.wall_data()))


def test_the_committed_page_matches_the_model(model_data):
    assert W.check(W.ROOT, model=model_data) == []
    assert W.main(["check"]) == W.EXIT_OK  # the command the docs name: runs the model in its own process


def test_check_finds_a_changed_number_and_build_restores_it(tmp_path, model_data):
    W.build(tmp_path, model=model_data)
    assert W.check(tmp_path, model=model_data) == []
    page = tmp_path / "memory-wall.md"
    text = page.read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| `vggt` |"))
    page.write_text(text.replace(row, row.replace("| yes |", "| **no** |")))
    drift = W.check(tmp_path, model=model_data)
    assert any(ln.startswith("-| `vggt` |") for ln in drift)
    assert {p.name for p in (tmp_path / "memory-wall").iterdir()} == {"memory-wall.png", "memory-wall.svg"}


def _gpu_run(run_dir):
    """A toy run of the gpu preset: vggt ok at 100 and 1000 frames, blocksparse out of memory at 1000."""
    suite = {"name": "vggt", "workload": "vggt", "reference": "vggt", "fixed": {},
             "sweep": {"frames": [100, 1000]},
             "methods": {"vggt": {}, "blocksparse": {}}, "regression": {},
             "parameters": {"workload": ["frames"], "common": ["device"],
                            "methods": {"vggt": [], "blocksparse": []}}}
    env = {"device_kind": "cuda", "torch": "2.14.1", "gpu_name": "NVIDIA H100 80GB HBM3",
           "git_commit": "abc1234", "git_dirty": False}
    w = RunWriter.create(run_dir, {"run_id": "gpu0", "suite": "vggt", "preset": "gpu",
                                   "created_at": "2026-12-01T10:00:00+00:00"}, suite, env, {})
    points = (("vggt", 100, C.OK, MEASURED_MB[0]), ("vggt", 1000, C.OK, MEASURED_MB[1]),
              ("blocksparse", 100, C.OK, 15_000.0), ("blocksparse", 1000, C.OOM, None))
    for method, frames, status, mb in points:
        row = {C.RUN_ID: "gpu0", C.SUITE: "vggt", C.HASH: f"{method}{frames}", C.WORKLOAD: "vggt",
               C.METHOD: method, C.PRESET: "gpu", C.STATUS: status, C.ERROR: None,
               C.STARTED_AT: "2026-12-01T10:00:00", C.ELAPSED_S: 1.0, "frames": frames, "device": "cuda",
               C.TORCH_PEAK_ALLOC_MB: mb, C.LAT_MEDIAN: 1000.0 if status == C.OK else None}
        w.append(row, [])
    return run_dir


MEASURED_MB = (11_500.0, 58_000.0)


def test_a_measured_run_is_merged_beside_the_model_and_kept_for_later_builds(tmp_path, model_data):
    root = tmp_path / "results"
    root.mkdir()
    W.build(root, _gpu_run(tmp_path / "run"), model=model_data)
    measured = json.loads((root / "memory-wall" / W.MEASURED_FILE).read_text())
    in_gb = [round(mb * 2**20 / 1e9, 3) for mb in MEASURED_MB]
    assert measured["peak_gb"]["vggt"] == {"100": in_gb[0], "1000": in_gb[1]}
    assert measured["peak_gb"]["blocksparse"]["1000"] == C.OOM
    text = (root / "memory-wall.md").read_text()
    assert "NVIDIA H100 80GB HBM3" in text and "`abc1234`" in text and "2026-12-01 10:00:00 UTC" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| `blocksparse` |"))
    assert "(oom)" in row and f"({in_gb[0]:.1f})" in text
    assert W.check(root, model=model_data) == []  # the committed measured.json keeps the page reproducible
    W.build(root, model=model_data)  # a later build without --measured keeps the measured part
    assert "NVIDIA H100 80GB HBM3" in (root / "memory-wall.md").read_text()


def test_the_page_without_a_measured_run_is_deterministic_and_undated(model_data):
    text = W.render(model_data, None)
    assert text == W.render(json.loads(json.dumps(model_data)), None)
    assert "UTC" not in text and "started" not in text


def test_a_run_without_the_memory_column_is_a_user_error(tmp_path, model_data):
    assert W.main(["build", "--root", str(tmp_path), "--measured", str(tmp_path / "nope")]) == W.EXIT_USER
