"""Spark3R-style attention against an independent token-by-token reference (merged query groups and
the kept key set built by hand, attention by explicit softmax, outputs copied to every member)."""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch
from merge_refs import bipartite_labels, cosine, groups_of

from baselines.fastvggt import cell_dst_mask
from baselines.spark3r import (
    Spark3RParams,
    count_work,
    is_sensitive,
    kept_frames,
    length_rule,
    make_spark3r,
    query_partition,
    ratios,
    schedule_depth,
)
from harness.metrics.memory_model import OUTPUT_LATER, WIDE_OUTPUT, SeamShape
from harness.models.seam import AttentionLayout, Recorder, sdpa_attention
from harness.models.vggt import build_vggt
from harness.params import describe
from harness.registry import create_method
from harness.store.columns import METRIC_PREFIXES

S, PS, PH, PW, H, D = 3, 1, 4, 4, 2, 8  # 3 frames of 1 special + 4x4 patches, 2 heads of 8
P = PS + PH * PW
SENSITIVE, LOW = 12, 3  # a layer inside VGGT-1B's sensitive band 11..16, and one below it


def qkv(seed=0, frames=S, batch=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, H, frames * P, D, generator=g, dtype=torch.float64) for _ in range(3)]


def layout(layer=SENSITIVE, rec=None, frames=S):
    return AttentionLayout(frames=frames, tokens_per_frame=P, patch_h=PH, patch_w=PW, patch_start=PS,
                           layer=layer, recorder=rec)


def params(**kw):
    return Spark3RParams(**{"sp_schedule": "constant", **kw})


# ----------------------------------------------------------------------------------- the reference


def query_labels(q, frames, q_merge, group, first_dst):
    """One label per token (same label = one merged query). Special tokens stay alone; in each group
    of ``group`` frames the targets are frame 0's patches (``first_dst``) and FastVGGT's per-cell
    targets (seed 33) of the other frames; the r = round(q_merge * patches of the group) sources
    most similar to their best target of the group join it. q: [H, N, d]."""
    metric = q.mean(0)
    cells = cell_dst_mask(frames, PH, PW, 33).view(frames, PH * PW)
    labels = list(range(frames * P))
    next_label = frames * P
    for g0 in range(0, frames, group):
        src, dst = [], []
        for f in range(g0, min(frames, g0 + group)):
            for i in range(PH * PW):
                t = f * P + PS + i
                (dst if (f == 0 and first_dst) or bool(cells[f, i]) else src).append(t)
        r = min(len(src), int(q_merge * (len(src) + len(dst)) + 0.5))
        next_label = bipartite_labels(metric, src, dst, r, labels, next_label)
    return labels


