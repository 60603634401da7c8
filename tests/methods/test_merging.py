"""Shared merging primitives (harness/methods/merging.py): slot maps, matching, partitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.methods.merging import (
    SlotMap,
    assign,
    best_match,
    merged_count,
    percentile,
    rows_gather,
    shared_merge_attention,
    src_slots,
    static_partition,
    with_extra_candidates,
)
from harness.models.seam import Recorder


def test_slot_map_merge_is_plain_mean_per_slot():
    x = torch.randn(1, 1, 5, 3)
    sm = SlotMap(torch.tensor([[[0, 1, 0, 2, 0]]]), 3)
    merged = sm.merge(x)
    assert merged.shape == (1, 1, 3, 3)
    torch.testing.assert_close(merged[0, 0, 0], x[0, 0, [0, 2, 4]].mean(0))
    torch.testing.assert_close(merged[0, 0, 1], x[0, 0, 1])
    torch.testing.assert_close(merged[0, 0, 2], x[0, 0, 3])


def test_slot_map_unmerge_copies_each_slot_row_back():
    sm = SlotMap(torch.tensor([[[2, 0, 2, 1]]]), 3)
    y = torch.arange(6.0).view(1, 1, 3, 2)
    out = sm.unmerge(y)
    assert out.shape == (1, 1, 4, 2)
    torch.testing.assert_close(out[0, 0], y[0, 0, [2, 0, 2, 1]])


def test_slot_map_empty_slots_merge_to_zero_rows():
    sm = SlotMap(torch.tensor([[[0, 0, 2]]]), 4)
    merged = sm.merge(torch.ones(1, 1, 3, 2))
    torch.testing.assert_close(merged[0, 0, 1], torch.zeros(2))
    torch.testing.assert_close(merged[0, 0, 3], torch.zeros(2))
    assert sm.occupied().tolist() == [[2]]


def test_slot_map_group_decision_applies_to_every_head_of_the_group():
    B, H, N, d = 2, 4, 6, 3
    slot_of = torch.randint(0, 4, (B, 2, N))
    sm = SlotMap(slot_of, 4)
    x = torch.randn(B, H, N, d)
    merged = sm.merge(x)
    for b in range(B):
        for h in range(H):
            ref = SlotMap(slot_of[b : b + 1, h // 2 : h // 2 + 1], 4).merge(x[b : b + 1, h : h + 1])
            torch.testing.assert_close(merged[b : b + 1, h : h + 1], ref)


def test_slot_map_rejects_heads_not_divisible_by_groups():
    sm = SlotMap(torch.zeros(1, 3, 4, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="4 heads cannot be split into 3"):
        sm.merge(torch.randn(1, 4, 4, 2))


def test_best_match_finds_the_most_cosine_similar_candidate():
    src = torch.randn(3, 7, 5)
    cand = torch.randn(3, 4, 5) * torch.rand(3, 4, 1) * 10
    score, index = best_match(src, cand)
    sim = F.normalize(src, dim=-1) @ F.normalize(cand, dim=-1).transpose(1, 2)
    torch.testing.assert_close(score, sim.max(-1).values)
    assert torch.equal(index, sim.argmax(-1))


def test_best_match_chunked_equals_unchunked():
    src, cand = torch.randn(4, 9, 6), torch.randn(4, 5, 6)
    s1, i1 = best_match(src, cand)
    s2, i2 = best_match(src, cand, chunk_elems=7)  # forces row and src chunking
    torch.testing.assert_close(s1, s2)
    assert torch.equal(i1, i2)


def test_src_slots_merge_the_top_r_and_number_the_rest():
    score = torch.tensor([[[0.1, 0.9, 0.5, 0.7]]])
    index = torch.tensor([[[0, 1, 1, 0]]])
    cand_slot = torch.tensor([[10, 11]])
    slot, merged = src_slots(score, index, cand_slot, torch.tensor([[20]]), r=2)
    assert merged.tolist() == [[[False, True, False, True]]]
    # merged src take their candidate's slot; the others 20, 21 in descending score order
    assert slot.tolist() == [[[21, 11, 20, 10]]]


def test_static_partition_numbers_kept_then_dst_then_unmerged_src():
    kept = torch.tensor([0])
    src = torch.tensor([[1, 2, 3]])
    dst = torch.tensor([[4, 5]])
    part = static_partition(6, kept, [(src, dst, 1)], "cpu")
    assert part.n_slots == 1 + 2 + 2  # kept + dst + (3 - 1) unmerged src
    assert part.static_slot.tolist() == [0, -1, -1, -1, 1, 2]
    assert part.sets[0].unm_base.tolist() == [[3]]


def test_static_partition_with_r_zero_gives_src_static_slots():
    none = torch.tensor([], dtype=torch.long)
    part = static_partition(4, none, [(torch.tensor([[0, 1]]), torch.tensor([[2, 3]]), 0)], "cpu")
    assert sorted(part.static_slot.tolist()) == [0, 1, 2, 3]
    assert part.match_flops(rows=1, dim=8) == 0.0


def test_assign_equals_brute_force_matching():
    torch.manual_seed(0)
    N, D = 12, 4
    metric = torch.randn(2, N, D)
    src = torch.tensor([[0, 1, 2, 3], [6, 7, 8, 9]])
    dst = torch.tensor([[4, 5], [10, 11]])
    part = static_partition(N, torch.tensor([], dtype=torch.long), [(src, dst, 4)], "cpu")
    slot_of = assign(rows_gather(metric), 2, part).slot_of
    for row in range(2):
        for blk in range(2):
            for s in src[blk].tolist():
                sims = F.cosine_similarity(metric[row, s : s + 1], metric[row, dst[blk]], dim=-1)
                best = dst[blk, sims.argmax()].item()
                assert slot_of[row, s] == slot_of[row, best]


def test_extra_candidates_can_absorb_src():
    metric = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.01]]])  # token 2 ~ kept token 0
    part = static_partition(3, torch.tensor([0]), [(torch.tensor([[2]]), torch.tensor([[1]]), 1)], "cpu")
    part = with_extra_candidates(part, [torch.tensor([[0]])])
    slot_of = assign(rows_gather(metric), 1, part).slot_of
    assert slot_of[0, 2] == slot_of[0, 0]


def test_extra_candidates_must_have_own_slots():
    part = static_partition(3, torch.tensor([0]), [(torch.tensor([[2]]), torch.tensor([[1]]), 1)], "cpu")
    with pytest.raises(ValueError, match="src token"):
        with_extra_candidates(part, [torch.tensor([[2]])])


def test_merged_count_rounds_half_up_and_clamps():
    assert merged_count(0.9, 10) == 9
    assert merged_count(0.25, 2) == 1
    assert merged_count(1.5, 4) == 4
    assert merged_count(0.0, 7) == 0


def test_percentile_is_an_order_statistic():
    assert percentile(torch.arange(11.0), 0.1) == 1.0
    assert percentile(torch.tensor([3.0]), 0.1) == 3.0
    assert percentile(torch.empty(0), 0.1) != percentile(torch.empty(0), 0.1)  # NaN


def test_shared_merge_attention_with_identity_map_equals_sdpa():
    q, k, v = (torch.randn(2, 3, 10, 4) for _ in range(3))
    sm = SlotMap(torch.arange(10).expand(2, 1, 10).contiguous(), 10)
    rec = Recorder()
    out = shared_merge_attention(q, k, v, sm, rec)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    assert rec.counters["tokens_q"] == 30 and rec.counters["pad_q"] == 0
