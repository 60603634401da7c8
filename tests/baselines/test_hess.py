"""HeSS (arXiv 2603.25336): per-head block budgets from calibrated sensitivities, against an
independent reference written from the description (loops over heads, blocks and tokens) on float64
inputs of 3 frames of 1 special + 4 x 4 patch tokens; a hand-built calibration calls ``fn`` on fixed
q, k, v for two global layers."""

from __future__ import annotations

import math

import pytest
import torch

from baselines.blocksparse import BlockSparseParams, make_blocksparse
from baselines.hess import HeSSParams, capped_shares, make_hess
from harness.models.seam import AttentionLayout, Recorder, sdpa_attention

FRAMES, SPECIAL, GRID = 3, 1, 4
TOKENS = SPECIAL + GRID * GRID  # per frame
N = FRAMES * TOKENS
HEADS, DIM = 4, 8
Q_BLOCK, K_BLOCK = 8, 4  # 48 patch tokens: 6 query blocks, 12 key blocks
KEY_BLOCKS = FRAMES * GRID * GRID // K_BLOCK


def layout(layer=0, rec=None):
    return AttentionLayout(frames=FRAMES, tokens_per_frame=TOKENS, patch_h=GRID, patch_w=GRID,
                           patch_start=SPECIAL, layer=layer, recorder=rec)


def params(sparsity, **kw):
    """The output-error calibration (forward only; the Fisher one is tested in test_hess_fisher.py)."""
    kw.setdefault("hess_score", "output_error")
    return HeSSParams(hess_sparsity=sparsity, hess_q_block=Q_BLOCK, hess_k_block=K_BLOCK, **kw)


def random_qkv(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, HEADS, N, DIM, generator=g, dtype=torch.float64) for _ in range(3)]


def probe_of(*layers):
    """A probe that runs ``fn`` on fixed (q, k, v) per global layer, and checks it returns plain attention."""

    def probe(fn):
        for index, (q, k, v) in enumerate(layers):
            torch.testing.assert_close(fn(q, k, v, layout(index)), sdpa_attention(q, k, v))

    return probe


def calibrated(p, *layers):
    method = make_hess(p)
    method.calibrate(probe_of(*layers))
    return method


def known_heads(seed=0):
    """Four heads whose sensitivity is known: 0 has one value everywhere (nothing to lose: error 0),
    1 attends to one key block with all its mass (dropping the others costs ~e^-35), 2 is diffuse
    (random q, k, v), 3 is head 2 with its values doubled (exactly 4 times head 2's error)."""
    q, k, v = random_qkv(seed)
    v[0, 0] = 0.7
    patch = [i for i in range(N) if i % TOKENS >= SPECIAL]
    e = torch.eye(DIM, dtype=torch.float64)
    q[0, 1] = 100 * e[0]
    k[0, 1] = e[1]
    k[0, 1, patch[:K_BLOCK]] = e[0]  # the first key block takes all of every query's mass
    q[0, 3], k[0, 3], v[0, 3] = q[0, 2], k[0, 2], 2 * v[0, 2]
    return q, k, v


def permuted(qkv, order):
    return [t[:, order].clone() for t in qkv]


# ------------------------------------------------------------------------ the independent reference


def ref_softmax_rows(q_row, keys, values):
    """Explicit attention of one query over lists of key / value vectors."""
    logits = [float(q_row @ key) / math.sqrt(DIM) for key in keys]
    top = max(logits)
    w = [math.exp(x - top) for x in logits]
    return sum(wi * val for wi, val in zip(w, values)) / sum(w)


def ref_attention(q, k, v, budgets):
    """Block-sparse attention with head h keeping its top ``budgets[h]`` key blocks, by loops.

    Returns (out [1, H, N, d], (query, key) pairs attended over all heads)."""
    special = [i for i in range(N) if i % TOKENS < SPECIAL]
    patch = [i for i in range(N) if i % TOKENS >= SPECIAL]
    q_blocks = [patch[s:s + Q_BLOCK] for s in range(0, len(patch), Q_BLOCK)]
    k_blocks = [patch[s:s + K_BLOCK] for s in range(0, len(patch), K_BLOCK)]
    out, pairs = torch.zeros_like(q), 0
    for h in range(q.shape[1]):
        for i in special:  # special queries attend to everything
            out[0, h, i] = ref_softmax_rows(q[0, h, i], list(k[0, h]), list(v[0, h]))
            pairs += N
        key_means = [k[0, h, blk].mean(0) for blk in k_blocks]
        for blk in q_blocks:
            q_mean = q[0, h, blk].mean(0)
            score = [float(q_mean @ m) for m in key_means]
            kept = sorted(range(len(k_blocks)), key=lambda j: -score[j])[: int(budgets[h])]
            keys = [t for j in kept for t in k_blocks[j]] + special
            for i in blk:
                keys_i, values_i = [k[0, h, t] for t in keys], [v[0, h, t] for t in keys]
                out[0, h, i] = ref_softmax_rows(q[0, h, i], keys_i, values_i)
                pairs += len(keys)
    return out, pairs


