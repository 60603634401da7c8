"""Block-sparse global attention ("Faster VGGT with Block-Sparse Global Attention", arXiv
2509.07120), at VGGT's global-attention seam. Written from the paper's description; its public
code depends on a CUDA-only kernel package, so this is the harness's own gathered-blocks path
(it computes only the kept blocks, without a fused kernel) and, on CUDA by default, a
FlexAttention path whose block mask lists exactly the kept blocks, so the compiled kernel
skips the others (``bs_backend``).

Per global layer:

1. **Estimate** (phase ``match``): the patch queries are cut into blocks of ``bs_q_block``
   tokens and the patch keys into blocks of ``bs_k_block`` (in token order, the last block
   shorter); each block is mean-pooled and the block attention map is
   ``softmax(mean_q . mean_k^T / sqrt(d))`` over key blocks, per head.
2. **Select**: each query block keeps its top key blocks: at most ``1 - bs_sparsity`` of them
   (at least one); with ``bs_cdf > 0`` only as many as it takes for the kept blocks' estimated
   mass to reach ``bs_cdf`` (within that budget).
3. **Attend** (phases ``aggregate`` for the gathers, ``attention``): each query block attends to
   the tokens of its kept key blocks plus, with ``bs_dense_special``, every frame's special
   tokens (camera and registers), which also attend densely to all tokens as queries.

Shapes: q, k, v ``[B, H, N, d]`` -> ``[B, H, N, d]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.methods.merging import from_layer, phase
from harness.metrics.memory_model import SeamShape, block_sparse_bytes, plain_bytes
from harness.models.seam import AttentionFn, AttentionLayout, attention_flops, check_tokens, elem_bytes
from harness.params import param
from harness.registry import register_method

GATHER_CHUNK_ELEMS = 1 << 25  # gathered key elements materialized at once
BACKENDS = ("auto", "gather", "flex")


@dataclass(frozen=True)
class BlockSparseParams:
    """Block-sparse attention knobs (names are what suites sweep)."""

    bs_q_block: int = param(128, "query block size (tokens) of the block attention map", range=(1, 1 << 16))
    bs_k_block: int = param(64, "key block size (tokens) of the block attention map", range=(1, 1 << 16))
    bs_sparsity: float = param(0.5, "fraction of key blocks each query block drops (0: keep all)",
                               range=(0.0, 1.0))
    bs_cdf: float = param(0.0, "keep only the top blocks holding this estimated attention mass (0: off)",
                          range=(0.0, 1.0))
    bs_dense_special: bool = param(True, "camera/register tokens attend and are attended densely")
    start_layer: int = param(0, "global layers with a smaller index use plain attention", range=(0, None))
    bs_backend: str = param(
        "auto", "kept-block attention: 'gather' (gathered key blocks, any device), 'flex' (FlexAttention "
        "block mask: a compiled kernel on CUDA, torch's dense reference on CPU) or 'auto' (flex on CUDA)",
        choices=BACKENDS,
    )

    def seam_peak_bytes(self, shape: SeamShape) -> dict[str, float]:
        """Temporaries at the peak of one call, for the backend ``shape.device`` picks ('auto': flex
        on CUDA): :func:`harness.metrics.memory_model.block_sparse_bytes` with this budget."""
        if shape.layer < self.start_layer:
            return plain_bytes(shape)
        def budget(nk: int) -> int:
            return max(1, nk - math.floor(self.bs_sparsity * nk + 1e-9))

        return block_sparse_bytes(shape, self.bs_q_block, self.bs_k_block, self.bs_cdf, self.bs_dense_special,
                                  self.bs_backend, budget, gather_chunk_elems=GATHER_CHUNK_ELEMS)


def select_blocks(scores: torch.Tensor, budget: int, cdf: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept key blocks per query block. scores: [..., nk] block attention (rows sum to 1).

    Returns (index [..., budget] of the top ``budget`` blocks, best first; count [...] of them in
    use: ``budget``, or with ``cdf > 0`` the fewest whose mass reaches ``cdf``, at most ``budget``)."""
    top, index = scores.topk(budget, dim=-1)
    if cdf <= 0:
        return index, torch.full(scores.shape[:-1], budget, dtype=torch.long, device=scores.device)
    before = top.cumsum(-1) - top  # mass of the better blocks
    count = (before < cdf).sum(-1).clamp(1, budget)
    return index, count


