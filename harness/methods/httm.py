"""HTTM: head-wise temporal token merging for VGGT's global attention (arXiv 2511.21317).

An ``attention_fn(q, k, v, layout)`` for the seam (q, k, v: [B, H, N, d], N = S * P frame-major):
tokens are grouped into temporal blocks (``n_s`` tokens x ``n_t`` frames), each head group
merges Q on Q similarity and K/V on K similarity inside blocks, the queries farthest from their
merged token are un-merged again (one outlier budget across groups), attention runs on the
merged tokens and the output is copied back. Steps, the choices where the paper is silent, and
the recorder's counters: docs/methods/merging.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.methods.merging import (
    Partition,
    SlotMap,
    assign,
    from_layer,
    merged_count,
    percentile,
    phase,
    static_partition,
    with_extra_candidates,
)
from harness.metrics.memory_model import (
    Ledger,
    SeamShape,
    SlotMapBytes,
    assign_bytes,
    cached_bytes,
    outlier_filter_bytes,
    output_bytes,
    partition_sets,
    plain_bytes,
    sdpa_bytes,
)
from harness.models.seam import (
    AttentionFn,
    AttentionLayout,
    attention_bytes,
    attention_flops,
    elem_bytes,
    token_bytes,
)
from harness.params import param
from harness.registry import register_method

DST_RULES = ("strided", "random", "first_frame")


@dataclass(frozen=True)
class HTTMParams:
    """HTTM knobs (names are what suites sweep). Defaults: the paper's main configuration."""

    query_merge: float = param(
        0.9, "fraction of each block's queries merged away before outlier filtering", range=(0.0, 1.0)
    )
    outlier_frac: float = param(
        0.10,
        "outlier budget: queries un-merged again, as a fraction of N per head group "
        "(one global top-k over all head groups and tokens of a batch element)",
        range=(0.0, 1.0),
    )
    kv_merge: float = param(0.7, "fraction of each block's keys/values merged away", range=(0.0, 1.0))
    head_groups: int = param(
        16, "head groups g sharing a decision (g = H head-wise, 1 uniform); must divide H", range=(1, None)
    )
    n_s: int = param(128, "spatial chunk: consecutive tokens per frame in a merging block", range=(1, None))
    n_t: int = param(30, "temporal extent: consecutive frames per merging block", range=(1, None))
    dst_rule: str = param(
        "strided", "where a block's dst tokens sit (block order is frame-major)", choices=DST_RULES
    )
    dst_frac: float = param(
        0.0,
        "dst fraction per block; 0 = 1 - merge ratio (every src merged), > 0 = fixed (top-r src merged)",
        range=(0.0, 1.0),
    )
    dst_seed: int = param(0, "seed of the 'random' dst rule", range=(0, None))
    protect_special: bool = param(True, "camera/register tokens pass through (never merged)")
    anchor_first_frame: bool = param(
        False, "HTTM*: frame 0 kept whole and offered as extra merge targets to every block"
    )
    start_layer: int = param(0, "global layers with a smaller index use plain attention", range=(0, None))
    decouple_qk: bool = param(
        True, "Q merged on Q similarity, K/V on K similarity; False: one K-based assignment for Q, K, V"
    )

    def seam_peak_bytes(self, shape: SeamShape) -> dict[str, float]:
        """Temporaries at the peak of one call, GPU path (Triton kernels): the K and Q assignments
        (slot maps ``[B * G, N]``, best-match indices, the gathered group vectors of a chunk of
        blocks: the kernel stores no similarity), the merged k, v ``[B, H, M_k, d]`` and q, the
        outlier filter (:func:`harness.metrics.memory_model.outlier_filter_bytes`: deviations, new
        slot map, new merged q of ``M_q + extra`` slots), SDPA on the merged tokens, the unmerge
        index (int64 ``[B * H * N]``), and the cached blocks and partitions. ``extra`` (outliers per
        head group) is data-dependent: modelled as an even spread of the budget. The torch path (CPU)
        differs: chunked similarities instead of the fused kernel and ``embedding_bag`` merges."""
        s = shape
        if s.layer < self.start_layer:
            return plain_bytes(s)
        G, N = self.head_groups, s.tokens
        blocks = temporal_blocks(s.frames, s.tokens_per_frame, self.n_s, self.n_t, s.patch_start,
                                 self.protect_special, self.anchor_first_frame)
        part_k = block_partition(blocks, N, self.kv_merge, self.dst_frac, self.dst_rule, self.dst_seed)
        part_q = block_partition(blocks, N, self.query_merge, self.dst_frac, self.dst_rule, self.dst_seed)
        part_q = part_q if self.decouple_qk else part_k
        led = Ledger()
        led.alloc("cached: HTTM blocks and partitions", cached_bytes(blocks, part_k, part_q)
                  - (cached_bytes(part_k) if part_q is part_k else 0.0))
        hg = s.heads // G
        gather = dict(gather_copies=1 if hg == 1 else 2)
        slot_k = assign_bytes(led, s, s.batch * G, partition_sets(part_k), hg * s.head_dim, s.qk_bytes,
                              what="k ", **gather)
        slot_q = slot_k
        if self.decouple_qk:
            slot_q = assign_bytes(led, s, s.batch * G, partition_sets(part_q), hg * s.head_dim, s.qk_bytes,
                                  what="q ", **gather)
        sm_k = SlotMapBytes(led, s, G, part_k.n_slots, slot_k, "k ")
        k_m, v_m = sm_k.merge(s.qk_bytes, "merged k"), sm_k.merge(s.elem_bytes, "merged v")
        sm_q = SlotMapBytes(led, s, G, part_q.n_slots, slot_q, "q ")
        q_mean = sm_q.merge(s.qk_bytes, "merged q")
        sm_q2, q_m = outlier_filter_bytes(led, s, q_mean, sm_q, self.outlier_frac, DEV_CHUNK_ELEMS)
        if sm_q2 is not sm_q:
            sm_q.release()
            led.free(q_mean)
        o_m = sdpa_bytes(led, s, s.rows, sm_q2.M, part_k.n_slots, s.qk_bytes, s.qk_bytes, s.elem_bytes,
                         what="merged ")
        out = sm_q2.unmerge(sm_q2.M, s.cast(s.qk_bytes))
        led.free(k_m, v_m, q_m, o_m)
        return led.terms(out, output_bytes(s))