def ref_uniform_budget(sparsity):
    return max(1, KEY_BLOCKS - math.floor(sparsity * KEY_BLOCKS + 1e-9))


def ref_errors(q, k, v, sparsity):
    """Per-head 1/2 ||uniform-budget sparse output - dense output||^2."""
    sparse, _ = ref_attention(q, k, v, [ref_uniform_budget(sparsity)] * q.shape[1])
    dense = sdpa_attention(q, k, v)
    return [0.5 * float(((sparse[0, h] - dense[0, h]) ** 2).sum()) for h in range(q.shape[1])]


def ref_budgets(errors, sparsity):
    """Budgets from errors: shares min(max(lam * w, 1), nk) of the layer's total (lam by bisection),
    then whole blocks by largest remainder."""
    w = [e / sum(errors) for e in errors]
    total = len(w) * ref_uniform_budget(sparsity)

    def shares(lam):
        return [min(max(lam * wi, 1.0), KEY_BLOCKS) for wi in w]

    lo, hi = 0.0, 1e30
    for _ in range(400):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(shares(mid)) < total else (lo, mid)
    real = shares(hi)
    whole = [math.floor(x + 1e-7) for x in real]
    for h in sorted(range(len(w)), key=lambda h: -(real[h] - whole[h]))[: total - sum(whole)]:
        whole[h] += 1
    return whole


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("special", [True, False])
def test_at_sparsity_zero_hess_is_plain_attention(special):
    qkv = random_qkv(1)
    method = calibrated(params(0.0, hess_dense_special=special), qkv, random_qkv(2))
    every_block = KEY_BLOCKS if special else -(-N // K_BLOCK)  # without: the special tokens are blocked too
    for layer in (0, 1):
        assert method.attention_fn.head_budgets(layer, layout(layer)).tolist() == [every_block] * HEADS
    torch.testing.assert_close(method.attention_fn(*qkv, layout(0)), sdpa_attention(*qkv))


def test_attention_before_calibration_is_refused():
    method = make_hess(params(0.5))
    with pytest.raises(ValueError, match="layer 0 has no calibration.*calibrate"):
        method.attention_fn(*random_qkv(1), layout(0))


def test_a_layer_the_calibration_never_saw_is_refused():
    method = calibrated(params(0.5), random_qkv(1))  # layer 0 only
    with pytest.raises(ValueError, match=r"layer 1 has no calibration \(calibrated layers: \[0\]\)"):
        method.attention_fn(*random_qkv(1), layout(1))


@pytest.mark.parametrize("sparsity,expected", [
    (0.5, [1, 1, 10, 12]),  # total 4 x 6 = 24: heads 0, 1 at the floor, head 3 capped at 12, head 2 the rest
    (0.75, [1, 1, 2, 8]),  # total 4 x 3 = 12: heads 2 and 3 share 10 blocks 1 : 4
])
def test_diffuse_heads_get_the_budget_that_flat_and_peaked_heads_do_not_need(sparsity, expected):
    qkv = known_heads()
    errors = ref_errors(*qkv, sparsity)
    assert errors[0] < 1e-20 and errors[1] < 1e-20 and errors[2] > 0.1
    assert errors[3] == pytest.approx(4 * errors[2], rel=1e-12)
    # layer 1 holds the same heads in reverse order: its budgets are reversed
    method = calibrated(params(sparsity), qkv, permuted(qkv, [3, 2, 1, 0]))
    assert method.attention_fn.head_budgets(0, layout(0)).tolist() == expected
    assert method.attention_fn.head_budgets(1, layout(1)).tolist() == expected[::-1]
    assert ref_budgets(errors, sparsity) == expected
    scores = method.attention_fn.scores[0]
    torch.testing.assert_close(scores, torch.tensor([0.0, 0.0, 0.2, 0.8], dtype=torch.float64), atol=1e-12,
                               rtol=1e-9)


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.6, 0.75, 0.9])
def test_budgets_follow_the_reference_and_keep_each_layers_total(sparsity):
    layers = (random_qkv(3), known_heads(4))
    method = calibrated(params(sparsity), *layers)
    for index, qkv in enumerate(layers):
        budgets = method.attention_fn.head_budgets(index, layout(index)).tolist()
        assert sum(budgets) == HEADS * ref_uniform_budget(sparsity)
        assert all(1 <= b <= KEY_BLOCKS for b in budgets)
        assert budgets == ref_budgets(ref_errors(*qkv, sparsity), sparsity)


@pytest.mark.parametrize("sparsity", [0.5, 0.75])
def test_the_output_and_counters_match_the_reference_block_attention(sparsity):
    calib, qkv = known_heads(5), random_qkv(6)
    budgets = ref_budgets(ref_errors(*calib, sparsity), sparsity)
    assert len(set(budgets)) > 1  # really per head
    method = calibrated(params(sparsity), calib)
    rec = Recorder()
    out = method.attention_fn(*qkv, layout(0, rec))
    expected, pairs = ref_attention(*qkv, budgets)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, sdpa_attention(*qkv))
    assert rec.counters["tokens_q"] == N * HEADS
    assert rec.counters["tokens_kv"] == pytest.approx(pairs / N)  # mean keys per query, summed over heads
    assert rec.counters["attn_flops"] == pytest.approx(4 * DIM * pairs)
    assert rec.counters["kv_blocks_kept"] == pytest.approx(sum(budgets) * 6 / HEADS)  # 6 query blocks
    assert rec.counters["match_flops"] > 0 and rec.counters["attn_bytes"] > 0