@functools.lru_cache(maxsize=64)
def split_special(frames: int, tokens_per_frame: int, patch_start: int, dense_special: bool,
           device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(special, patch) token positions of the sequence."""
    pos = torch.arange(frames * tokens_per_frame)
    special = pos % tokens_per_frame < patch_start
    if not dense_special:
        special = torch.zeros_like(special)
    return pos[special].to(device), pos[~special].to(device)


def _blocks(x: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, H, n, d] -> (zero-padded blocks [B, H, nb, size, d], valid [nb, size] bool)."""
    B, H, n, d = x.shape
    nb = -(-n // size)
    pad = nb * size - n
    xb = F.pad(x, (0, 0, 0, pad)).view(B, H, nb, size, d)
    valid = (torch.arange(nb * size, device=x.device) < n).view(nb, size)
    return xb, valid


def _pooled(xb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the valid tokens of each block: [B, H, nb, size, d] -> [B, H, nb, d]."""
    w = valid.to(xb.dtype)
    return (xb * w[..., None]).sum(-2) / w.sum(-1, keepdim=True)


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout,
                           p: BlockSparseParams) -> torch.Tensor:
    """Block-sparse global attention. q, k, v: [B, H, N, d] -> [B, H, N, d]."""
    return sparse_block_attention(q, k, v, layout, BlockSpec(p.bs_q_block, p.bs_k_block, p.bs_cdf,
                                                             p.bs_dense_special, p.bs_backend),
                                  lambda nk: (max(1, nk - math.floor(p.bs_sparsity * nk + 1e-9)), None))


@dataclass(frozen=True)
class BlockSpec:
    """The block-sparse knobs shared by methods built on it (blocksparse, HeSS): query and key block
    sizes in tokens, the cumulative-mass threshold, dense special tokens, the backend."""

    q_block: int
    k_block: int
    cdf: float
    dense_special: bool
    backend: str


def sparse_block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout,
                           spec: BlockSpec, budget_of: Callable[[int], tuple[int, torch.Tensor | None]],
                           name: str = "block-sparse") -> torch.Tensor:
    """Block-sparse attention: each query block keeps its top key blocks of the estimated block map.

    q, k, v: [B, H, N, d] -> [B, H, N, d] in the attention's dtype (bf16 under autocast, as plain
    attention's, also when q and k are float32). ``budget_of(nk)`` gives, for nk patch key blocks, the
    most key blocks any query block keeps and optionally per-head caps ``[H]`` (long, on q's
    device; HeSS) within it."""
    B, H, N, d = q.shape
    check_tokens(name, q, layout)
    rec = layout.recorder
    special, patch = split_special(layout.frames, layout.tokens_per_frame, layout.patch_start,
                                   spec.dense_special, str(q.device))
    with phase(rec, "aggregate"):
        qp, kp, vp = (t.index_select(2, patch) for t in (q, k, v))
        ks, vs = k.index_select(2, special), v.index_select(2, special)
    qb, q_valid = _blocks(qp, spec.q_block)
    kb, k_valid = _blocks(kp, spec.k_block)
    vb, _ = _blocks(vp, spec.k_block)
    budget, per_head = budget_of(kb.shape[2])
    with phase(rec, "match"):
        logits = _pooled(qb, q_valid) @ _pooled(kb, k_valid).transpose(-1, -2) / math.sqrt(d)
        est = torch.softmax(logits, dim=-1)  # [B, H, nq, nk] estimated block attention
        index, count = select_blocks(est, budget, spec.cdf)  # [B, H, nq, budget], [B, H, nq]
        if per_head is not None:
            count = torch.minimum(count, per_head.view(1, H, 1))  # each head within its own budget
    ns = special.numel()
    if spec.backend == "flex" or (spec.backend == "auto" and q.device.type == "cuda"):
        o_patch = _flex_patch_attention(qp, kp, vp, ks, vs, index, count, spec.q_block, spec.k_block, rec)
    else:
        ob = _gather_patch_attention(qb, kb, vb, k_valid, ks, vs, index, count, rec)
        o_patch = ob.reshape(B, H, -1, d)[:, :, : patch.numel()]
    with phase(rec, "aggregate"):
        # the attention's dtype: bf16 under autocast, while q may be float32 (the qk LayerNorm's dtype)
        out = torch.empty_like(q, dtype=o_patch.dtype)
        out.index_copy_(2, patch, o_patch)
    if ns:
        with phase(rec, "attention"):
            out.index_copy_(2, special, F.scaled_dot_product_attention(q.index_select(2, special), k, v))
    if rec is not None:
        _count(rec, q, count, index, q_valid, k_valid, ns, N)
    return out


def _gather_patch_attention(qb: torch.Tensor, kb: torch.Tensor, vb: torch.Tensor, k_valid: torch.Tensor,
                            ks: torch.Tensor, vs: torch.Tensor, index: torch.Tensor, count: torch.Tensor,
                            rec) -> torch.Tensor:
    """Patch-query blocks through gathered key blocks. qb: [B, H, nq, bq, d]; kb/vb: [B, H, nk, bk, d];
    k_valid: [nk, bk]; ks/vs: [B, H, ns, d] special keys/values; index/count from
    :func:`select_blocks` -> [B, H, nq, bq, d] in the attention's dtype."""
    B, H, nq, bq, d = qb.shape
    bk, budget, ns = kb.shape[3], index.shape[-1], ks.shape[2]
    L = budget * bk + ns
    used = torch.arange(budget, device=qb.device) < count.unsqueeze(-1)  # [B, H, nq, budget]
    chunk = max(1, GATHER_CHUNK_ELEMS // max(1, B * H * L * d))
    ob: torch.Tensor | None = None  # made at the first chunk, in the attention's dtype
    bi = torch.arange(B, device=qb.device).view(B, 1, 1, 1)
    hi = torch.arange(H, device=qb.device).view(1, H, 1, 1)
    for i0 in range(0, nq, chunk):
        sl = slice(i0, i0 + chunk)
        c = index[:, :, sl].shape[2]
        with phase(rec, "aggregate"):
            # whole key blocks by advanced indexing (contiguous rows of bk x d, not element gathers),
            # laid out 4-D as [B*H*c, 1, L, d]: torch's fused CPU attention takes 4-D inputs only
            kg = kb[bi, hi, index[:, :, sl]].view(B * H * c, 1, budget * bk, d)
            vg = vb[bi, hi, index[:, :, sl]].view(B * H * c, 1, budget * bk, d)
            allow = (k_valid[index[:, :, sl]] & used[:, :, sl, :, None]).view(B * H * c, 1, 1, -1)
            if ns:  # every query block also attends to the special tokens
                kg = torch.cat([kg, ks.unsqueeze(2).expand(B, H, c, ns, d).reshape(-1, 1, ns, d)], dim=2)
                vg = torch.cat([vg, vs.unsqueeze(2).expand(B, H, c, ns, d).reshape(-1, 1, ns, d)], dim=2)
                allow = torch.cat([allow, allow.new_ones(B * H * c, 1, 1, ns)], dim=3)
        with phase(rec, "attention"):
            qc = qb[:, :, sl].reshape(B * H * c, 1, bq, d)
            o = F.scaled_dot_product_attention(qc, kg, vg, attn_mask=allow)
            if ob is None:  # bf16 under autocast, while q may be float32
                ob = o.new_empty(qb.shape)
            ob[:, :, sl] = o.view(B, H, c, bq, d)
            del o
    assert ob is not None
    return ob


def kept_block_map(index: torch.Tensor, count: torch.Tensor, nk: int, special_blocks: int) -> torch.Tensor:
    """[B, H, nq, nk + special_blocks] bool: the key blocks each query block attends to.

    index [B, H, nq, budget] / count [B, H, nq] from :func:`select_blocks`; the special-token
    blocks (after the nk patch blocks) are always kept."""
    B, H, nq, budget = index.shape
    used = torch.arange(budget, device=index.device) < count.unsqueeze(-1)
    kept = torch.zeros(B, H, nq, nk + special_blocks, dtype=torch.bool, device=index.device)
    kept[..., :nk].scatter_(-1, index, used)
    kept[..., nk:] = True
    return kept


def block_mask_lists(kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FlexAttention's (kv_num_blocks [B, H, nq], kv_indices [B, H, nq, nkb]) int32 of a kept map:
    each row's kept blocks first, in block order."""
    num = kept.sum(-1, dtype=torch.int32)
    order = torch.argsort((~kept).to(torch.int8), dim=-1, stable=True)
    return num, order.to(torch.int32)


@functools.lru_cache(maxsize=1)
def _flex_fn(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    if device_type == "cuda":
        return torch.compile(flex_attention, dynamic=False)
    return flex_attention  # torch's unfused reference (dense scores): for checks, not speed


def _flex_patch_attention(qp: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor, ks: torch.Tensor,
                          vs: torch.Tensor, index: torch.Tensor, count: torch.Tensor, bq: int, bk: int,
                          rec) -> torch.Tensor:
    """Patch-query rows through FlexAttention. qp/kp/vp: [B, H, n, d] patch tokens; ks/vs:
    [B, H, ns, d] special keys/values -> [B, H, n, d].

    Keys are laid out as [patch blocks, zero-padded | special blocks, zero-padded]; the block
    mask lists each query block's kept patch blocks plus every special block (the compiled
    kernel visits only those), and its mask_mod repeats the same choice per token and drops the
    padding, so the unfused CPU reference computes the same function."""
    import warnings

    from torch.nn.attention.flex_attention import BlockMask

    B, H, n, d = qp.shape
    ns = ks.shape[2]
    nq, nk, nsb = -(-n // bq), -(-n // bk), -(-ns // bk)
    with phase(rec, "aggregate"):
        q_pad = F.pad(qp, (0, 0, 0, nq * bq - n))
        k_all = torch.cat([F.pad(kp, (0, 0, 0, nk * bk - n)), F.pad(ks, (0, 0, 0, nsb * bk - ns))], dim=2)
        v_all = torch.cat([F.pad(vp, (0, 0, 0, nk * bk - n)), F.pad(vs, (0, 0, 0, nsb * bk - ns))], dim=2)
        kept = kept_block_map(index, count, nk, nsb)
        pos = torch.arange(nk * bk + nsb * bk, device=qp.device)
        real_key = torch.where(pos < nk * bk, pos < n, pos - nk * bk < ns)

        def mask_mod(b, h, q_idx, kv_idx):
            return kept[b, h, q_idx // bq, kv_idx // bk] & real_key[kv_idx]

        num, lists = block_mask_lists(kept)
        mask = BlockMask.from_kv_blocks(num, lists, BLOCK_SIZE=(bq, bk), mask_mod=mask_mod,
                                        seq_lengths=(nq * bq, k_all.shape[2]))
    options = _kernel_tiles(bq, bk) if qp.device.type == "cuda" else None
    with phase(rec, "attention"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        o = _flex_fn(qp.device.type)(q_pad, k_all, v_all, block_mask=mask, kernel_options=options)
    return o[:, :, :n]


def _kernel_tiles(bq: int, bk: int) -> dict[str, int]:
    """Triton tile sizes that divide the mask's blocks (FlexAttention's kernel requires it):
    the largest power of two up to 128 (queries) / 64 (keys), at least 16."""

    def tile(block: int, cap: int) -> int:
        t = cap
        while t > 16 and block % t:
            t //= 2
        return t if block % t == 0 else 0

    tm, tn = tile(bq, 128), tile(bk, 64)
    if not tm or not tn:
        raise ValueError(f"block-sparse bs_backend 'flex' on CUDA needs bs_q_block and bs_k_block that "
                         f"are multiples of 16 (FlexAttention's kernel tiles must divide them); got {bq} and "
                         f"{bk}. Use such block sizes or bs_backend: gather")
    return {"BLOCK_M": tm, "BLOCK_N": tn}


def _count(rec, q: torch.Tensor, count: torch.Tensor, index: torch.Tensor, q_valid: torch.Tensor,
           k_valid: torch.Tensor, ns: int, N: int) -> None:
    """tokens_q / tokens_kv (mean keys per query, summed over heads), attention FLOPs and bytes of
    the kept work, kept key blocks, and the estimate's FLOPs (as matching)."""
    B, H, nq, budget = index.shape
    d, elem = q.shape[-1], elem_bytes(q)
    used = torch.arange(budget, device=q.device) < count.unsqueeze(-1)
    keys = (k_valid.sum(-1)[index] * used).sum(-1) + ns  # [B, H, nq] keys each query block attends
    rows = q_valid.sum(-1)  # [nq] real queries per block
    pairs = float((keys * rows).sum()) + B * H * ns * N  # (query, key) pairs: patch rows + dense special rows
    rec.count("tokens_q", N * H)
    rec.count("tokens_kv", pairs / (B * N))  # mean keys per query, summed over heads
    rec.count("attn_flops", 4.0 * d * pairs)
    # q read and out written once; each query block reads its keys and values; special rows read all
    kv_read = 2.0 * float(keys.sum()) + (2.0 * B * H * N if ns else 0.0)
    rec.count("attn_bytes", elem * d * (2.0 * B * H * N + kv_read))
    rec.count("kv_blocks_kept", float(count.sum()) / (B * H))
    rec.count("kv_blocks", float(nq * k_valid.shape[0]))
    rec.count("match_flops", attention_flops(B, H, nq, k_valid.shape[0], d) / 2)  # the pooled scores


@register_method("blocksparse", params=BlockSparseParams, workloads=("vggt",),
                 doc="block-sparse global attention: top key blocks per query block from a pooled "
                     "block map (arXiv 2509.07120)")
def make_blocksparse(p: BlockSparseParams) -> AttentionFn:
    """Build block-sparse attention's ``attention_fn(q, k, v, layout) -> out``."""
    return from_layer(p.start_layer, lambda q, k, v, layout: block_sparse_attention(q, k, v, layout, p))
