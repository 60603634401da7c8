"""ToMe and FastVGGT-style merging baselines at the global-attention seam."""

from __future__ import annotations

import os
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from merge_refs import fastvggt_labels, groups_of, merged_attention, tome_labels

from baselines.fastvggt import FastVGGTParams, cell_dst_mask, fastvggt_partition, make_fastvggt
from baselines.tome import ToMeParams, make_tome, tome_partition
from harness.methods.merging import SlotMap, assign, rows_gather
from harness.metrics.memory_model import WIDE_OUTPUT, SeamShape
from harness.models.seam import AttentionLayout, Recorder
from harness.params import describe
from harness.store.columns import METRIC_PREFIXES

S, PH, PW, PS = 4, 3, 5, 5  # odd patch grid; P = 20 is even (clean A/B pairs for ToMe)
P = PS + PH * PW
N = S * P
H, D, C = 4, 8, 16


def layout(frames=S, x_norm=None, rec=None, layer=0):
    return AttentionLayout(frames, P, PH, PW, PS, layer=layer, x_norm=x_norm, recorder=rec)


def rand(B=1, n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, n, D, generator=g) for _ in range(3))
    return q, k, v, torch.randn(B, n, C, generator=g)


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


SPECIAL = (torch.arange(N) % P) < PS


def test_param_names_are_distinct_and_documented():
    tome = {i.name for i in describe(ToMeParams)}
    fv = {i.name for i in describe(FastVGGTParams)}
    assert {"tome_ratio", "prop_attn", "start_layer"} <= tome
    assert {"fv_ratio", "salient_frac", "merge_seed", "start_layer"} <= fv
    assert not (tome | fv) & {"frames", "preset", "height", "width", "seed", "layer", "heads"}
    assert all(i.help for i in describe(ToMeParams) + describe(FastVGGTParams))
    assert not [n for n in tome | fv if n.startswith(METRIC_PREFIXES)]


# ------------------------------------------------------------------------- ToMe


def test_tome_ratio_zero_equals_plain_sdpa():
    q, k, v, _ = rand()
    out = make_tome(ToMeParams(tome_ratio=0.0))(q, k, v, layout())
    torch.testing.assert_close(out, sdpa(q, k, v), atol=1e-5, rtol=1e-5)


def duplicate_pairs(seed=0):
    """Every A token (even, not special) is an exact copy of its B neighbour (odd)."""
    q, k, v, _ = rand(seed=seed)
    a = torch.arange(0, N, 2)
    a = a[~SPECIAL[a]]
    for t in (q, k, v):
        t[:, :, a] = t[:, :, a + 1]
    return q, k, v


def test_tome_proportional_attention_is_exact_on_duplicates():
    q, k, v = duplicate_pairs()
    rec = Recorder()
    out = make_tome(ToMeParams(tome_ratio=0.5, prop_attn=True))(q, k, v, layout(rec=rec))
    torch.testing.assert_close(out, sdpa(q, k, v), atol=1e-5, rtol=1e-5)
    n_pairs = S * 7  # even patch positions 6..18 of every frame
    assert rec.counters["tokens_kv"] == (N - n_pairs) * H  # every pair really was merged


def test_tome_without_proportional_attention_is_not_exact_on_duplicates():
    q, k, v = duplicate_pairs()
    out = make_tome(ToMeParams(tome_ratio=0.5, prop_attn=False))(q, k, v, layout())
    assert not torch.allclose(out, sdpa(q, k, v), atol=1e-3)


def test_tome_merges_at_most_half_and_protects_special_tokens():
    part = tome_partition(S, P, PS, 0.5, True)
    a_count = int(((torch.arange(N) % 2 == 0) & ~SPECIAL).sum())
    assert part.n_slots == N - a_count
    _, k, _, _ = rand()
    slot = assign(rows_gather(k.mean(1)), 1, part).slot_of
    counts = SlotMap(slot.view(1, 1, N), part.n_slots).counts()[0, 0]
    assert bool((counts[slot[0, SPECIAL]] == 1).all())


def tome_reference(q, k, v, ratio, metric=None, prop_attn=False, least=False):
    """Loop reference (tests/helpers/merge_refs.py) of one batch row; metric defaults to ToMe's mean keys."""
    metric = k[0].mean(0) if metric is None else metric
    groups = groups_of(tome_labels(metric, P, PS, ratio, least))
    return merged_attention(q[0], k[0], v[0], [groups] * H, [groups] * H, prop_attn)[None]