def kept_kv(frames, kv_keep):
    """Every special token, and the patch tokens of round(kv_keep * S) evenly spaced frames."""
    n = min(frames, max(1, int(kv_keep * frames + 0.5)))
    kept_frames = {i * frames // n for i in range(n)}
    return [f * P + t for f in range(frames) for t in range(P) if t < PS or f in kept_frames]


def reference(q, k, v, q_merge, kv_keep, group=20, first_dst=True, frames=S):
    """Each batch row: merged queries (plain mean of the members) attend to the kept keys/values by
    explicit softmax; each merged query's output row is copied to all its members."""
    out = torch.empty_like(q)
    for b in range(q.shape[0]):
        members = groups_of(query_labels(q[b], frames, q_merge, group, first_dst))
        kv = kept_kv(frames, kv_keep)
        for h in range(H):
            keys, vals = k[b, h, kv], v[b, h, kv]
            for g in members:
                qm = q[b, h, g].mean(0)
                row = torch.softmax(keys @ qm / math.sqrt(D), dim=0) @ vals
                for t in g:
                    out[b, h, t] = row
    return out


# --------------------------------------------------------------------------------------- the tests


def test_param_names_are_prefixed_and_documented():
    infos = describe(Spark3RParams)
    assert all(i.name.startswith("sp_") and i.help for i in infos)
    assert not [i.name for i in infos if i.name.startswith(METRIC_PREFIXES)]
    with pytest.raises(ValueError, match="sp_sensitive_last=3 must be >= sp_sensitive_first=5"):
        Spark3RParams(sp_sensitive_first=5, sp_sensitive_last=3)


def test_both_knobs_zero_equal_sdpa_with_the_same_counters():
    q, k, v = qkv()
    for p, layer in ((params(sp_q_merge=0.0, sp_kv_prune=0.0), LOW),
                     (Spark3RParams(sp_q_merge=0.0, sp_kv_prune=0.0), SENSITIVE)):
        rec, plain = Recorder(), Recorder()
        out = make_spark3r(p)(q, k, v, layout(layer, rec))
        torch.testing.assert_close(out, sdpa_attention(q, k, v, layout(layer, plain)))
        assert rec.counters == plain.counters


@pytest.mark.parametrize("q_merge, kv_prune, group, first_dst, frames, batch", [
    (0.5, 0.5, 20, True, 3, 1),    # one group, frames 0 and 1 keep their keys/values
    (0.3, 0.34, 20, False, 3, 1),  # only the most similar part of the sources merges
    (0.6, 0.0, 2, True, 5, 1),     # groups {0,1} {2,3} {4}: no match crosses a group
    (0.75, 0.6, 2, False, 4, 2),   # all sources merge; two batch rows decide separately
    (0.0, 0.7, 20, True, 3, 1),    # keys/values pruned only
])
def test_matches_the_token_by_token_reference(q_merge, kv_prune, group, first_dst, frames, batch):
    q, k, v = qkv(1, frames, batch)
    p = params(sp_q_merge=q_merge, sp_kv_prune=kv_prune, sp_group_frames=group, sp_first_frame_dst=first_dst)
    out = make_spark3r(p)(q, k, v, layout(frames=frames))
    torch.testing.assert_close(out, reference(q, k, v, q_merge, 1 - kv_prune, group, first_dst, frames))
    assert not torch.allclose(out, sdpa_attention(q, k, v))


def test_every_member_of_a_merged_query_gets_its_output_row():
    q, k, v = qkv(2)
    out = make_spark3r(params(sp_q_merge=0.75, sp_kv_prune=0.0))(q, k, v, layout())
    members = [g for g in groups_of(query_labels(q[0], S, 0.75, 20, True)) if len(g) > 1]
    assert sum(len(g) - 1 for g in members) == 24  # all 24 sources merged, some targets take several
    for g in members:
        for h in range(H):
            expected = sdpa_attention(q[:, h:h + 1, g].mean(2, keepdim=True), k[:, h:h + 1], v[:, h:h + 1])
            for t in g:
                torch.testing.assert_close(out[0, h, t], expected[0, 0, 0])


def test_pruned_keys_and_values_are_dropped_not_averaged():
    q, k, v = qkv(3)
    out = make_spark3r(params(sp_q_merge=0.0, sp_kv_prune=0.5))(q, k, v, layout())
    # 2 of 3 frames kept: frames 0 and 1 in full, frame 2 only its special token (index 34)
    kept = list(range(2 * P)) + [2 * P]
    torch.testing.assert_close(out, sdpa_attention(q, k[:, :, kept], v[:, :, kept]))


def test_special_tokens_are_never_merged_or_pruned():
    q, k, v = qkv(4)
    rec = Recorder()
    p = Spark3RParams(sp_q_merge=0.75, sp_kv_prune=0.99, sp_first_frame_dst=False)
    out = make_spark3r(p)(q, k, v, layout(LOW, rec))  # the harshest setting: one frame of keys kept
    kept = [0, P, 2 * P] + list(range(PS, P))  # every special token and frame 0's patches
    specials = [0, P, 2 * P]
    torch.testing.assert_close(out[:, :, specials], sdpa_attention(q[:, :, specials], k[:, :, kept],
                                                                   v[:, :, kept]))
    assert rec.counters["tokens_kv"] == len(kept) * H
    assert rec.counters["tokens_q"] == (S * PS + S * PH * PW // 4) * H  # specials + one query per cell


def test_the_tiered_schedule_by_value_at_depth_24_and_at_the_proxys_4():
    p = Spark3RParams(sp_kv_prune=0.5)
    assert [layer for layer in range(24) if is_sensitive(p, layer)] == [11, 12, 13, 14, 15, 16]
    keep = {layer: ratios(p, layer, S)[1] for layer in (0, 7, 10, 11, 16, 17, 23)}
    assert keep == {0: 0.5 / 3, 7: 0.5 / 3, 10: 0.5 / 3, 11: 0.5, 16: 0.5, 17: 0.5 / 3, 23: 0.5 / 3}
    proxy = Spark3RParams(sp_kv_prune=0.5, sp_depth=4)  # centres 3, 9, 15, 21 of 24: only layer 2
    assert [ratios(proxy, layer, S)[1] for layer in range(4)] == [0.5 / 3, 0.5 / 3, 0.5, 0.5 / 3]
    # sp_depth 0 (the default) takes the model's depth from the layout; an explicit one wins
    assert [ratios(p, layer, S, model_depth=4)[1] for layer in range(4)] == [0.5 / 3, 0.5 / 3, 0.5, 0.5 / 3]
    assert ratios(Spark3RParams(sp_kv_prune=0.5, sp_depth=24), 2, S, model_depth=4)[1] == 0.5 / 3
    assert all(ratios(params(sp_kv_prune=0.5), layer, S) == (0.5, 0.5) for layer in range(24))


@pytest.mark.parametrize("layer, depth, kv_keep", [(8, 24, 0.7 / 3), (14, 24, 0.7), (1, 4, 0.7 / 3),
                                                   (2, 4, 0.7)])
def test_layers_prune_by_the_schedule(layer, depth, kv_keep):
    q, k, v = qkv(5, frames=4)
    p = Spark3RParams(sp_q_merge=0.4, sp_kv_prune=0.3, sp_depth=depth)
    out = make_spark3r(p)(q, k, v, layout(layer, frames=4))
    torch.testing.assert_close(out, reference(q, k, v, 0.4, kv_keep, frames=4))


def test_length_rule_gives_the_papers_factors():
    assert length_rule(50) == (0.0, 0.0)
    assert length_rule(200) == (0.5, 1 - 1 / 5)
    assert length_rule(400) == (1 - 1 / 3, 1 - 1 / 10)
    assert length_rule(1000) == (0.75, 1 - 1 / 25)
    p = Spark3RParams(sp_q_merge=0.1, sp_kv_prune=0.1, sp_length_rule=True)
    assert ratios(p, SENSITIVE, 1000) == pytest.approx((0.75, 1 / 25))
    assert ratios(p, LOW, 1000) == pytest.approx((0.75, 1 / 75))
    assert ratios(p, LOW, 40) == pytest.approx((0.0, 1 / 3))  # short inputs: only the low layers are pruned


def test_counters_on_a_hand_computed_case():
    q, k, v = qkv()
    rec = Recorder()
    make_spark3r(params())(q, k, v, layout(rec=rec))
    # frame 0: 16 targets; frames 1, 2: 4 targets + 12 sources each; 24 of the 48 patch queries merge
    M, L = S * P - 24, S * PS + 2 * PH * PW
    assert rec.counters["tokens_q"] == M * H and rec.counters["tokens_kv"] == L * H
    assert rec.counters["attn_flops"] == 4 * H * M * L * D
    assert rec.counters["match_flops"] == 2 * 24 * 24 * D  # 24 sources against 24 targets
    assert rec.counters["attn_bytes"] == H * (2 * M + 2 * L) * D * 8
    # merge reads N queries and writes M, unmerge the reverse; the k and v gathers read and write L
    N = S * P
    assert rec.counters["agg_bytes"] == H * (2 * (N + M) + 4 * L) * D * 8
    assert rec.counters["match_bytes"] == N * D * 8  # the head-averaged queries, read once


def test_counters_of_pruning_alone_and_of_merging_alone():
    q, k, v = qkv()
    prune = Recorder()
    make_spark3r(params(sp_q_merge=0.0))(q, k, v, layout(rec=prune))
    L = S * PS + 2 * PH * PW  # every special token and 2 of the 3 frames' patches
    assert prune.counters["tokens_q"] == S * P * H and prune.counters["tokens_kv"] == L * H
    assert prune.counters["agg_bytes"] == H * 4 * L * D * 8  # no query moves
    assert "match_flops" not in prune.counters and "match_bytes" not in prune.counters
    merge = Recorder()
    make_spark3r(params(sp_kv_prune=0.0))(q, k, v, layout(rec=merge))
    M, N = S * P - 24, S * P
    assert merge.counters["tokens_kv"] == N * H
    assert merge.counters["agg_bytes"] == H * 2 * (N + M) * D * 8  # every key kept: no gathers


def test_bad_layouts_and_layers_are_refused():
    q, k, v = qkv()
    f = make_spark3r(Spark3RParams(sp_depth=4))
    with pytest.raises(ValueError, match="global layer 4 is outside a depth of 4 global layers"):
        f(q, k, v, layout(layer=4))
    short = [t[:, :, :-1] for t in (q, k, v)]
    with pytest.raises(ValueError, match=f"Spark3R: layout has {S * P} tokens but q has N={S * P - 1}"):
        f(*short, layout(layer=0))


def test_runs_in_vggt_tiny_through_the_registry(one_thread):
    torch.manual_seed(0)
    model = build_vggt("vggt-tiny")  # 4 global layers; 28 x 42 frames: 2 x 3 patches + 5 special tokens
    images = torch.rand(1, 4, 3, 28, 42, generator=torch.Generator().manual_seed(1))

    def aggregate(fn=None, rec=None):
        with torch.inference_mode():
            return torch.stack(model.aggregator(images, attention_fn=fn, recorder=rec)[0])

    off = create_method("vggt", "spark3r", params(sp_q_merge=0.0, sp_kv_prune=0.0))
    torch.testing.assert_close(aggregate(off), aggregate(), atol=1e-5, rtol=1e-5)
    rec = Recorder()
    on = create_method("vggt", "spark3r", Spark3RParams())  # depth 4 from the layout
    out = aggregate(on, rec)
    assert torch.isfinite(out).all() and not torch.allclose(out, aggregate(), atol=1e-3)
    # kept keys/values per layer: 20 special + 2 frames x 6 patches (layer 2), 20 + 1 x 6 (layers 0, 1, 3)
    assert rec.counters["tokens_kv"] == (32 + 3 * 26) * 4


# ------------------------------------------------------------------------- the schedule's edges


def test_a_sensitive_band_of_one_layer_is_allowed():
    p = Spark3RParams(sp_sensitive_first=5, sp_sensitive_last=5)
    assert [layer for layer in range(24) if is_sensitive(p, layer)] == [5]


def test_a_layer_centred_on_the_bands_first_layer_is_in_and_one_past_its_last_is_out():
    # at depth 12 the layers' centres are (layer + 0.5) * 24 / 12 = 1, 3, ..., 23: layer 5's is 11, the
    # band's first layer (in); layer 8's is 17, one past its last layer 16 (out)
    p = Spark3RParams(sp_depth=12)
    assert [layer for layer in range(12) if is_sensitive(p, layer)] == [5, 6, 7]


def test_the_schedule_depth_is_24_when_neither_the_knob_nor_the_model_gives_one():
    assert schedule_depth(Spark3RParams()) == 24
    assert schedule_depth(Spark3RParams(), 4) == 4
    assert schedule_depth(Spark3RParams(sp_depth=12), 4) == 12


def test_a_layer_outside_the_depth_is_refused_naming_the_knob_that_fixes_it():
    with pytest.raises(ValueError) as err:
        is_sensitive(Spark3RParams(sp_depth=4), 4)
    assert str(err.value) == ("Spark3R: global layer 4 is outside a depth of 4 global layers; set sp_depth "
                              "to the model's number of global layers (or 0: the model's own)")


def test_the_length_rules_thresholds_belong_to_the_shorter_tier():
    # r_Q 1 up to 100 frames, 2 up to 300, 3 up to 500, then 4; r_KV 1 up to 100, then ceil(S / 40)
    assert length_rule(100) == (0.0, 0.0)
    assert length_rule(101) == pytest.approx((1 - 1 / 2, 1 - 1 / 3))  # ceil(2.525) = 3
    assert length_rule(300) == pytest.approx((1 - 1 / 2, 1 - 1 / 8))  # ceil(7.5) = 8
    assert length_rule(301) == pytest.approx((1 - 1 / 3, 1 - 1 / 8))
    assert length_rule(500) == pytest.approx((1 - 1 / 3, 1 - 1 / 13))  # ceil(12.5) = 13
    assert length_rule(501) == pytest.approx((1 - 1 / 4, 1 - 1 / 13))


def test_the_length_rules_kv_factor_is_the_frame_count_over_40_rounded_up():
    assert length_rule(120)[1] == pytest.approx(1 - 1 / 3)
    assert length_rule(121)[1] == pytest.approx(1 - 1 / 4)  # 3.025 -> 4


def test_the_length_rule_at_a_short_input_prunes_only_the_low_layers_keys():
    # 3 frames: r_Q = r_KV = 1 overrides both knobs; the tiered schedule still keeps a third of the
    # frames' keys/values (frame 0) in the low layers
    q, k, v = qkv(6)
    p = Spark3RParams(sp_q_merge=0.5, sp_kv_prune=0.5, sp_length_rule=True)
    torch.testing.assert_close(make_spark3r(p)(q, k, v, layout(SENSITIVE)), sdpa_attention(q, k, v))
    torch.testing.assert_close(make_spark3r(p)(q, k, v, layout(LOW)), reference(q, k, v, 0.0, 1 / 3))


def test_kept_frames_are_whole_frame_numbers_rounded_down():
    assert kept_frames(5, 0.6) == [0, 1, 3]  # 3 of 5 frames: 0, 5/3 and 10/3 rounded down


def test_a_layout_whose_patch_grid_does_not_fill_its_frames_is_refused():
    q, k, v = qkv()
    bad = AttentionLayout(frames=S, tokens_per_frame=P, patch_h=3, patch_w=PW, patch_start=PS,
                          layer=SENSITIVE)
    with pytest.raises(ValueError) as err:
        make_spark3r(params())(q, k, v, bad)
    assert str(err.value) == "Spark3R: tokens_per_frame=17 != patch_start=1 + patch_h*patch_w=3*4"


# ------------------------------------------------------------------------- phases and observations


class PhaseLog(Recorder):
    """A recorder that notes the phases a call enters, in order."""

    def __init__(self):
        super().__init__()
        self.entered = []

    @contextmanager
    def phase(self, name):
        self.entered.append(name)
        yield


def test_a_call_that_merges_and_prunes_enters_match_aggregate_attention_aggregate():
    q, k, v = qkv()
    rec = PhaseLog()
    make_spark3r(params())(q, k, v, layout(rec=rec))
    assert rec.entered == ["match", "aggregate", "attention", "aggregate"]


def test_merging_records_the_10th_percentile_of_the_merged_queries_best_similarity():
    q, k, v = qkv(7)
    rec = Recorder()
    make_spark3r(params(sp_q_merge=0.75, sp_kv_prune=0.0))(q, k, v, layout(rec=rec))
    # all 24 sources (12 patches of frames 1 and 2 each) merge; each one's cosine similarity, on the
    # queries averaged over heads, to its most similar target (frame 0's patches, one per cell after)
    metric = q[0].mean(0)
    cells = cell_dst_mask(S, PH, PW, 33).view(S, PH * PW)
    patches = [(f, i, f * P + PS + i) for f in range(S) for i in range(PH * PW)]
    dst = [t for f, i, t in patches if f == 0 or bool(cells[f, i])]
    src = [t for f, i, t in patches if not (f == 0 or bool(cells[f, i]))]
    best = sorted(max(cosine(metric[s], metric[t]) for t in dst) for s in src)
    assert len(best) == 24
    # the order statistic k = round(0.1 * (24 - 1)) + 1 = 3: the third smallest
    assert rec.values["merge_sim_p10"] == pytest.approx([best[2]], rel=1e-5)


def test_a_layer_without_sampled_merge_scores_records_no_merge_similarity():
    q = qkv()[0]
    rec = Recorder()
    count_work(rec, q, query_partition(S, PH, PW, PS, 0.5, 20, True, "cpu"), S * P, True, torch.empty(0))
    assert "merge_sim_p10" not in rec.values


# ------------------------------------------------------------------------- the memory model by hand


def seam(**kw):
    """The seam of the tests' layout (3 frames of 1 special token + 4 x 4 patches: N = 51), float32,
    the CPU's chunk budgets (one gather of the metric here)."""
    return SeamShape(**{"frames": S, "tokens_per_frame": P, "patch_h": PH, "patch_w": PW, "patch_start": PS,
                        "heads": H, "head_dim": D, "elem_bytes": 4, "device": "cpu", **kw})


def partition_bytes(n, ns, nc):
    """A one-block partition's int64 index tensors: static slots [N], src [1, ns], candidates and their
    slots [1, nc] each, the block's first unmerged slot [1, 1], candidates then src [1, nc + ns]."""
    return 8 * (n + ns + 2 * nc + 1 + nc + ns)


def test_merged_queries_over_pruned_keys_peak_at_the_unmerge_by_hand():
    # sp_q_merge 0.5, sp_kv_prune 0.5, 2 batch rows of 3 heads. Frame 0's 16 patches and one per cell
    # of frames 1, 2 are the 24 targets, the other 24 patches the sources; round(0.5 * 48) = 24 merge:
    # M = 51 - 24 = 27 slots. round(0.5 * 3) = 2 frames keep their keys/values: L = 3 + 2 * 16 = 35.
    B, heads, N, M, L = 2, 3, S * P, 27, 35
    assert params().seam_peak_bytes(seam(batch=B, heads=heads)) == {
        "cached: query partition": partition_bytes(N, 24, 24),
        "cached: kept keys/values index": 8 * L,
        "slot map (int64)": 8 * B * N,
        "slot counts": 4 * B * M,
        "merged q": 4 * B * heads * M * D,  # float32 sums divided in place: no copy
        "kept k": 4 * B * heads * L * D,
        "kept v": 4 * B * heads * L * D,
        "attention output": 4 * B * heads * M * D,  # SDPA's on the M queries, copied into the output
        "unmerge index (int64)": 8 * B * heads * N,
    }


def test_with_one_head_the_peak_is_the_matching_on_the_head_averaged_queries_by_hand():
    # 4 frames, sp_q_merge 0.75 with no frame-0 rule: one target per cell (16), the other 48 patches are
    # sources and all merge (round(0.75 * 64) = 48); 1 of 4 frames keeps its keys/values (L = 4 + 16).
    # One head under autocast (q, k float32, v bf16): the matching's [B, N, d] tensors outweigh the
    # merged attention, whose output comes after this peak.
    N, ns, nc, L = 4 * P, 48, 16, 4 * PS + 16
    p = params(sp_q_merge=0.75, sp_kv_prune=0.75, sp_first_frame_dst=False)
    assert p.seam_peak_bytes(seam(frames=4, heads=1, elem_bytes=2, qk_elem_bytes=4, autocast=True)) == {
        "cached: query partition": partition_bytes(N, ns, nc),
        "cached: kept keys/values index": 8 * L,
        "queries averaged over heads": 4 * N * D,
        "slot map (int64)": 8 * N,
        "best-match index (int64)": 8 * ns + 8 * ns,  # the set's and the kernel's
        "gathered metric": 4 * (nc + ns) * D,  # [targets | sources] of the one block, float32
        "merge targets (int64)": 8 * ns,
        "merged mask": ns,
        OUTPUT_LATER: -2 * N * D,
    }


@pytest.mark.parametrize("qk_bytes", [4, 2])
def test_pruning_alone_under_autocast_copies_to_bf16_only_what_is_not_bf16(qk_bytes):
    # sp_kv_prune 0.5 alone: 2 of 3 frames keep their keys/values (L = 35), SDPA on all N = 51 queries.
    # v is bf16; q and k float32 (the GPU seam: after their LayerNorm) or already bf16.
    N, L = S * P, 35
    copies = {"q in bf16 (autocast copy)": 2 * H * N * D, "k in bf16 (autocast copy)": 2 * H * L * D}
    shape = seam(elem_bytes=2, qk_elem_bytes=qk_bytes, autocast=True)
    assert params(sp_q_merge=0.0).seam_peak_bytes(shape) == {
        "cached: query partition": partition_bytes(N, 24, 24),  # built, though none of its sources merge
        "cached: kept keys/values index": 8 * L,
        "kept k": qk_bytes * H * L * D,
        "kept v": 2 * H * L * D,
        **(copies if qk_bytes == 4 else {}),
        "logsumexp (float32)": 4 * H * N,
    }


def test_a_float32_output_outside_autocast_is_counted_beyond_the_bf16_one():
    terms = params(sp_q_merge=0.0).seam_peak_bytes(seam(elem_bytes=2, qk_elem_bytes=4))
    assert terms[WIDE_OUTPUT] == (4 - 2) * H * S * P * D  # SDPA's output takes q's float32
