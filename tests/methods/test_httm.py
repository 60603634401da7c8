"""HTTM at the global-attention seam (harness/methods/httm.py)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F
from merge_refs import httm_reference

from harness.methods.httm import (
    HTTMParams,
    block_partition,
    filter_outliers,
    group_gather,
    make_httm,
    temporal_blocks,
)
from harness.methods.merging import SlotMap, assign, percentile
from harness.models.seam import AttentionLayout, Recorder
from harness.params import describe
from harness.store.columns import METRIC_PREFIXES

# small VGGT-like shape with ragged tails: P' = 42 = 16 + 16 + 10, S = 6 = 4 + 2
S, PH, PW, PS = 6, 6, 7, 5
P = PS + PH * PW
N = S * P
SMALL = dict(n_s=16, n_t=4, head_groups=4)


def layout(frames=S, rec=None, layer=0):
    return AttentionLayout(frames, P, PH, PW, PS, layer=layer, recorder=rec)


def rand_qkv(B=1, H=4, n=N, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, n, d, generator=g) for _ in range(3))


def structured_qkv(B=1, H=4, frames=S, d=8, noise=0.05, seed=0):
    """q, k, v from a smooth random field over the patch grid, repeated across frames + noise."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(PH).float(), torch.arange(PW).float(), indexing="ij")
    out = []
    for _ in range(3):
        freq = torch.randn(6, 2, generator=g) * 0.4
        phase = torch.rand(6, generator=g) * 6.28
        basis = torch.cos(freq[:, 0, None, None] * y + freq[:, 1, None, None] * x + phase[:, None, None])
        coef = torch.randn(B, H, 6, d, generator=g)
        field = torch.einsum("fyx,bhfd->bhyxd", basis, coef).reshape(B, H, 1, PH * PW, d)
        patches = field + noise * torch.randn(B, H, frames, PH * PW, d, generator=g)
        special = torch.randn(B, H, frames, PS, d, generator=g)
        out.append(torch.cat([special, patches], dim=3).reshape(B, H, frames * P, d))
    return tuple(out)


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def partitions(p: HTTMParams, frames=S):
    blocks = temporal_blocks(frames, P, p.n_s, p.n_t, PS, p.protect_special, p.anchor_first_frame)
    n = frames * P
    part_q = block_partition(blocks, n, p.query_merge, p.dst_frac, p.dst_rule, p.dst_seed)
    part_k = block_partition(blocks, n, p.kv_merge, p.dst_frac, p.dst_rule, p.dst_seed)
    return blocks, part_q, part_k


# ------------------------------------------------------------ slow loop reference