@pytest.mark.parametrize("ratio", [0.1, 0.3])
@pytest.mark.parametrize("prop_attn", [False, True])
def test_tome_equals_loop_reference_when_only_some_of_a_merges(ratio, prop_attn):
    # ratio < 0.5 merges only the most similar part of set A: a ToMe that merged the least similar
    # pairs, or matched on queries (or values) instead of keys, gives a different output
    q, k, v, _ = rand(seed=5)
    out = make_tome(ToMeParams(tome_ratio=ratio, prop_attn=prop_attn))(q, k, v, layout())
    ref = tome_reference(q, k, v, ratio, prop_attn=prop_attn)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for wrong in (q[0].mean(0), v[0].mean(0)):
        assert not torch.allclose(tome_reference(q, k, v, ratio, metric=wrong, prop_attn=prop_attn), ref,
                                  atol=1e-3)
    assert not torch.allclose(tome_reference(q, k, v, ratio, prop_attn=prop_attn, least=True), ref, atol=1e-3)


def test_tome_start_layer_uses_plain_attention_before_it():
    q, k, v, _ = rand()
    f = make_tome(ToMeParams(start_layer=3))
    assert torch.equal(f(q, k, v, layout(layer=2)), sdpa(q, k, v))


def test_tome_rejects_a_layout_of_another_length():
    q, k, v, _ = rand(n=N // 2)
    with pytest.raises(ValueError, match=rf"^ToMe: layout has {N} tokens but q has N={N // 2}$"):
        make_tome(ToMeParams())(q, k, v, layout())


def test_tome_without_protection_merges_the_special_tokens_too():
    # protect_special=False: A / B are all even / odd positions, camera and register tokens included
    q, k, v, _ = rand(seed=5)
    out = make_tome(ToMeParams(tome_ratio=0.3, protect_special=False))(q, k, v, layout())
    groups = groups_of(tome_labels(k[0].mean(0), P, 0, 0.3))
    ref = merged_attention(q[0], k[0], v[0], [groups] * H, [groups] * H)[None]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, tome_reference(q, k, v, 0.3), atol=1e-3)


def p10(scores):
    """The 10th percentile by order statistic: the k-th smallest, k = round(0.1 (n - 1)) + 1."""
    return float(scores.sort().values[round(0.1 * (scores.numel() - 1))])


def test_tome_times_its_match_phase_and_counts_its_flops_bytes_and_merge_similarity():
    q, k, v, _ = rand(seed=2)
    rec = Recorder(timed=True)
    make_tome(ToMeParams(tome_ratio=0.5))(q, k, v, layout(rec=rec))
    assert set(rec.phases_ms) == {"match", "aggregate", "attention"}
    pos = torch.arange(N)
    a, b = pos[(pos % 2 == 0) & ~SPECIAL], pos[(pos % 2 == 1) & ~SPECIAL]
    assert (a.numel(), b.numel()) == (S * 7, S * 8)  # patch positions 6, 8, .., 18 / 5, 7, .., 19
    assert rec.counters["match_flops"] == 2 * 28 * 32 * D  # one [28 A x 32 B] similarity on d channels
    assert rec.counters["match_bytes"] == N * D * 4  # the float32 mean keys read once
    metric = F.normalize(k[0].mean(0), dim=-1)
    best = (metric[a] @ metric[b].T).max(-1).values  # ratio 0.5: all 28 A tokens merge
    assert rec.values["merge_sim_p10"] == [pytest.approx(p10(best), abs=1e-6)]
    assert p10(best) < float(best.max()) - 0.05  # the 10th percentile, not the best pair


def seam(**kw):
    """The memory model's seam of the tests' layout (N = 80 tokens, 4 heads of 8), float32, CPU budgets."""
    return SeamShape(**{"frames": S, "tokens_per_frame": P, "patch_h": PH, "patch_w": PW, "patch_start": PS,
                        "heads": H, "head_dim": D, "elem_bytes": 4, "device": "cpu", **kw})


def partition_bytes(ns, nc, n=N):
    """A one-block partition's int64 index tensors: static slots [N], src [1, ns], candidates and their
    slots [1, nc] each, the block's first unmerged slot [1, 1], candidates then src [1, nc + ns]."""
    return 8 * (n + ns + 2 * nc + 1 + nc + ns)