def test_the_paper_capping_hands_a_capped_heads_excess_to_the_others_in_proportion():
    # 16 blocks over weights .1 .2 .3 .4 with at most 5 each: 1.6 3.2 4.8 6.4 -> head 3 capped;
    # 11 over .1 .2 .3 -> 1.83 3.67 5.5 -> head 2 capped; 6 over .1 .2 -> 2 4
    shares = capped_shares(torch.tensor([0.1, 0.2, 0.3, 0.4]), 16, 1, 5)
    torch.testing.assert_close(shares, torch.tensor([2.0, 4.0, 5.0, 5.0], dtype=torch.float64))
    # the floor: a weightless head keeps one block, the rest is shared in proportion
    shares = capped_shares(torch.tensor([0.0, 0.25, 0.75]), 9, 1, 9)
    torch.testing.assert_close(shares, torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64))


def test_calibrating_twice_gives_the_same_budgets():
    layers = (random_qkv(7), known_heads(8))
    method = calibrated(params(0.75), *layers)
    first = [method.attention_fn.head_budgets(i, layout(i)).tolist() for i in (0, 1)]
    method.calibrate(probe_of(*layers))
    assert [method.attention_fn.head_budgets(i, layout(i)).tolist() for i in (0, 1)] == first


@pytest.mark.parametrize("score", ["fisher", "output_error"])
def test_uniform_allocation_is_the_blocksparse_baseline_and_needs_no_calibration(score):
    qkv = random_qkv(9)
    method = make_hess(params(0.75, hess_allocation="uniform", hess_score=score))
    assert method.calibrate is None and method.calibrate_grad is None  # its scores would go unused
    assert method.attention_fn.head_budgets(0, layout(0), HEADS).tolist() == [3] * HEADS
    baseline = make_blocksparse(BlockSparseParams(bs_q_block=Q_BLOCK, bs_k_block=K_BLOCK, bs_sparsity=0.75))
    torch.testing.assert_close(method.attention_fn(*qkv, layout(0)), baseline(*qkv, layout(0)))


def test_inverted_allocation_gives_the_most_sensitive_heads_the_smallest_budgets():
    method = calibrated(params(0.5, hess_allocation="inverted"), known_heads())
    assert method.attention_fn.head_budgets(0, layout(0)).tolist() == [12, 10, 1, 1]


def test_layers_before_start_layer_run_plain_attention_without_calibration():
    qkv = random_qkv(10)
    method = calibrated(params(0.75, start_layer=1), random_qkv(11), known_heads())
    assert sorted(method.attention_fn.scores) == [1]
    torch.testing.assert_close(method.attention_fn(*qkv, layout(0)), sdpa_attention(*qkv))
    assert not torch.allclose(method.attention_fn(*qkv, layout(1)), sdpa_attention(*qkv))


def test_the_flex_backend_computes_what_the_gather_backend_computes_with_per_head_budgets():
    """FlexAttention's block mask (torch's unfused reference on CPU) lists each head's own blocks."""
    qkv = random_qkv(12)
    outs = {}
    for backend in ("gather", "flex"):
        rec = Recorder()
        method = calibrated(params(0.75, hess_backend=backend), known_heads())
        outs[backend] = method.attention_fn(*qkv, layout(0, rec)), dict(rec.counters)
    torch.testing.assert_close(outs["flex"][0], outs["gather"][0])
    assert outs["flex"][1] == outs["gather"][1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled FlexAttention kernel needs CUDA")
def test_the_compiled_flex_kernel_on_cuda_matches_the_gather_path_with_per_head_budgets():
    """On a GPU the flex backend runs torch.compile's FlexAttention kernel, which visits only the
    blocks each head lists: it must agree with the gather path at the default block sizes."""
    frames, tokens, special = 4, 5 + 28 * 37, 5
    lay = AttentionLayout(frames=frames, tokens_per_frame=tokens, patch_h=28, patch_w=37, patch_start=special)
    g = torch.Generator().manual_seed(3)
    calib = [torch.randn(1, 4, frames * tokens, 64, generator=g).cuda() for _ in range(3)]
    calib[2][:, 0] *= 0.01  # head 0's values barely differ: it gives its blocks to the others
    q, k, v = (torch.randn(1, 4, frames * tokens, 64, generator=g).cuda() for _ in range(3))
    outs = {}
    for backend in ("gather", "flex"):
        method = make_hess(HeSSParams(hess_sparsity=0.75, hess_backend=backend, hess_score="output_error"))
        method.calibrate(lambda fn, method=method: fn(*calib, lay))
        assert len(set(method.attention_fn.head_budgets(0, lay).tolist())) > 1
        outs[backend] = method.attention_fn(q, k, v, lay)
    torch.testing.assert_close(outs["flex"], outs["gather"], rtol=1e-4, atol=1e-4)
