"""Block-sparse global attention: all blocks kept equals SDPA; known blocks chosen on a hand-built
case; the cumulative-mass rule; dense special tokens; counters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from baselines.blocksparse import BlockSparseParams, make_blocksparse, select_blocks
from harness.models.seam import AttentionLayout, Recorder, sdpa_attention


def layout(frames, tokens, patch_start=0, rec=None, layer=0):
    patch = tokens - patch_start
    return AttentionLayout(frames=frames, tokens_per_frame=tokens, patch_h=1, patch_w=patch,
                           patch_start=patch_start, layer=layer, recorder=rec)


def qkv(n, seed=0, heads=2, d=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, heads, n, d, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("special", [0, 2])
def test_keeping_every_block_equals_sdpa(special):
    q, k, v = qkv(3 * 21)  # 3 frames of 21 tokens; blocks of 8 and 4 leave ragged tails
    p = BlockSparseParams(bs_q_block=8, bs_k_block=4, bs_sparsity=0.0)
    out = make_blocksparse(p)(q, k, v, layout(3, 21, special))
    torch.testing.assert_close(out, sdpa_attention(q, k, v))


def test_each_query_block_attends_to_the_key_block_it_points_at():
    # 1 frame, 8 tokens, no special tokens: query blocks of 2, key blocks of 2 (4 of each);
    # query block i and key block perm[i] share a large direction, every other pair is orthogonal
    d, perm = 8, [2, 0, 3, 1]
    basis = torch.eye(d, dtype=torch.float64) * 6
    q = torch.stack([basis[perm[i // 2]] for i in range(8)])[None, None]
    k = torch.stack([basis[i // 2] for i in range(8)])[None, None] + 0.01
    v = torch.randn(1, 1, 8, d, dtype=torch.float64)
    rec = Recorder()
    p = BlockSparseParams(bs_q_block=2, bs_k_block=2, bs_sparsity=0.75)  # keep 1 of 4 key blocks
    out = make_blocksparse(p)(q, k, v, layout(1, 8, rec=rec))
    for i in range(4):
        rows, cols = slice(2 * i, 2 * i + 2), slice(2 * perm[i], 2 * perm[i] + 2)
        expected = F.scaled_dot_product_attention(q[:, :, rows], k[:, :, cols], v[:, :, cols])
        torch.testing.assert_close(out[:, :, rows], expected)
    assert rec.counters["kv_blocks_kept"] / rec.counters["kv_blocks"] == 0.25
    assert rec.counters["tokens_kv"] == 2  # every query attends to 2 keys (1 head)
    assert rec.counters["attn_flops"] == 4 * 8 * 2 * d


def test_the_cumulative_mass_rule_keeps_the_fewest_top_blocks_reaching_it():
    scores = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    index, count = select_blocks(scores, budget=4, cdf=0.0)
    assert index.tolist() == [[1, 3, 2, 0]] and count.tolist() == [4]
    assert select_blocks(scores, 4, 0.5)[1].tolist() == [1]  # 0.5 alone reaches 0.5
    assert select_blocks(scores, 4, 0.79)[1].tolist() == [2]  # 0.5 + 0.3
    assert select_blocks(scores, 4, 0.81)[1].tolist() == [3]  # + 0.15
    assert select_blocks(scores, 4, 1.0)[1].tolist() == [4]
    assert select_blocks(scores, 2, 0.99)[1].tolist() == [2]  # never beyond the sparsity budget


def test_dropping_blocks_by_mass_changes_the_output():
    q, k, v = qkv(64, seed=3, heads=1)
    blocks = dict(bs_q_block=16, bs_k_block=16, bs_sparsity=0.0)
    full = make_blocksparse(BlockSparseParams(**blocks))(q, k, v, layout(1, 64))
    rec = Recorder()
    part = make_blocksparse(BlockSparseParams(**blocks, bs_cdf=0.5))(q, k, v, layout(1, 64, rec=rec))
    assert rec.counters["kv_blocks_kept"] < rec.counters["kv_blocks"]  # some block was dropped
    assert not torch.allclose(part, full)


def test_special_tokens_attend_densely_and_are_always_attended():
    q, k, v = qkv(2 * 10, seed=4)  # 2 frames of 2 special + 8 patch tokens
    p = BlockSparseParams(bs_q_block=4, bs_k_block=4, bs_sparsity=0.75)
    out = make_blocksparse(p)(q, k, v, layout(2, 10, patch_start=2))
    dense = sdpa_attention(q, k, v)
    special = [0, 1, 10, 11]
    torch.testing.assert_close(out[:, :, special], dense[:, :, special])
    patch_rows = [i for i in range(20) if i not in special]
    assert not torch.allclose(out[:, :, patch_rows], dense[:, :, patch_rows])
    # without dense special tokens they are blocked like the rest
    plain = make_blocksparse(BlockSparseParams(bs_q_block=4, bs_k_block=4, bs_sparsity=0.75,
                                               bs_dense_special=False))(q, k, v, layout(2, 10, patch_start=2))
    assert not torch.allclose(plain[:, :, special], dense[:, :, special])


def test_layers_before_start_layer_run_plain_attention():
    q, k, v = qkv(32, seed=5)
    fn = make_blocksparse(BlockSparseParams(bs_q_block=8, bs_k_block=8, bs_sparsity=0.75, start_layer=2))
    torch.testing.assert_close(fn(q, k, v, layout(1, 32, layer=1)), sdpa_attention(q, k, v))
    assert not torch.allclose(fn(q, k, v, layout(1, 32, layer=2)), sdpa_attention(q, k, v))


def test_block_budget_rounds_the_sparsity_down_to_whole_blocks():
    q, k, v = qkv(40, seed=6, heads=1)
    rec = Recorder()
    fn = make_blocksparse(BlockSparseParams(bs_q_block=40, bs_k_block=8, bs_sparsity=0.5))
    fn(q, k, v, layout(1, 40, rec=rec))
    # 5 key blocks, half dropped rounds down to 2: 3 kept
    assert rec.counters["kv_blocks_kept"] == 3 and rec.counters["kv_blocks"] == 5
    assert math.isclose(rec.counters["tokens_kv"], 24.0)


@pytest.mark.usefixtures("one_thread")
def test_both_new_methods_run_in_the_vggt_workload_with_their_counters(tmp_path):
    import textwrap

    from harness.cli import main
    from harness.store import columns as C
    from harness.store import load

    (tmp_path / "s.yaml").write_text(textwrap.dedent("""\
        name: competitors
        workload: vggt
        reference: vggt
        fixed: {preset: vggt-tiny, frames: 4, height: 56, width: 56, threads: 1}
        sweep: {scope: [model, attention]}
        methods:
          vggt: {}
          blocksparse: {bs_q_block: 16, bs_k_block: 8, bs_sparsity: 0.75}
          avggt: {frame_layers: 1, kv_stride: 2}
        timing: {warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}
        metrics: {breakdown: true}
        """))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run"), "--no-report", "-q"]) == 0
    pts = load(tmp_path / "run").points.set_index([C.METHOD, "scope"])
    assert (pts[C.STATUS] == C.OK).all()
    bs = pts.loc[("blocksparse", "attention")]
    assert 0 < bs["work_kept_block_frac"] < 1 and bs["work_tokens_kv_frac"] < 1
    assert bs["fid_attn_rel_err"] > 0 and bs["bd_match_ms"] > 0  # a real approximation, with its phases
    for method in ("blocksparse", "avggt"):
        ratio = pts.loc[(method, "model"), "work_attn_flops"] / pts.loc[("vggt", "model"), "work_attn_flops"]
        assert 0 < ratio < 1, method
        assert pts.loc[(method, "model"), "fid_depth_rel_err"] > 0


# ----------------------------------------------------------------------- FlexAttention backend


@pytest.mark.parametrize("sparsity,cdf,special,bq,bk", [
    (0.5, 0.0, 2, 8, 4), (0.75, 0.0, 0, 8, 4), (0.6, 0.7, 3, 4, 4), (0.0, 0.0, 2, 16, 8), (0.8, 0.0, 1, 8, 8),
])
def test_the_flex_backend_computes_what_the_gather_backend_computes(sparsity, cdf, special, bq, bk):
    """FlexAttention's block mask (torch's unfused reference on CPU) against the gathered blocks,
    with ragged tails in the patch and special blocks."""
    q, k, v = qkv(3 * 23, seed=int(10 * sparsity) + special, heads=3)
    outs = {}
    for backend in ("gather", "flex"):
        rec = Recorder()
        p = BlockSparseParams(bs_q_block=bq, bs_k_block=bk, bs_sparsity=sparsity, bs_cdf=cdf,
                              bs_backend=backend)
        outs[backend] = (make_blocksparse(p)(q, k, v, layout(3, 23, special, rec=rec)), dict(rec.counters))
    torch.testing.assert_close(outs["flex"][0], outs["gather"][0])
    assert outs["flex"][1] == outs["gather"][1]
    if sparsity > 0:  # and the choice matters: dense attention is different
        assert not torch.allclose(outs["flex"][0], sdpa_attention(q, k, v))


def test_the_flex_block_mask_lists_exactly_the_kept_blocks():
    """The compiled kernel visits the listed blocks only: they must be the kept map (the unfused
    CPU reference reads the per-token mask and would not notice a wrong list)."""
    from torch.nn.attention.flex_attention import BlockMask

    from baselines.blocksparse import block_mask_lists, kept_block_map

    index = torch.tensor([[[[2, 0, 1], [1, 2, 0]]]])  # [B=1, H=1, nq=2, budget=3]
    count = torch.tensor([[[2, 1]]])
    kept = kept_block_map(index, count, nk=3, special_blocks=1)
    assert kept[0, 0].tolist() == [[True, False, True, True], [False, True, False, True]]
    num, lists = block_mask_lists(kept)
    assert num.tolist() == [[[3, 2]]] and lists[0, 0, 0, :3].tolist() == [0, 2, 3]
    mask = BlockMask.from_kv_blocks(num, lists, BLOCK_SIZE=(4, 2), seq_lengths=(8, 8))
    assert torch.equal(mask.to_dense().bool(), kept)


def test_flex_kernel_tiles_divide_the_blocks_or_the_choice_is_refused():
    from baselines.blocksparse import _kernel_tiles

    assert _kernel_tiles(128, 64) == {"BLOCK_M": 128, "BLOCK_N": 64}
    assert _kernel_tiles(96, 48) == {"BLOCK_M": 32, "BLOCK_N": 16}
    with pytest.raises(ValueError, match="multiples of 16.*got 100 and 64.*bs_backend: gather"):
        _kernel_tiles(100, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled FlexAttention kernel needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_compiled_flex_kernel_on_cuda_matches_the_gather_path(dtype):
    """On a GPU the flex backend runs torch.compile's FlexAttention kernel, which visits only the
    listed blocks: it must agree with the gather path at the default block sizes."""
    frames, tokens, special = 4, 5 + 28 * 37, 5
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 4, frames * tokens, 64, generator=g).to("cuda", dtype) for _ in range(3))
    outs = {}
    for backend in ("gather", "flex"):
        p = BlockSparseParams(bs_sparsity=0.75, bs_backend=backend)
        outs[backend] = make_blocksparse(p)(q, k, v, layout(frames, tokens, special))
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(outs["flex"].float(), outs["gather"].float(), rtol=tol, atol=tol)