def merged_peak(M, v_bytes=4):
    """shared_merge_attention's peak (at the unmerge) for M slots, one batch row, float32 q and k."""
    return {
        "slot map (int64)": 8 * N,
        "slot counts": 4 * M,
        "merged q": 4 * H * M * D,  # float32 sums divided in place: no copy
        "merged k": 4 * H * M * D,
        "merged v": v_bytes * H * M * D,
        "merged attention output": 4 * H * M * D,  # SDPA's on the M slots, copied into the output
        "unmerge index (int64)": 8 * H * N,
    }


def test_tomes_memory_model_by_hand():
    # 28 A tokens (even patch positions) all merge into the 32 B: M = 80 - 28 = 52 slots; the peak is
    # the unmerge, with the head-averaged keys of the matching still alive
    terms = ToMeParams().seam_peak_bytes(seam())
    assert terms == {"cached: ToMe partition": partition_bytes(28, 32), "keys averaged over heads": 4 * N * D,
                     **merged_peak(52)}
    # q, k float32 and v bf16 outside autocast: SDPA's output takes q's float32, beyond the bf16 one
    wide = ToMeParams().seam_peak_bytes(seam(elem_bytes=2, qk_elem_bytes=4))
    assert wide == {"cached: ToMe partition": partition_bytes(28, 32), "keys averaged over heads": 4 * N * D,
                    **merged_peak(52, v_bytes=2), WIDE_OUTPUT: (4 - 2) * H * N * D}


def test_tomes_memory_model_is_plain_attentions_before_its_start_layer():
    plain = {"logsumexp (float32)": 4 * H * N}
    assert ToMeParams(start_layer=3).seam_peak_bytes(seam(layer=2)) == plain
    assert "keys averaged over heads" in ToMeParams(start_layer=3).seam_peak_bytes(seam(layer=3))


# --------------------------------------------------------------------- FastVGGT


def test_fastvggt_ratio_zero_equals_plain_sdpa():
    q, k, v, x = rand()
    out = make_fastvggt(FastVGGTParams(fv_ratio=0.0))(q, k, v, layout(x_norm=x))
    torch.testing.assert_close(out, sdpa(q, k, v), atol=1e-5, rtol=1e-5)


def fastvggt_reference(q, k, v, metric, ratio, seed=33, least=False):
    """Loop reference (tests/helpers/merge_refs.py): FastVGGT without salient tokens, one batch row."""
    cells = cell_dst_mask(S - 1, PH, PW, seed).view(S - 1, PH * PW)
    groups = groups_of(fastvggt_labels(metric, S, P, PS, cells, ratio, least))
    return merged_attention(q[0], k[0], v[0], [groups] * H, [groups] * H)[None]


@pytest.mark.parametrize("ratio", [0.4, 1.0])
def test_fastvggt_equals_loop_reference_matching_on_the_normed_input(ratio):
    # x_norm is independent of q, k, v here: matching on averaged keys (or the least similar pairs,
    # visible at ratio < 1) gives a different output
    q, k, v, x = rand(seed=7)
    out = make_fastvggt(FastVGGTParams(fv_ratio=ratio, salient_frac=0.0))(q, k, v, layout(x_norm=x))
    ref = fastvggt_reference(q, k, v, x[0], ratio)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fastvggt_reference(q, k, v, k[0].mean(0), ratio), ref, atol=1e-3)
    if ratio < 1:
        assert not torch.allclose(fastvggt_reference(q, k, v, x[0], ratio, least=True), ref, atol=1e-3)


