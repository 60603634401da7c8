"""ToMe and FastVGGT-style merging baselines at the global-attention seam."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from merge_refs import fastvggt_labels, groups_of, merged_attention, tome_labels

from baselines.fastvggt import FastVGGTParams, cell_dst_mask, fastvggt_partition, make_fastvggt
from baselines.tome import ToMeParams, make_tome, tome_partition
from harness.methods.merging import SlotMap, assign, rows_gather
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
