"""AVGGT-style attention against independent loop references (per frame, per token, by hand)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.avggt import AVGGTParams, make_avggt
from harness.models.seam import AttentionLayout, Recorder, sdpa_attention

S, PS, PH, PW, H, D = 3, 1, 4, 4, 2, 8  # 3 frames of 1 special + 4x4 patches, 2 heads of 8
P = PS + PH * PW


def qkv(seed=0, frames=S):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, H, frames * P, D, generator=g, dtype=torch.float64) for _ in range(3)]


def layout(layer=5, rec=None, frames=S):
    return AttentionLayout(frames=frames, tokens_per_frame=P, patch_h=PH, patch_w=PW, patch_start=PS,
                           layer=layer, recorder=rec)


def reference(q, k, v, p: AVGGTParams, frames=S):
    """Each query frame's key set built token by token: own frame, other frames' special tokens and
    grid patches (row and column multiples of the stride), one mean key per other frame."""
    out = torch.empty_like(q)
    for f in range(frames):
        keys, vals = [], []
        for g in range(frames):
            frame_k, frame_v = k[:, :, g * P:(g + 1) * P], v[:, :, g * P:(g + 1) * P]
            if g == f and p.keep_diagonal:
                keys.append(frame_k)
                vals.append(frame_v)
                continue
            kept = list(range(PS)) + [PS + r * PW + c for r in range(PH) for c in range(PW)
                                      if r % p.kv_stride == 0 and c % p.kv_stride == 0]
            dropped = [t for t in range(P) if t not in kept]
            keys.append(frame_k[:, :, kept])
            vals.append(frame_v[:, :, kept])
            if p.mean_fill and dropped:
                keys.append(frame_k[:, :, dropped].mean(2, keepdim=True))
                vals.append(frame_v[:, :, dropped].mean(2, keepdim=True))
        out[:, :, f * P:(f + 1) * P] = F.scaled_dot_product_attention(
            q[:, :, f * P:(f + 1) * P], torch.cat(keys, 2), torch.cat(vals, 2))
    return out


def test_nothing_converted_and_nothing_subsampled_equals_sdpa():
    q, k, v = qkv()
    for diag in (True, False):
        p = AVGGTParams(frame_layers=0, kv_stride=1, keep_diagonal=diag, mean_fill=True)
        torch.testing.assert_close(make_avggt(p)(q, k, v, layout(layer=0)), sdpa_attention(q, k, v))


def test_a_converted_layer_is_attention_within_each_frame():
    q, k, v = qkv(1)
    out = make_avggt(AVGGTParams(frame_layers=2))(q, k, v, layout(layer=1))
    for f in range(S):
        sl = slice(f * P, (f + 1) * P)
        expected = F.scaled_dot_product_attention(q[:, :, sl], k[:, :, sl], v[:, :, sl])
        torch.testing.assert_close(out[:, :, sl], expected)
    assert not torch.allclose(out, sdpa_attention(q, k, v))  # and not global attention
    later = make_avggt(AVGGTParams(frame_layers=2, kv_stride=1))(q, k, v, layout(layer=2))
    torch.testing.assert_close(later, sdpa_attention(q, k, v))  # layers from frame_layers on are global


@pytest.mark.parametrize("stride, diag, fill",
                         [(2, True, True), (2, True, False), (3, False, True), (2, False, False)])
def test_subsampled_layers_match_the_token_by_token_reference(stride, diag, fill):
    q, k, v = qkv(2)
    p = AVGGTParams(frame_layers=0, kv_stride=stride, keep_diagonal=diag, mean_fill=fill)
    out = make_avggt(p)(q, k, v, layout())
    torch.testing.assert_close(out, reference(q, k, v, p))
    assert not torch.allclose(out, sdpa_attention(q, k, v))


def test_frames_are_chunked_without_changing_the_result(monkeypatch):
    import baselines.avggt as avggt

    q, k, v = qkv(3, frames=5)
    p = AVGGTParams(frame_layers=0)
    whole = make_avggt(p)(q, k, v, layout(frames=5))
    monkeypatch.setattr(avggt, "KEY_CHUNK_ELEMS", 1)  # one query frame per chunk
    torch.testing.assert_close(make_avggt(p)(q, k, v, layout(frames=5)), whole)
    torch.testing.assert_close(whole, reference(q, k, v, p, frames=5))


def test_counters_on_a_hand_computed_case():
    q, k, v = qkv()
    rec = Recorder()
    make_avggt(AVGGTParams(frame_layers=0, kv_stride=2))(q, k, v, layout(rec=rec))
    # other frames: 1 special + 2x2 grid patches + 1 mean token = 6 keys; own frame 17; 17 + 2 * 6 = 29
    N = S * P
    assert rec.counters["tokens_kv"] == 29 * H and rec.counters["tokens_q"] == N * H
    assert rec.counters["attn_flops"] == 4 * H * N * 29 * D
    frame = Recorder()
    make_avggt(AVGGTParams(frame_layers=1))(q, k, v, layout(layer=0, rec=frame))
    assert frame.counters["tokens_kv"] == P * H and frame.counters["attn_flops"] == 4 * H * N * P * D


def test_a_layout_that_does_not_match_q_is_refused_by_both_new_methods():
    from baselines.blocksparse import BlockSparseParams, make_blocksparse

    q, k, v = (t[:, :, :-1] for t in qkv())
    with pytest.raises(ValueError, match=f"AVGGT: layout has {S * P} tokens but q has N={S * P - 1}"):
        make_avggt(AVGGTParams())(q, k, v, layout())
    with pytest.raises(ValueError, match="block-sparse: layout has"):
        make_blocksparse(BlockSparseParams())(q, k, v, layout())


def test_every_counter_and_phase_of_both_layer_kinds_by_hand():
    q, k, v = qkv()
    N = S * P
    sub = Recorder(timed=True)
    make_avggt(AVGGTParams(frame_layers=0, kv_stride=2))(q, k, v, layout(rec=sub))
    assert set(sub.phases_ms) == {"aggregate", "attention"}
    # each query frame reads its own key set: 3 frames x 29 keys and values, N queries and outputs
    assert sub.counters["attn_bytes"] == H * (2 * N + 2 * S * 29) * D * 8
    frame = Recorder(timed=True)
    make_avggt(AVGGTParams(frame_layers=1))(q, k, v, layout(layer=0, rec=frame))
    assert set(frame.phases_ms) == {"attention"}
    assert frame.counters["tokens_q"] == N * H
    assert frame.counters["attn_bytes"] == H * (2 * N + 2 * N) * D * 8


@pytest.mark.parametrize("frames_per_chunk", [1, 2, 3])
def test_chunks_of_any_size_even_a_short_last_one_give_the_reference(monkeypatch, frames_per_chunk):
    import baselines.avggt as avggt

    q, k, v = qkv(4, frames=5)
    p = AVGGTParams(frame_layers=0, kv_stride=2)
    # L = own 17 + 5 frames x (1 special + 2 x 2 grid + 1 mean) = 47 keys per query frame
    monkeypatch.setattr(avggt, "KEY_CHUNK_ELEMS", frames_per_chunk * 1 * H * 47 * D)
    torch.testing.assert_close(make_avggt(p)(q, k, v, layout(frames=5)), reference(q, k, v, p, frames=5))


@pytest.mark.parametrize("frames_per_chunk", [1, 2])
def test_two_batch_rows_are_two_independent_sequences(monkeypatch, frames_per_chunk):
    import baselines.avggt as avggt

    rows = [qkv(5), qkv(6)]
    q, k, v = (torch.cat([r[i] for r in rows]) for i in range(3))
    p = AVGGTParams(frame_layers=0, kv_stride=2)
    monkeypatch.setattr(avggt, "KEY_CHUNK_ELEMS", frames_per_chunk * 2 * H * 29 * D)
    out = make_avggt(p)(q, k, v, layout())
    for b, row in enumerate(rows):
        torch.testing.assert_close(out[b:b + 1], reference(*row, p))


def test_a_single_dropped_token_still_gets_its_mean_key():
    """One row of 2 patches at stride 2: patch 1 is the only dropped token; its 'mean' is itself."""
    frames, grid_w = 2, 2
    tokens = PS + grid_w
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, H, frames * tokens, D, generator=g, dtype=torch.float64) for _ in range(3))
    lay = AttentionLayout(frames=frames, tokens_per_frame=tokens, patch_h=1, patch_w=grid_w, patch_start=PS,
                          layer=0)
    p = AVGGTParams(frame_layers=0, kv_stride=2, keep_diagonal=False, mean_fill=True)
    # with the mean token every frame keeps all of its keys: plain attention
    torch.testing.assert_close(make_avggt(p)(q, k, v, lay), sdpa_attention(q, k, v))
    without = AVGGTParams(frame_layers=0, kv_stride=2, keep_diagonal=False, mean_fill=False)
    assert not torch.allclose(make_avggt(without)(q, k, v, lay), sdpa_attention(q, k, v))


def test_under_autocast_the_output_takes_the_attentions_dtype_not_qs():
    q, k, v = (t.float() for t in qkv(8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = make_avggt(AVGGTParams(frame_layers=0, kv_stride=2))(q, k, v, layout())
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