def loop_cell_dst_mask(frames, h, w, seed):
    """cell_dst_mask by loops: per frame and cell (row-major), two uniforms (row, col) pick the dst
    at offset floor(u * cell size), the cell 2 x 2 or cut to 1 at an odd edge."""
    u = torch.rand(frames, (h + 1) // 2, (w + 1) // 2, 2, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(frames, h, w, dtype=torch.bool)
    for f in range(frames):
        for i in range(0, h, 2):
            for j in range(0, w, 2):
                uy, ux = u[f, i // 2, j // 2].tolist()
                mask[f, i + int(uy * min(2, h - i)), j + int(ux * min(2, w - j))] = True
    return mask


def test_fastvggt_cells_draw_their_dst_row_and_column_from_two_uniforms():
    for frames, h, w, seed in ((3, 3, 5, 33), (2, 6, 4, 7), (1, 5, 5, 0)):
        mask = cell_dst_mask(frames, h, w, seed)
        assert mask.dtype == torch.bool
        assert torch.equal(mask, loop_cell_dst_mask(frames, h, w, seed)), (frames, h, w, seed)


def test_fastvggt_cells_are_true_2d_with_odd_edges():
    for h, w in ((28, 37), (3, 5), (4, 4), (1, 1)):
        mask = cell_dst_mask(3, h, w, seed=33)
        cells = F.pad(mask.float(), (0, w % 2, 0, h % 2)).view(3, (h + 1) // 2, 2, (w + 1) // 2, 2)
        assert bool((cells.sum((2, 4)) == 1).all())  # exactly one dst in every cell, edges included
        assert bool(mask[:, :, -1].any())  # the last column is not all src (upstream's shear quirk)
    assert not torch.equal(cell_dst_mask(1, 28, 37, 33), cell_dst_mask(1, 28, 37, 34))
    assert torch.equal(cell_dst_mask(2, 28, 37, 33), cell_dst_mask(2, 28, 37, 33))


def test_fastvggt_roles_keep_frame_zero_and_special_tokens():
    part, _ = fastvggt_partition(S, PH, PW, PS, FastVGGTParams())
    static = part.static_slot.view(S, P)
    assert bool((static[0] >= 0).all())  # all of frame 0 keeps its own slot
    assert bool((static[:, :PS] >= 0).all())
    src, cand = part.sets[0].src[0], part.sets[0].cand[0]
    assert not bool(SPECIAL[cand].any())  # clean default: special tokens never absorb
    assert bool((cand < P).any())  # frame 0 is a merge target
    assert bool((src >= P).all())


def test_fastvggt_special_tokens_never_absorb_by_default():
    q, k, v, x = rand()
    x[:, P + PS :: 1] = x[:, P : P + 1]  # every later token looks like frame 1's camera token
    part, _ = fastvggt_partition(S, PH, PW, PS, FastVGGTParams())
    slot = assign(rows_gather(x), 1, part).slot_of
    counts = SlotMap(slot.view(1, 1, N), part.n_slots).counts()[0, 0]
    assert bool((counts[slot[0, SPECIAL]] == 1).all())
    part_up, _ = fastvggt_partition(S, PH, PW, PS, FastVGGTParams(special_targets=True))
    slot_up = assign(rows_gather(x), 1, part_up).slot_of
    counts_up = SlotMap(slot_up.view(1, 1, N), part_up.n_slots).counts()[0, 0]
    assert counts_up[slot_up[0, P]] > 1  # upstream quirk: the camera token absorbs


def test_fastvggt_salient_tokens_are_never_duplicated():
    p = FastVGGTParams(salient_frac=0.2)
    part, _ = fastvggt_partition(S, PH, PW, PS, p)
    ms = part.sets[0]
    n_static = int((part.static_slot >= 0).sum())
    assert n_static + ms.src.numel() == N  # every token has exactly one role
    assert part.n_slots == n_static + ms.src.numel() - ms.r  # no extra copies in the merged sequence
    step = N // int(0.2 * N)
    strided = torch.arange(0, N, step)[: int(0.2 * N)]
    assert bool((part.static_slot[strided] >= 0).all())  # salient tokens are never merged away


def test_fastvggt_dissimilar_rule_protects_the_least_similar_src():
    _, _, _, x = rand()
    p = FastVGGTParams(salient_rule="dissimilar", salient_frac=0.25)
    part, n_prot = fastvggt_partition(S, PH, PW, PS, p)
    ms = part.sets[0]
    assert ms.r == ms.src.numel() - n_prot
    slot = assign(rows_gather(x), 1, part).slot_of[0]
    kept_src = slot[ms.src[0]] >= ms.unm_base[0, 0]
    xs = F.normalize(x[0, ms.src[0]], dim=-1)
    best = (xs @ F.normalize(x[0, ms.cand[0]], dim=-1).T).max(-1).values
    assert best[kept_src].max() <= best[~kept_src].min()


def test_fastvggt_single_frame_is_plain_attention():
    q, k, v, x = rand(n=P)
    out = make_fastvggt(FastVGGTParams())(q, k, v, layout(frames=1, x_norm=x))
    assert torch.equal(out, sdpa(q, k, v))


def test_fastvggt_batch_rows_decide_independently():
    q, k, v, x = rand(B=2, seed=3)
    f = make_fastvggt(FastVGGTParams())
    both = f(q, k, v, layout(x_norm=x))
    for b in range(2):
        sl = slice(b, b + 1)
        one = f(q[sl], k[sl], v[sl], layout(x_norm=x[sl]))
        torch.testing.assert_close(both[sl], one, atol=1e-5, rtol=1e-5)


def test_fastvggt_falls_back_to_mean_keys_with_a_warning():
    q, k, v, _ = rand()
    rec = Recorder()
    f = make_fastvggt(FastVGGTParams())
    with pytest.warns(UserWarning, match="x_norm is None"):
        out = f(q, k, v, layout(rec=rec))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(q, k, v, layout())  # warned once per factory
    assert out.shape == q.shape
    assert rec.counters["metric_fallback"] == 1


def test_fastvggt_warns_with_its_whole_message_at_the_callers_line(monkeypatch):
    # the frame a warning names is the ``stacklevel``-th up from the function that warns; mutmut's
    # trampolines (two frames per mutated function) are skipped, as in a normal run they do not exist
    seen = []

    def spy(message, category=UserWarning, stacklevel=1):
        frame, frames = sys._getframe(1), []
        while frame is not None:
            if f"{os.sep}mutmut{os.sep}" not in frame.f_code.co_filename:
                frames.append(frame.f_code.co_filename)
            frame = frame.f_back
        seen.append((message, category, frames[stacklevel - 1]))

    monkeypatch.setattr(warnings, "warn", spy)
    q, k, v, _ = rand()
    make_fastvggt(FastVGGTParams())(q, k, v, layout())
    assert seen == [("FastVGGT: layout.x_norm is None; matching on the keys averaged over heads instead",
                     UserWarning, __file__)]  # the caller of the attention_fn, not the method's internals


def test_fastvggt_rejects_a_layout_of_another_length():
    q, k, v, x = rand(n=N // 2)
    with pytest.raises(ValueError, match=rf"^FastVGGT: layout has {N} tokens but q has N={N // 2}$"):
        make_fastvggt(FastVGGTParams())(q, k, v, layout(x_norm=x))


def test_fastvggt_rejects_frames_that_are_not_special_tokens_plus_the_patch_grid():
    q, k, v, x = rand()
    bad = AttentionLayout(S, P, PH, PW + 1, PS, x_norm=x)  # 5 + 3 * 6 = 23 != 20 tokens per frame
    with pytest.raises(ValueError, match=rf"^FastVGGT: tokens_per_frame={P} != patch_start={PS} "
                                         rf"\+ patch_h\*patch_w={PH}\*{PW + 1}$"):
        make_fastvggt(FastVGGTParams())(q, k, v, bad)


def test_fastvggt_merges_from_two_frames_and_counts_one_frame_as_plain_attention():
    q, k, v, x = rand(n=2 * P)
    rec = Recorder()
    make_fastvggt(FastVGGTParams(salient_frac=0.0))(q, k, v, layout(frames=2, x_norm=x, rec=rec))
    # frame 1's 15 patches form 6 cells (2 x 3, odd edges): 6 dst, 9 src merged into a dst
    assert rec.counters["tokens_kv"] == (2 * P - 9) * H
    one = Recorder()
    q1, k1, v1, x1 = rand(n=P)
    make_fastvggt(FastVGGTParams())(q1, k1, v1, layout(frames=1, x_norm=x1, rec=one))
    assert dict(one.counters) == {"tokens_q": P * H, "tokens_kv": P * H,
                                  "attn_flops": 4.0 * H * P * P * D, "attn_bytes": one.counters["attn_bytes"]}


def fastvggt_roles(seed=33):
    """(src, dst) token indices without salient tokens, from the dst cells: frame 0's patches and
    one patch per cell of every later frame are dst; the other patches are src."""
    cells = cell_dst_mask(S - 1, PH, PW, seed).view(S - 1, PH * PW)
    is_dst = torch.zeros(S, P, dtype=torch.bool)
    is_dst[0, PS:] = True
    is_dst[1:, PS:] = cells
    patch = ~SPECIAL.view(S, P)
    return (patch & ~is_dst).view(-1).nonzero().view(-1), is_dst.view(-1).nonzero().view(-1)


@pytest.mark.parametrize("normed_input", [True, False])
def test_fastvggt_times_its_match_phase_and_counts_its_flops_bytes_and_merge_similarity(normed_input):
    q, k, v, x = rand(seed=4)
    rec = Recorder(timed=True)
    lay = layout(x_norm=x if normed_input else None, rec=rec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback's warning (tested above)
        make_fastvggt(FastVGGTParams(salient_frac=0.0))(q, k, v, lay)
    assert set(rec.phases_ms) == {"match", "aggregate", "attention"}
    src, dst = fastvggt_roles()
    assert (src.numel(), dst.numel()) == (27, 33)  # 3 later frames x (15 patches - 6 cells); 15 + 3 x 6
    metric = x[0] if normed_input else k[0].mean(0)
    width = C if normed_input else D
    assert rec.counters["match_flops"] == 2 * 27 * 33 * width  # one [27 src x 33 dst] similarity
    assert rec.counters["match_bytes"] == N * width * 4  # the float32 metric read once
    assert rec.counters.get("metric_fallback", 0) == (0 if normed_input else 1)
    m = F.normalize(metric, dim=-1)
    best = (m[src] @ m[dst].T).max(-1).values  # fv_ratio 1: every src merges
    assert rec.values["merge_sim_p10"] == [pytest.approx(p10(best), abs=1e-6)]
    assert p10(best) < float(best.max()) - 0.05  # the 10th percentile, not the best pair


def test_fastvggts_memory_model_by_hand():
    # no salient tokens: 27 src all merge into the 33 dst (fastvggt_roles): M = 80 - 27 = 53 slots; the
    # matching on x_norm (already alive) peaks below the merged attention at this size
    p = FastVGGTParams(salient_frac=0.0)
    cached = {"cached: FastVGGT partition": partition_bytes(27, 33)}
    assert p.seam_peak_bytes(seam()) == {**cached, **merged_peak(53)}
    assert p.seam_peak_bytes(seam(elem_bytes=2, qk_elem_bytes=4)) == {
        **cached, **merged_peak(53, v_bytes=2), WIDE_OUTPUT: (4 - 2) * H * N * D}


def test_fastvggts_memory_model_counts_a_dense_similarity_only_when_asked():
    # 8 frames of 8 x 8 patches, no salient tokens: frame 0's 64 patches and 16 cells in each of the 7
    # later frames are the 176 dst, the other 7 x 48 patches the 336 src; one float32 [src, dst] matrix
    shape = seam(frames=8, patch_h=8, patch_w=8, tokens_per_frame=PS + 64)
    p = FastVGGTParams(salient_frac=0.0)
    dense = p.seam_peak_bytes(shape, dense_similarity=True)
    assert dense["similarity (src x dst)"] == 4 * 336 * 176
    assert p.seam_peak_bytes(shape) == p.seam_peak_bytes(shape, dense_similarity=False)  # the fused kernel
    assert "similarity (src x dst)" not in p.seam_peak_bytes(shape)


def test_fastvggts_memory_model_is_plain_attentions_for_one_frame_and_before_its_start_layer():
    assert FastVGGTParams().seam_peak_bytes(seam(frames=1)) == {"logsumexp (float32)": 4 * H * P}
    assert FastVGGTParams(start_layer=3).seam_peak_bytes(seam(layer=2)) == {"logsumexp (float32)": 4 * H * N}
    assert "merged q" in FastVGGTParams(start_layer=3).seam_peak_bytes(seam(layer=3))
    assert "merged q" in FastVGGTParams().seam_peak_bytes(seam(frames=2))


def test_fastvggt_keeps_about_a_third_of_vggt_sized_sequences():
    part, _ = fastvggt_partition(10, 28, 37, 5, FastVGGTParams())
    kept = part.n_slots / (10 * 1041)
    assert 0.35 < kept < 0.45  # upstream measured 0.42 at S=10 (with its duplicated salient tokens)


def test_fastvggt_records_counters():
    q, k, v, x = rand()
    rec = Recorder(timed=True)
    make_fastvggt(FastVGGTParams())(q, k, v, layout(x_norm=x, rec=rec))
    assert rec.counters["tokens_q"] == rec.counters["tokens_kv"] < N * H
    assert rec.counters["match_flops"] > 0
    assert set(rec.phases_ms) == {"match", "aggregate", "attention"}