# ----------------------------------------------------------------------------- blocks


@dataclass(frozen=True, eq=False)
class BlockClass:
    """Merging blocks of one size: ``frames`` frames x ``chunk_len`` tokens each.

    tokens: [nb, frames * chunk_len] original token indices, block order = frame-major.
    anchors: [nb, chunk_len] frame-0 tokens of each block's spatial chunk (HTTM*), or None.
    """

    tokens: torch.Tensor
    frames: int
    chunk_len: int
    anchors: torch.Tensor | None


@dataclass(frozen=True, eq=False)
class TemporalBlocks:
    """The temporal reordering of one shape.

    perm: [N]: pass-through tokens, then every block's tokens (class by class, blocks
    group-major then chunk, inside a block frame-major). inv: [N] with perm[inv] = arange(N).
    passthrough: [T] tokens outside every block. classes: at most 4 block size classes.
    """

    perm: torch.Tensor
    inv: torch.Tensor
    passthrough: torch.Tensor
    classes: tuple[BlockClass, ...]


def temporal_blocks(
    frames: int,
    tokens_per_frame: int,
    n_s: int,
    n_t: int,
    patch_start: int,
    protect_special: bool,
    anchor_first_frame: bool,
    device: torch.device | str = "cpu",
) -> TemporalBlocks:
    """Cached temporal reordering for S = ``frames`` frames of P = ``tokens_per_frame`` tokens."""
    return _temporal_blocks(
        frames, tokens_per_frame, n_s, n_t, patch_start, protect_special, anchor_first_frame, str(device)
    )


def _runs(start: int, length: int, size: int) -> list[tuple[int, list[int]]]:
    """Split [start, start + length) into runs of ``size`` (last shorter): [(run_len, run_starts)]."""
    full, tail = divmod(length, size)
    out = []
    if full:
        out.append((size, [start + i * size for i in range(full)]))
    if tail:
        out.append((tail, [start + full * size]))
    return out