def ref_httm(q, k, v, p: HTTMParams, budget=None):
    """The independent loop reference of tests/helpers/merge_refs.py (strided dst, no anchoring), per row."""
    assert p.dst_rule == "strided" and not p.anchor_first_frame and p.protect_special
    knobs = dict(n_s=p.n_s, n_t=p.n_t, head_groups=p.head_groups, query_merge=p.query_merge,
                 kv_merge=p.kv_merge, outlier_frac=p.outlier_frac, dst_frac=p.dst_frac,
                 decouple_qk=p.decouple_qk)
    shape = dict(frames=q.shape[2] // P, tokens_per_frame=P, patch_start=PS)
    rows = [httm_reference(q[b], k[b], v[b], **shape, **knobs, budget=budget) for b in range(q.shape[0])]
    return torch.stack(rows)


def gap_budget(q, p: HTTMParams, target=0.1):
    """An outlier budget near ``target`` whose top-k boundary is not a near-tie (robust test)."""
    B, H, n, d = q.shape
    G, hg = p.head_groups, H // p.head_groups
    _, part_q, _ = partitions(p, n // P)
    slot = assign(group_gather(q, G), B * G, part_q).slot_of.view(B, G, n)
    sm = SlotMap(slot, part_q.n_slots)
    diff = sm.unmerge(sm.merge(q)) - q
    dev = diff.pow(2).sum(-1).view(B, G, hg, n).sum(2).view(-1).sort(descending=True).values
    k0 = int(target * G * n)
    gaps = [(float(dev[i - 1] - dev[i]), i) for i in range(max(1, k0 - 10), k0 + 10)]
    return max(gaps)[1]


# ----------------------------------------------------------------------- tests


def test_params_have_help_and_do_not_clash_with_workload_names():
    names = {i.name for i in describe(HTTMParams)}
    assert {"query_merge", "outlier_frac", "kv_merge", "head_groups", "n_s", "n_t", "dst_rule"} <= names
    assert not names & {"frames", "preset", "height", "width", "seed", "device", "dtype", "layer", "heads"}
    assert all(i.help for i in describe(HTTMParams))
    assert not [n for n in names if n.startswith(METRIC_PREFIXES)]  # would read as metric columns


def test_ratio_zero_equals_plain_sdpa():
    q, k, v = rand_qkv()
    f = make_httm(HTTMParams(query_merge=0.0, kv_merge=0.0, outlier_frac=0.0, **SMALL))
    torch.testing.assert_close(f(q, k, v, layout()), sdpa(q, k, v), atol=1e-5, rtol=1e-5)


def test_permutation_and_inverse_are_exact_with_ragged_tails():
    for frames, n_s, n_t, protect, anchor in [
        (6, 16, 4, True, False), (6, 16, 4, False, True), (5, 7, 3, True, True), (1, 100, 30, True, False),
    ]:
        blocks = temporal_blocks(frames, P, n_s, n_t, PS, protect, anchor)
        n = frames * P
        assert torch.equal(blocks.perm[blocks.inv], torch.arange(n))
        assert torch.equal(blocks.inv[blocks.perm], torch.arange(n))
        assert len(blocks.classes) <= 4


def test_blocks_hold_a_spatial_chunk_of_consecutive_frames():
    blocks = temporal_blocks(S, P, 16, 4, PS, True, False)
    sizes = sorted((c.frames, c.chunk_len) for c in blocks.classes)
    # ragged chunk (42 = 2*16 + 10) and ragged group (6 = 4 + 2)
    assert sizes == [(2, 10), (2, 16), (4, 10), (4, 16)]
    for c in blocks.classes:
        t = c.tokens.view(-1, c.frames, c.chunk_len)
        frame, pos = t // P, t % P
        assert torch.equal(frame, frame[:, :, :1].expand_as(frame))  # one frame per row
        assert torch.equal(frame[:, :, 0] - frame[:, :1, 0], torch.arange(c.frames).expand(t.shape[0], -1))
        assert torch.equal(pos - pos[:, :, :1], torch.arange(c.chunk_len).expand_as(pos))
        assert torch.equal(pos, pos[:, :1].expand_as(pos))  # same chunk in every frame
        assert bool((pos >= PS).all())  # special tokens are not in blocks


def test_permutation_is_cached_per_shape():
    a = temporal_blocks(S, P, 16, 4, PS, True, False)
    assert temporal_blocks(S, P, 16, 4, PS, True, False) is a
    assert temporal_blocks(S, P, 16, 3, PS, True, False) is not a


def test_duplicate_queries_merge_losslessly():
    p = HTTMParams(query_merge=0.75, kv_merge=0.0, outlier_frac=0.0, **SMALL)
    _, part_q, _ = partitions(p)
    q, k, v = rand_qkv()
    for ms in part_q.sets:  # make every src an exact copy of one dst of its own block
        pick = torch.randint(0, ms.cand.shape[1], ms.src.shape)
        q[:, :, ms.src.reshape(-1)] = q[:, :, ms.cand.gather(1, pick).reshape(-1)]
    rec = Recorder()
    out = make_httm(p)(q, k, v, layout(rec=rec))
    torch.testing.assert_close(out, sdpa(q, k, v), atol=1e-5, rtol=1e-5)
    assert rec.counters["tokens_q"] < 0.4 * N * 4  # the queries really were merged


def test_head_groups_one_equals_uniform_merging_reference():
    q, k, v = rand_qkv(seed=1)
    p = HTTMParams(outlier_frac=0.0, **{**SMALL, "head_groups": 1})
    torch.testing.assert_close(make_httm(p)(q, k, v, layout()), ref_httm(q, k, v, p), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("heads", "groups"), [(4, 2), (8, 2), (8, 4)])
def test_head_groups_between_one_and_every_head_equal_the_loop_reference(heads, groups):
    # at 1 and at H a mix-up of which heads share a group cannot show: here it must
    q, k, v = rand_qkv(H=heads, seed=5)
    p = HTTMParams(outlier_frac=0.0, **{**SMALL, "head_groups": groups})
    torch.testing.assert_close(make_httm(p)(q, k, v, layout()), ref_httm(q, k, v, p), atol=1e-5, rtol=1e-4)


def test_outlier_filtering_with_two_head_groups_of_four_equals_the_loop_reference():
    q, k, v = rand_qkv(H=8, seed=6)
    base = HTTMParams(**{**SMALL, "head_groups": 2})
    budget = gap_budget(q, base)
    p = dataclasses.replace(base, outlier_frac=(budget + 0.25) / (2 * N))  # rounds to exactly `budget`
    torch.testing.assert_close(make_httm(p)(q, k, v, layout()), ref_httm(q, k, v, p, budget), atol=1e-5,
                               rtol=1e-4)


def test_ragged_headwise_path_equals_per_head_loop_reference():
    q, k, v = rand_qkv(B=2, seed=2)
    base = HTTMParams(**SMALL)
    budget = gap_budget(q[:1], base)
    p = dataclasses.replace(base, outlier_frac=(budget + 0.25) / (4 * N))  # rounds to exactly `budget`
    out = make_httm(p)(q[:1], k[:1], v[:1], layout())
    torch.testing.assert_close(out, ref_httm(q[:1], k[:1], v[:1], p, budget), atol=1e-5, rtol=1e-4)


def test_top_r_selection_path_equals_loop_reference():
    q, k, v = rand_qkv(seed=3)
    p = HTTMParams(query_merge=0.5, kv_merge=0.4, dst_frac=0.25, outlier_frac=0.0, **SMALL)
    torch.testing.assert_close(make_httm(p)(q, k, v, layout()), ref_httm(q, k, v, p), atol=1e-5, rtol=1e-4)


def test_outlier_budget_zero_is_a_no_op():
    q, _, _ = rand_qkv()
    p = HTTMParams(**SMALL)
    _, part_q, _ = partitions(p)
    sm = SlotMap(assign(group_gather(q, 4), 4, part_q).slot_of.view(1, 4, N), part_q.n_slots)
    q_m = sm.merge(q)
    sm2, q_m2 = filter_outliers(q, q_m.clone(), sm, 0.0)
    assert sm2 is sm
    torch.testing.assert_close(q_m2, q_m)
    f0 = make_httm(dataclasses.replace(p, outlier_frac=0.0))
    f_tiny = make_httm(dataclasses.replace(p, outlier_frac=0.1 / (4 * N)))  # rounds to a budget of 0
    qq, k, v = rand_qkv()
    torch.testing.assert_close(f0(qq, k, v, layout()), f_tiny(qq, k, v, layout()))


def test_outlier_filtering_lowers_query_reconstruction_error():
    q, _, _ = structured_qkv()
    p = HTTMParams(**SMALL)
    _, part_q, _ = partitions(p)
    sm = SlotMap(assign(group_gather(q, 4), 4, part_q).slot_of.view(1, 4, N), part_q.n_slots)
    q_m = sm.merge(q)
    err0 = rel_err(sm.unmerge(q_m), q)
    sm2, q_m2 = filter_outliers(q, q_m.clone(), sm, 0.1)
    err1 = rel_err(sm2.unmerge(q_m2), q)
    assert err1 < 0.9 * err0
    assert sm2.n_slots > sm.n_slots  # flagged queries got their own slots


def test_outlier_budget_is_global_so_head_groups_get_different_lengths():
    q, k, v = rand_qkv()
    q[:, 0] *= torch.linspace(0.2, 5.0, N).view(1, N, 1)  # group 0 has far more spread
    p = HTTMParams(**SMALL)
    _, part_q, _ = partitions(p)
    sm = SlotMap(assign(group_gather(q, 4), 4, part_q).slot_of.view(1, 4, N), part_q.n_slots)
    sm2, _ = filter_outliers(q, sm.merge(q), sm, 0.1)
    lengths = sm2.occupied()[0]
    assert lengths.max() > lengths.min()
    budget = int(0.1 * 4 * N + 0.5)
    assert int((lengths - sm.occupied()[0]).sum()) <= budget


def test_protected_special_tokens_are_never_merged_away():
    q, k, v = rand_qkv(seed=4)
    p = HTTMParams(kv_merge=0.0, **SMALL)
    special = (torch.arange(N) % P) < PS
    out = make_httm(p)(q, k, v, layout())
    torch.testing.assert_close(out[:, :, special], sdpa(q, k, v)[:, :, special], atol=1e-5, rtol=1e-5)
    _, part_q, part_k = partitions(HTTMParams(**SMALL))
    for part, x in ((part_q, q), (part_k, k)):
        slot = assign(group_gather(x, 4), 4, part).slot_of
        counts = SlotMap(slot.view(1, 4, N), part.n_slots).counts()[0]
        assert bool((counts.gather(1, slot[:, special]) == 1).all())


def test_unprotected_special_tokens_can_merge():
    q = torch.randn(1, 4, N, 8)
    q[:, :, 1::P] = q[:, :, 0::P]  # register token 1 duplicates the camera token in every frame
    _, part_q, _ = partitions(HTTMParams(protect_special=False, **SMALL))
    slot = assign(group_gather(q, 4), 4, part_q).slot_of
    assert bool((slot[:, 1::P] == slot[:, 0::P]).any())


def test_fidelity_improves_monotonically_as_merge_ratios_go_to_zero():
    q, k, v = structured_qkv()
    ref = sdpa(q, k, v)
    errs = []
    for qm, kvm in [(0.9, 0.7), (0.7, 0.5), (0.5, 0.3), (0.25, 0.15), (0.0, 0.0)]:
        out = make_httm(HTTMParams(query_merge=qm, kv_merge=kvm, **SMALL))(q, k, v, layout())
        errs.append(rel_err(out, ref))
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-5
    assert errs[0] < 0.5  # structured inputs are redundant: even 80 % merging stays close


def test_batch_rows_decide_independently():
    q, k, v = rand_qkv(B=2, seed=5)
    f = make_httm(HTTMParams(**SMALL))
    both = f(q, k, v, layout())
    for b in range(2):
        one = f(q[b : b + 1], k[b : b + 1], v[b : b + 1], layout())
        torch.testing.assert_close(both[b : b + 1], one, atol=1e-5, rtol=1e-5)


def test_single_frame_merges_spatially_only():
    q, k, v = structured_qkv(frames=1)
    rec = Recorder()
    out = make_httm(HTTMParams(**SMALL))(q, k, v, layout(frames=1, rec=rec))
    assert out.shape == q.shape and bool(torch.isfinite(out).all())
    assert rec.counters["tokens_kv"] < 0.5 * P * 4


def test_single_frame_with_anchoring_is_plain_attention():
    q, k, v = rand_qkv(n=P)
    out = make_httm(HTTMParams(anchor_first_frame=True, **SMALL))(q, k, v, layout(frames=1))
    torch.testing.assert_close(out, sdpa(q, k, v), atol=1e-5, rtol=1e-5)


def test_first_frame_anchors_absorb_their_duplicates():
    p = HTTMParams(anchor_first_frame=True, **SMALL)
    _, _, part_k = partitions(p)
    is_src = (part_k.static_slot < 0).view(S, P)
    k = torch.randn(1, 4, S, P, 8)
    dup = k[:, :, :1].expand(-1, -1, S, -1, -1)
    k = torch.where(is_src.view(1, 1, S, P, 1), dup, k).reshape(1, 4, N, 8)  # src repeat frame 0
    slot = assign(group_gather(k, 4), 4, part_k).slot_of.view(4, S, P)
    anchor_slot = slot[:, :1].expand(-1, S, -1)
    assert bool((slot[:, is_src] == anchor_slot[:, is_src]).all())
    assert slot[:, 0].unique(dim=1).shape[1] == P  # frame-0 tokens keep distinct slots


def test_start_layer_uses_plain_attention_before_it():
    q, k, v = rand_qkv()
    f = make_httm(HTTMParams(start_layer=2, **SMALL))
    assert torch.equal(f(q, k, v, layout(layer=1)), sdpa(q, k, v))
    assert not torch.allclose(f(q, k, v, layout(layer=2)), sdpa(q, k, v))


def test_head_groups_must_divide_heads():
    q, k, v = rand_qkv()
    msg = r"head_groups=3 must divide the number of heads H=4 \(allowed: 1, 2, 4\)"
    with pytest.raises(ValueError, match=msg):
        make_httm(HTTMParams(**{**SMALL, "head_groups": 3}))(q, k, v, layout())


def test_layout_must_match_sequence_length():
    q, k, v = rand_qkv(n=N - 1)
    with pytest.raises(ValueError, match="tokens but q has N="):
        make_httm(HTTMParams(**SMALL))(q, k, v, layout())


def test_recorder_counts_merged_sizes_padding_and_phases():
    q, k, v = structured_qkv()
    rec = Recorder(timed=True)
    make_httm(HTTMParams(**SMALL))(q, k, v, layout(rec=rec))
    H = 4
    c = rec.counters
    assert 0.15 * N * H < c["tokens_q"] < 0.3 * N * H  # ~ (1 - 0.9 + 0.1) N per head plus specials
    assert 0.25 * N * H < c["tokens_kv"] < 0.4 * N * H
    assert c["pad_q"] >= 0
    n_q = (c["tokens_q"] + c["pad_q"]) / H
    assert c["attn_flops"] == pytest.approx(4 * H * n_q * c["tokens_kv"] / H * 8)
    assert c["match_flops"] > 0
    assert set(rec.phases_ms) == {"match", "aggregate", "attention"}
    assert -1.0 <= rec.values["merge_sim_p10"][0] <= 1.0


def test_shared_assignment_when_not_decoupled():
    q, k, v = rand_qkv()
    rec = Recorder()
    p = HTTMParams(decouple_qk=False, outlier_frac=0.0, **SMALL)
    out = make_httm(p)(q, k, v, layout(rec=rec))
    assert rec.counters["tokens_q"] == rec.counters["tokens_kv"]
    # Q, K and V all follow ONE assignment made on K similarity at the K/V ratio
    torch.testing.assert_close(out, ref_httm(q, k, v, p), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out, ref_httm(q, k, v, dataclasses.replace(p, decouple_qk=True)), atol=1e-3)


def test_random_dst_rule_is_seeded():
    q, k, v = rand_qkv()
    f = lambda seed: make_httm(HTTMParams(dst_rule="random", dst_seed=seed, **SMALL))  # noqa: E731
    torch.testing.assert_close(f(1)(q, k, v, layout()), f(1)(q, k, v, layout()))
    assert not torch.allclose(f(1)(q, k, v, layout()), f(2)(q, k, v, layout()))


def test_every_dst_rule_keeps_the_requested_fraction():
    for rule in ("strided", "random", "first_frame"):
        p = HTTMParams(dst_rule=rule, **SMALL)
        _, _, part_k = partitions(p)
        kept = part_k.n_slots - S * PS
        assert kept == pytest.approx(0.3 * (N - S * PS), abs=4)


# ------------------------------------------------ counters, edges and paths the tests above miss
# (found by mutation testing: docs/guide/mutation.md)

GROUPED = dict(n_s=16, n_t=4, head_groups=2)  # H = 4 heads in 2 groups of hg = 2


def _counted(p: HTTMParams, q, k, v):
    rec = Recorder()
    make_httm(p)(q, k, v, layout(rec=rec))
    return rec


def test_with_nothing_merged_every_counter_counts_all_n_tokens():
    B, H, d = 2, 4, 8
    q, k, v = rand_qkv(B=B, H=H, d=d)
    p = HTTMParams(query_merge=0.0, kv_merge=0.0, outlier_frac=0.0, **GROUPED)
    c = _counted(p, q, k, v).counters
    G, hg, elem = 2, 2, 4
    assert (c["tokens_q"], c["tokens_kv"], c["pad_q"]) == (N * H, N * H, 0.0)  # per batch element
    assert c["attn_flops"] == 4.0 * B * H * N * N * d
    assert c["attn_bytes"] == B * H * (2 * N + 2 * N) * d * elem  # read q, k, v, write o
    # merges of k and v (N -> N), of q (N -> N), the unmerge (N -> N)
    assert c["agg_bytes"] == B * H * (2 * (N + N) + (N + N) + (N + N)) * d * elem
    assert c["match_bytes"] == B * G * (2 * N) * (hg * d) * elem  # q and k read once each
    assert c["match_flops"] == 0.0  # no block merges anything: no similarity is computed


def test_token_counters_are_per_batch_element_and_work_counters_for_the_whole_batch():
    q1, k1, v1 = structured_qkv(B=1)
    p = HTTMParams(**GROUPED)
    one = _counted(p, q1, k1, v1).counters
    two = _counted(p, *(x.expand(2, -1, -1, -1).contiguous() for x in (q1, k1, v1))).counters
    for name in ("tokens_q", "tokens_kv", "pad_q"):
        assert two[name] == one[name], name
    for name in ("attn_flops", "attn_bytes", "agg_bytes", "match_flops", "match_bytes"):
        assert two[name] == 2 * one[name], name


@pytest.mark.parametrize("decouple", [True, False])
def test_work_counters_follow_the_merged_sizes(decouple):
    B, H, d, G, hg, elem = 2, 4, 8, 2, 2, 4
    q, k, v = structured_qkv(B=B)
    p = HTTMParams(decouple_qk=decouple, **GROUPED)
    c = _counted(p, q, k, v).counters
    _, part_q, part_k = partitions(p)
    if not decouple:
        part_q = part_k
    used_q = (c["tokens_q"] + c["pad_q"]) / H  # query slots of the longest head group
    assert used_q == int(used_q) and used_q >= part_q.n_slots
    assert c["attn_bytes"] == B * H * (2 * used_q + 2 * part_k.n_slots) * d * elem
    moved = 2 * (N + part_k.n_slots) + (N + part_q.n_slots) + (used_q + N)
    assert c["agg_bytes"] == B * H * moved * d * elem
    match = part_k.match_flops(B * G, hg * d) + (part_q.match_flops(B * G, hg * d) if decouple else 0.0)
    assert c["match_flops"] == match > 0
    assert c["match_bytes"] == B * G * ((2 if decouple else 1) * N) * (hg * d) * elem


def test_the_merge_quality_is_the_10th_percentile_of_the_q_and_of_the_k_match_scores():
    q, k, v = structured_qkv(B=2)
    p = HTTMParams(**GROUPED)
    rec = _counted(p, q, k, v)
    _, part_q, part_k = partitions(p)
    scores_q = assign(group_gather(q, 2), 4, part_q, True).merged_scores
    scores_k = assign(group_gather(k, 2), 4, part_k, True).merged_scores
    assert rec.values["merge_sim_p10"] == [percentile(scores_q, 0.1)]
    assert rec.values["merge_sim_p10_kv"] == [percentile(scores_k, 0.1)]
    assert rec.values["merge_sim_p10"] != [percentile(scores_q, 1.0)]  # not the best score


class _PhaseLog(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.entered: list[str] = []

    def phase(self, name):
        self.entered.append(name)
        return super().phase(name)


def test_phases_are_entered_as_match_aggregate_attention_aggregate():
    q, k, v = rand_qkv()
    rec = _PhaseLog()
    make_httm(HTTMParams(**SMALL))(q, k, v, layout(rec=rec))
    assert rec.entered == ["match", "aggregate", "attention", "aggregate"]


@pytest.mark.parametrize("groups", [4, 2, 1])
def test_group_gather_reads_a_non_contiguous_tensor_like_its_contiguous_copy(groups):
    x = torch.randn(2, N, 4, 8).transpose(1, 2)  # [B, H, N, d], not contiguous
    assert not x.is_contiguous()
    idx = torch.tensor([0, 5, 7, N - 1])
    torch.testing.assert_close(group_gather(x, groups)(idx), group_gather(x.contiguous(), groups)(idx))


def _quads(q: torch.Tensor, groups: int) -> SlotMap:
    """Slots of 4 consecutive tokens (the last one of 2): their means are exact in binary."""
    B, _, n, _ = q.shape
    return SlotMap((torch.arange(n) // 4).expand(B, groups, n).contiguous(), (n + 3) // 4)


def _repeated(seed: int = 0) -> torch.Tensor:
    """[1, 4, N, 8] float64 queries, equal within each slot of :func:`_quads`, multiples of 1/8 so a
    slot's mean is exact whatever the order of its sum (the torch path and the Triton kernels alike)."""
    g = torch.Generator().manual_seed(seed)
    slots = torch.randint(-16, 17, (1, 4, (N + 3) // 4, 8), generator=g).double() / 8
    return slots.repeat_interleave(4, 2)[:, :, :N]


def test_filtering_flags_nothing_when_every_query_equals_its_merged_token():
    q = _repeated()
    sm = _quads(q, 2)
    sm2, q_m2 = filter_outliers(q, sm.merge(q), sm, 0.1)
    assert sm2 is sm and torch.equal(q_m2, sm.merge(q))


def test_a_budget_of_one_query_flags_exactly_the_farthest_query():
    q = _repeated()
    q[0, 2, 7] += 3.0  # head 2 (group 1), token 7: 2.25 from its slot's mean, the other three 0.75
    sm = _quads(q, 2)
    sm2, _ = filter_outliers(q, sm.merge(q), sm, 1 / (2 * N))  # round(frac * G * N) = 1
    assert sm2.n_slots == sm.n_slots + 1
    assert (sm2.slot_of >= sm.n_slots).nonzero().tolist() == [[0, 1, 7]]


def test_small_deviations_are_flagged_as_well_as_large_ones():
    g = torch.Generator().manual_seed(1)
    q = _repeated() + 1e-4 * torch.randn(1, 4, N, 8, generator=g, dtype=torch.float64)  # all far below 1
    sm = _quads(q, 2)
    sm2, _ = filter_outliers(q, sm.merge(q), sm, 0.1)
    assert int((sm2.slot_of >= sm.n_slots).sum()) == int(0.1 * 2 * N + 0.5)


def test_filtered_queries_are_the_plain_means_of_the_new_slots_and_m_grows_by_the_largest_group():
    q, _, _ = rand_qkv()
    q[:, :2] *= torch.linspace(0.2, 5.0, N).view(1, N, 1)  # group 0 spreads more
    _, part_q, _ = partitions(HTTMParams(**GROUPED))
    sm = SlotMap(assign(group_gather(q, 2), 2, part_q).slot_of.view(1, 2, N), part_q.n_slots)
    sm2, q_m2 = filter_outliers(q, sm.merge(q), sm, 0.1)
    flagged = (sm2.slot_of >= sm.n_slots).sum(-1)[0]  # per group
    assert flagged[0] != flagged[1]
    assert sm2.n_slots == sm.n_slots + int(flagged.max())
    # the padding slots of the group with fewer flagged queries are empty: zero, as merge gives them
    torch.testing.assert_close(q_m2, sm2.merge(q), rtol=1e-5, atol=1e-5)


def test_half_precision_queries_are_filtered_in_float32_without_overflow():
    # slots of 128 queries near 1000: a slot's sum (~128 000) is beyond float16's range (65 504)
    g = torch.Generator().manual_seed(2)
    q = 1000.0 + torch.randn(1, 4, N, 8, generator=g)
    sm = SlotMap((torch.arange(N) // 128).expand(1, 4, N).contiguous(), (N + 127) // 128)
    qh = q.half()
    sm2, q_m2 = filter_outliers(qh, sm.merge(qh.float()).half(), sm, 0.1)
    assert q_m2.dtype == torch.float16 and sm2.n_slots > sm.n_slots
    torch.testing.assert_close(q_m2.float(), sm2.merge(qh.float()), rtol=2e-3, atol=0.0)


def test_the_deviation_computed_in_chunks_of_rows_flags_the_same_queries(monkeypatch):
    import harness.methods.httm as httm

    q, _, _ = structured_qkv(B=2)
    _, part_q, _ = partitions(HTTMParams(**SMALL))
    sm = SlotMap(assign(group_gather(q, 4), 8, part_q).slot_of.view(2, 4, N), part_q.n_slots)
    whole = filter_outliers(q, sm.merge(q), sm, 0.1)
    monkeypatch.setattr(httm, "DEV_CHUNK_ELEMS", N * 8)  # one (batch, head) row per chunk
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch resizing an output slice that has the wrong shape
        rows = filter_outliers(q, sm.merge(q), sm, 0.1)
    assert torch.equal(rows[0].slot_of, whole[0].slot_of)
    torch.testing.assert_close(rows[1], whole[1])


def test_strided_dst_positions_are_the_centres_of_equal_strides_computed_exactly():
    # n = 3027 tokens, 2851 dst: in float32 one of the positions (i + 1/2) n / nd rounds down wrongly
    n, nd = 3027, 2851
    blocks = temporal_blocks(1, n, n, 1, 0, False, False)
    part = block_partition(blocks, n, (n - nd) / n, 0.0, "strided", 0)
    (ms,) = [s for s in part.sets if s.r > 0]
    assert ms.cand.flatten().tolist() == [(2 * i + 1) * n // (2 * nd) for i in range(nd)]


def test_an_unknown_dst_rule_is_refused_naming_the_rules():
    blocks = temporal_blocks(S, P, 16, 4, PS, True, False)
    rules = r"^HTTM dst_rule='diagonal' is not one of strided, random, first_frame$"
    with pytest.raises(ValueError, match=rules):
        block_partition(blocks, N, 0.5, 0.0, "diagonal", 0)


def test_the_random_dst_rule_does_not_depend_on_torchs_global_generator():
    blocks = temporal_blocks(S, P, 16, 4, PS, True, False)
    parts = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        # a copy of the blocks is a new cache key: the partition is computed again
        parts.append(block_partition(dataclasses.replace(blocks), N, 0.5, 0.0, "random", 3))
    assert [torch.equal(a.cand, b.cand) for a, b in zip(parts[0].sets, parts[1].sets)] == \
        [True] * len(parts[0].sets)