@functools.lru_cache(maxsize=64)
def _temporal_blocks(
    S: int, P: int, n_s: int, n_t: int, patch_start: int, protect: bool, anchor: bool, device: str
) -> TemporalBlocks:
    start = patch_start if protect else 0
    first = 1 if anchor else 0
    classes = []
    for m, group_starts in _runs(first, S - first, n_t):
        for ell, chunk_starts in _runs(start, P - start, n_s):
            g0 = torch.tensor(group_starts).view(-1, 1, 1, 1)
            c0 = torch.tensor(chunk_starts).view(1, -1, 1, 1)
            t = torch.arange(m).view(1, 1, m, 1)
            s = torch.arange(ell).view(1, 1, 1, ell)
            tokens = ((g0 + t) * P + c0 + s).reshape(len(group_starts) * len(chunk_starts), m * ell)
            anchors = None
            if anchor:
                anchors = (c0.view(1, -1, 1) + s.view(1, 1, ell)).expand(len(group_starts), -1, -1)
                anchors = anchors.reshape(-1, ell).to(device)
            classes.append(BlockClass(tokens.to(device), m, ell, anchors))
    keep = torch.zeros(S, P, dtype=torch.bool)
    keep[:, :start] = True
    if anchor:
        keep[0] = True
    passthrough = keep.reshape(-1).nonzero().squeeze(1)
    perm = torch.cat([passthrough] + [c.tokens.reshape(-1).cpu() for c in classes])
    if perm.numel() != S * P:
        raise AssertionError(f"temporal_blocks: permutation covers {perm.numel()} of {S * P} tokens")
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    return TemporalBlocks(perm.to(device), inv.to(device), passthrough.to(device), tuple(classes))


# ------------------------------------------------------------------------- partition


def block_partition(
    blocks: TemporalBlocks, n_tokens: int, ratio: float, dst_frac: float, dst_rule: str, dst_seed: int
) -> Partition:
    """Static src/dst split of every block for one merge ratio (cached per blocks object)."""
    return _block_partition(blocks, n_tokens, ratio, dst_frac, dst_rule, dst_seed)


def _dst_mask(n: int, nd: int, nb: int, rule: str, seed: int) -> torch.Tensor:
    """[nb, n] bool: which in-block positions are dst (exactly nd per block)."""
    if rule == "strided":
        pos = ((torch.arange(nd, dtype=torch.float64) + 0.5) * n / nd).long()
        mask = torch.zeros(n, dtype=torch.bool)
        mask[pos] = True
        return mask.expand(nb, n)
    if rule == "first_frame":
        return (torch.arange(n) < nd).expand(nb, n)
    if rule == "random":
        gen = torch.Generator().manual_seed(seed + 7919 * n)
        order = torch.rand(nb, n, generator=gen).argsort(dim=1)
        return torch.zeros(nb, n, dtype=torch.bool).scatter_(1, order[:, :nd], True)
    raise ValueError(f"HTTM dst_rule={rule!r} is not one of {', '.join(DST_RULES)}")


@functools.lru_cache(maxsize=128)
def _block_partition(
    blocks: TemporalBlocks, N: int, ratio: float, dst_frac: float, rule: str, seed: int
) -> Partition:
    device = blocks.perm.device
    sets = []
    for c in blocks.classes:
        nb, n = c.tokens.shape
        r_target = merged_count(ratio, n)
        nd = n - r_target if dst_frac <= 0 else math.ceil(dst_frac * n)
        nd = min(n, max(1, nd))
        r = min(r_target, n - nd)
        mask = _dst_mask(n, nd, nb, rule, seed).to(device)
        tokens = c.tokens
        dst = tokens[mask].view(nb, nd)
        src = tokens[~mask].view(nb, n - nd)
        sets.append((src.cpu(), dst.cpu(), r))
    part = static_partition(N, blocks.passthrough.cpu(), sets, device)
    if any(c.anchors is not None for c in blocks.classes):
        part = with_extra_candidates(part, [c.anchors for c in blocks.classes])
    return part


# --------------------------------------------------------------------------- helpers


def group_gather(x: torch.Tensor, groups: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Gather tokens of a head tensor as per-group concatenated vectors.

    x: [B, H, N, d] -> gather(idx [K]) -> [B * g, K, (H/g) d].
    """
    B, H, N, d = x.shape
    hg = H // groups
    if hg == 1:  # a 3-D view: index_select along dim 2 of the 4-D tensor is several times slower on CPU
        x3 = x.view(B * H, N, d) if x.is_contiguous() else x.reshape(B * H, N, d)
        return lambda idx: x3.index_select(1, idx)
    x5 = x.view(B, groups, hg, N, d) if x.is_contiguous() else x.reshape(B, groups, hg, N, d)
    return lambda idx: x5.index_select(3, idx).transpose(2, 3).reshape(B * groups, idx.numel(), hg * d)


def filter_outliers(
    q: torch.Tensor, q_mean: torch.Tensor, sm: SlotMap, frac: float
) -> tuple[SlotMap, torch.Tensor]:
    """Adaptive outlier filtering of merged queries.

    q: [B, H, N, d] original queries; q_mean: [B, H, M, d] their per-slot means under ``sm``
    (slot_of [B, g, N]). Distance of each query to its merged token, squared and summed over
    the heads of its group -> [B, g, N]; the ``round(frac * g * N)`` largest positive
    distances of each batch element (one budget across all groups) are flagged, removed from
    their slot's mean and given singleton slots ``M, M+1, ...`` (numbered per group).
    Returns the new slot map (M' = M + most flagged in any group; shorter groups have empty
    padding slots) and the merged queries [B, H, M', d].
    """
    B, H, N, d = q.shape
    G = sm.slot_of.shape[1]
    hg = H // G
    M = sm.n_slots
    budget = min(G * N, int(frac * G * N + 0.5))
    if budget == 0:
        return sm, q_mean
    dev = _slot_deviation(q, q_mean, sm).view(B, G, hg, N).sum(2)
    top, idx = dev.view(B, G * N).topk(budget, dim=1, sorted=False)
    flagged = torch.zeros(B, G * N, dtype=torch.bool, device=q.device)
    flagged.scatter_(1, idx, top > 0)
    flagged = flagged.view(B, G, N)
    extra = int(flagged.sum(-1).max())
    if extra == 0:
        return sm, q_mean
    new_slot = torch.where(flagged, M + flagged.cumsum(-1) - 1, sm.slot_of)
    b, g, n = flagged.nonzero(as_tuple=True)  # K flagged (batch, group, token) entries
    bh = (b.unsqueeze(1) * H + g.unsqueeze(1) * hg + torch.arange(hg, device=q.device)).reshape(-1)
    acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    rows = q.reshape(B * H * N, d).index_select(0, bh * N + n.repeat_interleave(hg)).to(acc)  # [K hg, d]
    M2 = M + extra
    sums = q_mean.new_empty(B * H, M2, d, dtype=acc)
    sums[:, M:] = 0.0  # the new singleton slots (the first M are overwritten next)
    counts = sm.counts()[:, :, None, :, None].expand(B, G, hg, M, 1).reshape(B * H, M, 1)
    torch.mul(q_mean.reshape(B * H, M, d).to(acc), counts.to(acc), out=sums[:, :M])
    flat = sums.view(-1, d)
    flat.index_add_(0, sm.slot_of[b, g, n].repeat_interleave(hg) + bh * M2, rows, alpha=-1.0)
    flat.index_copy_(0, new_slot[b, g, n].repeat_interleave(hg) + bh * M2, rows)
    sm2 = SlotMap(new_slot, M2)
    inv = sm2.counts().clamp(min=1.0).reciprocal().to(acc)  # [B, G, M2]
    sums.view(B, G, hg, M2, d).mul_(inv[:, :, None, :, None])
    return sm2, sums.view(B, H, M2, d).to(q.dtype)


DEV_CHUNK_ELEMS = 1 << 20
"""Most query entries whose deviation :func:`filter_outliers` computes at once (4 MiB in
float32; a full-size [B, H, N, d] temporary costs page faults on every call on CPU)."""


def _slot_deviation(q: torch.Tensor, q_mean: torch.Tensor, sm: SlotMap) -> torch.Tensor:
    """Squared distance of every query to its slot's mean. q: [B, H, N, d] -> [B * H, N].

    Computed in chunks of whole (batch, head) rows so no [B, H, N, d] temporary exists.
    """
    B, H, N, d = q.shape
    M = q_mean.shape[2]
    flat_idx = sm.flat_index(H).view(B * H, N)
    means = q_mean.reshape(B * H * M, d)
    rows = q.reshape(B * H, N, d)
    dev = q.new_empty(B * H, N)
    step = max(1, DEV_CHUNK_ELEMS // (N * d))
    for r0 in range(0, B * H, step):
        diff = means.index_select(0, flat_idx[r0 : r0 + step].reshape(-1)).view(-1, N, d)
        diff.sub_(rows[r0 : r0 + step])
        torch.linalg.vector_norm(diff, dim=-1, out=dev[r0 : r0 + step])
    return dev.square_()


def ragged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, used_q: int) -> torch.Tensor:
    """Attention when head groups keep different numbers of queries, in ONE call.

    q: [B, H, Mq, d]; k, v: [B, H, Mk, d]; used_q <= Mq: the most query slots any head group
    uses. Every group is padded to ``used_q`` (rows of Q are independent, so padding rows need
    no mask: they are computed and never read back). Returns [B, H, used_q, d]. No Python loop
    over heads or groups; the padding is what the recorder counts as ``pad_q``.
    """
    return F.scaled_dot_product_attention(q[:, :, :used_q], k, v)


def check_heads(H: int, groups: int) -> None:
    """Raise a clear error when ``head_groups`` does not divide the number of heads."""
    if groups < 1 or H % groups:
        allowed = ", ".join(str(g) for g in range(1, H + 1) if H % g == 0)
        raise ValueError(
            f"HTTM head_groups={groups} must divide the number of heads H={H} (allowed: {allowed})"
        )


def _check_layout(q: torch.Tensor, layout: AttentionLayout) -> None:
    N = q.shape[2]
    if layout.num_tokens != N:
        raise ValueError(
            f"attention layout says S={layout.frames} x P={layout.tokens_per_frame} = {layout.num_tokens} "
            f"tokens but q has N={N} (q: [B, H, N, d] = {list(q.shape)})"
        )


# ---------------------------------------------------------------------------- method


def httm_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout, p: HTTMParams
) -> torch.Tensor:
    """HTTM global attention. q, k, v: [B, H, N, d] -> [B, H, N, d]."""
    B, H, N, d = q.shape
    check_heads(H, p.head_groups)
    _check_layout(q, layout)
    G, hg = p.head_groups, H // p.head_groups
    rec = layout.recorder
    blocks = temporal_blocks(
        layout.frames, layout.tokens_per_frame, p.n_s, p.n_t, layout.patch_start,
        p.protect_special, p.anchor_first_frame, q.device,
    )
    part_k = block_partition(blocks, N, p.kv_merge, p.dst_frac, p.dst_rule, p.dst_seed)
    part_q = block_partition(blocks, N, p.query_merge, p.dst_frac, p.dst_rule, p.dst_seed)
    if not p.decouple_qk:
        part_q = part_k
    sample = rec is not None
    with phase(rec, "match"):
        a_k = assign(group_gather(k, G), B * G, part_k, sample)
        a_q = assign(group_gather(q, G), B * G, part_q, sample) if p.decouple_qk else a_k
    with phase(rec, "aggregate"):
        sm_k = SlotMap(a_k.slot_of.view(B, G, N), part_k.n_slots)
        k_m, v_m = sm_k.merge(k), sm_k.merge(v)
        sm_q = SlotMap(a_q.slot_of.view(B, G, N), part_q.n_slots)
        sm_q, q_m = filter_outliers(q, sm_q.merge(q), sm_q, p.outlier_frac)
        # query slots of the longest head group: every slot below the partition's M is occupied in
        # every group, and filter_outliers numbers the singletons M, M+1, ... up to its M'
        used_q = sm_q.n_slots
    with phase(rec, "attention"):
        o_m = ragged_attention(q_m, k_m, v_m, used_q)
    with phase(rec, "aggregate"):
        out = sm_q.unmerge(o_m)
    if rec is not None:
        real_q = float(sm_q.occupied().sum()) * hg / B
        rec.count("tokens_q", real_q)
        rec.count("tokens_kv", float(sm_k.occupied().sum()) * hg / B)
        rec.count("pad_q", o_m.shape[2] * H - real_q)
        rec.count("attn_flops", attention_flops(B, H, o_m.shape[2], sm_k.n_slots, d))
        rec.count("attn_bytes", attention_bytes(q, o_m.shape[2], sm_k.n_slots))
        # merges of k, v (N -> M_k) and q (N -> M_q); the unmerge reads the used query slots, writes N
        elem = elem_bytes(q)
        moved = 2 * (N + sm_k.n_slots) + (N + part_q.n_slots) + (o_m.shape[2] + N)
        rec.count("agg_bytes", token_bytes(B * H, moved, d, elem))
        flops = part_k.match_flops(B * G, hg * d)
        matched = 1
        if p.decouple_qk:
            flops += part_q.match_flops(B * G, hg * d)
            matched = 2
        rec.count("match_flops", flops)
        rec.count("match_bytes", token_bytes(B * G, matched * N, hg * d, elem))  # reads the matched tokens
        if a_q.merged_scores.numel():
            rec.observe("merge_sim_p10", percentile(a_q.merged_scores, 0.1))
        if a_k.merged_scores.numel():
            rec.observe("merge_sim_p10_kv", percentile(a_k.merged_scores, 0.1))
    return out


@register_method("httm", params=HTTMParams, workloads=("vggt",),
                 doc="head-wise temporal token merging (HTTM, arXiv 2511.21317)")
def make_httm(p: HTTMParams) -> AttentionFn:
    """Build HTTM's ``attention_fn(q, k, v, layout) -> out`` for the given parameters."""

    return from_layer(p.start_layer, lambda q, k, v, layout: httm_attention(q, k, v, layout, p))
