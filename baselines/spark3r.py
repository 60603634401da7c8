"""Spark3R-style asymmetric token reduction at VGGT's global-attention seam (Tang et al., "Spark3R:
Asymmetric Token Reduction Makes Fast Feed-Forward 3D Reconstruction", arXiv 2605.06270). Written
from secondary descriptions of the paper (no public code); what they leave open is chosen here and
listed in docs/methods/spark3r.md.

Queries and keys/values are reduced differently, and only inside global attention:

1. **Queries are merged within groups of consecutive frames.** The frames are cut into groups of
   ``sp_group_frames``; in each group the patch queries are split FastVGGT-style into targets
   (one per 2 x 2 cell of the patch grid, and all of frame 0 with ``sp_first_frame_dst``) and
   sources; every source finds its most cosine-similar target of the same group (on the queries
   averaged over heads) and the most similar sources join their target (plain mean). After
   attention every merged query's output row is copied back to each of its members.
2. **Keys/values are pruned, not merged**, with a temporal stride: the patch keys/values of evenly
   spaced frames (frame 0 first) are kept, the other frames' are dropped; every frame's special
   tokens are kept.
3. **The K/V reduction is layer-adaptive** (``sp_schedule: tiered``): global layers outside the
   paper's sensitive band (layers 11-16 of VGGT-1B's 24) keep ``sp_low_mult`` times fewer
   keys/values.

Camera and register tokens (the first ``patch_start`` of every frame) are never merged or pruned.

Shapes: q, k, v ``[B, H, N, d]`` with N = S * P (frames times tokens per frame) -> ``[B, H, N, d]``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from baselines.fastvggt import cell_dst_mask
from harness.methods.merging import (
    Partition,
    SlotMap,
    assign,
    merged_count,
    percentile,
    phase,
    rows_gather,
    static_partition,
)
from harness.metrics.memory_model import (
    INT64,
    Ledger,
    SeamShape,
    SlotMapBytes,
    assign_bytes,
    cached_bytes,
    output_bytes,
    partition_sets,
    plain_bytes,
    sdpa_bytes,
)
from harness.models.seam import (
    AttentionFn,
    AttentionLayout,
    Recorder,
    attention_bytes,
    attention_flops,
    check_tokens,
    elem_bytes,
    sdpa_attention,
    token_bytes,
)
from harness.params import param
from harness.registry import register_method

SCHEDULES = ("tiered", "constant")
PAPER_DEPTH = 24  # global layers of VGGT-1B, the depth the paper's sensitive band refers to
MERGE_SEED = 33  # seed of the random target of every 2 x 2 cell (FastVGGT's seed)
MAX_Q_MERGE = 0.75  # one target per 2 x 2 cell: at most 3 of 4 patch queries can merge away


@dataclass(frozen=True)
class Spark3RParams:
    """Spark3R knobs (names are what suites sweep)."""

    sp_q_merge: float = param(
        0.5, "share of each group's patch queries merged away (paper's r_Q: 1 - 1/r_Q; 0.5 = r_Q 2)",
        range=(0.0, MAX_Q_MERGE),
    )
    sp_kv_prune: float = param(
        0.5, "share of the frames whose patch keys/values are pruned in the sensitive layers (paper's "
        "r_KV: 1 - 1/r_KV)", range=(0.0, 0.999),
    )
    sp_schedule: str = param(
        "tiered", "K/V schedule over the global layers: 'tiered' (the paper's: layers outside the "
        "sensitive band prune sp_low_mult times harder) or 'constant'", choices=SCHEDULES,
    )
    sp_low_mult: float = param(3.0, "K/V reduction multiplier of the low-sensitivity layers (paper: 3)",
                               range=(1.0, None))
    sp_sensitive_first: int = param(11, "first sensitive global layer, counted in VGGT-1B's 24 (paper: 11)",
                                    range=(0, PAPER_DEPTH - 1))
    sp_sensitive_last: int = param(16, "last sensitive global layer, counted in VGGT-1B's 24 (paper: 16)",
                                   range=(0, PAPER_DEPTH - 1))
    sp_depth: int = param(0, "global layers the sensitive band is rescaled to from VGGT-1B's 24 (0: the "
                          "model's own depth, from the layout; 24 where the layout does not say)",
                          range=(0, None))
    sp_group_frames: int = param(20, "consecutive frames per query-merging group (paper: 20)",
                                 range=(1, None))
    sp_first_frame_dst: bool = param(True, "frame 0's patch queries are all merge targets (FastVGGT's rule)")
    sp_length_rule: bool = param(
        False, "take sp_q_merge and sp_kv_prune from the frame count S by the paper's rule (r_Q 1/2/3/4 up "
        "to 100/300/500/more frames, r_KV = ceil(S/40) above 100 frames); overrides both",
    )

    def __post_init__(self) -> None:
        if self.sp_sensitive_last < self.sp_sensitive_first:
            raise ValueError(f"sp_sensitive_last={self.sp_sensitive_last} must be >= "
                             f"sp_sensitive_first={self.sp_sensitive_first}")

    def seam_peak_bytes(self, shape: SeamShape) -> dict[str, float]:
        """Temporaries at the peak of one call, GPU path (Triton merge kernels); layer-dependent (the
        K/V share follows the layer's tier, so the wall takes the largest layer). The cached query
        partition and kept-K/V index; the queries averaged over heads ``[B, N, d]`` and the
        assignment on them (slot map, best-match index, the gathered ``[cand | src]`` queries of each
        group shape); the merged queries ``[B, H, M, d]`` (float32 sums); the kept keys / values
        ``[B, H, L, d]`` (gathered by index, when K/V are pruned); SDPA on M queries and L keys; the
        unmerge index and the output. A layer that reduces nothing is plain attention."""
        s = shape
        N, qb, e = s.tokens, s.qk_bytes, s.elem_bytes
        q_merge, kv_keep = ratios(self, s.layer, s.frames, s.depth)
        part = query_partition(s.frames, s.patch_h, s.patch_w, s.patch_start, q_merge, self.sp_group_frames,
                               self.sp_first_frame_dst, "cpu")
        L = kv_index(s.frames, s.tokens_per_frame, s.patch_start, kv_keep, "cpu").numel()
        if part.n_slots == N and L == N:
            return plain_bytes(s)
        led = Ledger()
        led.alloc("cached: query partition", cached_bytes(part))
        led.alloc("cached: kept keys/values index", L * INT64)
        sm = None
        if part.n_slots < N:
            mean = led.alloc("queries averaged over heads", float(s.batch) * N * s.head_dim * qb)
            slot = assign_bytes(led, s, s.batch, partition_sets(part), s.head_dim, qb)
            led.free(mean)
            sm = SlotMapBytes(led, s, 1, part.n_slots, slot)
            sm.merge(qb, "merged q")
        if L < N:
            led.alloc("kept k", s.head_tensor(L, qb))
            led.alloc("kept v", s.head_tensor(L, e))
        out = sdpa_bytes(led, s, s.rows, part.n_slots, L, qb, qb, e)
        if sm is not None:
            out = sm.unmerge(part.n_slots, s.cast(qb))
        return led.terms(out, output_bytes(s))


# ---------------------------------------------------------------------------------------- schedule


def length_rule(frames: int) -> tuple[float, float]:
    """The paper's length-adaptive factors as (sp_q_merge, sp_kv_prune) for S = ``frames``."""
    r_q = 1 if frames <= 100 else 2 if frames <= 300 else 3 if frames <= 500 else 4
    r_kv = 1 if frames <= 100 else math.ceil(frames / 40)
    return 1.0 - 1.0 / r_q, 1.0 - 1.0 / r_kv


def schedule_depth(p: Spark3RParams, model_depth: int = 0) -> int:
    """The depth the band is rescaled to: ``sp_depth``, else the model's (``layout.depth``), else 24."""
    return p.sp_depth or model_depth or PAPER_DEPTH


def is_sensitive(p: Spark3RParams, layer: int, model_depth: int = 0) -> bool:
    """Whether global layer ``layer`` (of :func:`schedule_depth` layers) falls in the sensitive band.

    The layer's centre is mapped to VGGT-1B's 24 layers; at depth 24 the band is exactly layers
    ``sp_sensitive_first..sp_sensitive_last``.
    """
    depth = schedule_depth(p, model_depth)
    if not 0 <= layer < depth:
        raise ValueError(f"Spark3R: global layer {layer} is outside a depth of {depth} global layers; set "
                         "sp_depth to the model's number of global layers (or 0: the model's own)")
    centre = (layer + 0.5) * PAPER_DEPTH / depth
    return p.sp_sensitive_first <= centre < p.sp_sensitive_last + 1


def ratios(p: Spark3RParams, layer: int, frames: int, model_depth: int = 0) -> tuple[float, float]:
    """(query merge share, K/V frame keep share) of one global layer."""
    q_merge, kv_prune = length_rule(frames) if p.sp_length_rule else (p.sp_q_merge, p.sp_kv_prune)
    kv_keep = 1.0 - kv_prune
    if p.sp_schedule == "tiered" and not is_sensitive(p, layer, model_depth):
        kv_keep /= p.sp_low_mult
    return q_merge, kv_keep


# ------------------------------------------------------------------------------------ K/V pruning


def kept_frames(frames: int, keep: float) -> list[int]:
    """Evenly spaced frames whose patch keys/values are kept: round(keep * S) of them (at least
    one), frame i * S // K for i < K (every r-th frame when K = S / r)."""
    n_kept = min(frames, max(1, int(keep * frames + 0.5)))
    return [i * frames // n_kept for i in range(n_kept)]


@functools.lru_cache(maxsize=64)
def kv_index(frames: int, tokens_per_frame: int, patch_start: int, keep: float, device: str) -> torch.Tensor:
    """[L] ascending indices of the kept keys/values: every special token, the kept frames' patches."""
    pos = torch.arange(frames * tokens_per_frame).view(frames, tokens_per_frame)
    keep_mask = torch.zeros(frames, tokens_per_frame, dtype=torch.bool)
    keep_mask[:, :patch_start] = True
    keep_mask[kept_frames(frames, keep), patch_start:] = True
    return pos[keep_mask].to(device)


# --------------------------------------------------------------------------------- query merging


@functools.lru_cache(maxsize=64)
def query_partition(frames: int, patch_h: int, patch_w: int, patch_start: int, merge: float, group: int,
                    first_dst: bool, device: str) -> Partition:
    """Static roles of the query merge (cached): special tokens kept, one match set per group shape.

    Groups are ``group`` consecutive frames; groups of one shape (same frame count, holding frame 0
    or not) form one match set of equal blocks. Each block merges ``merge`` of its patch queries
    (at most all of its sources).
    """
    P = patch_start + patch_h * patch_w
    pos = torch.arange(frames * P).view(frames, P)
    dst = cell_dst_mask(frames, patch_h, patch_w, MERGE_SEED).view(frames, patch_h * patch_w)
    if first_dst:
        dst[0] = True
    shapes: dict[tuple[int, bool], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for g0 in range(0, frames, group):
        g1 = min(frames, g0 + group)
        patches, is_dst = pos[g0:g1, patch_start:], dst[g0:g1]
        srcs, dsts = shapes.setdefault((g1 - g0, g0 == 0), ([], []))
        srcs.append(patches[~is_dst])
        dsts.append(patches[is_dst])
    sets = []
    for srcs, dsts in shapes.values():
        src, dst_b = torch.stack(srcs), torch.stack(dsts)  # [nb, ns], [nb, nd]
        r = min(src.shape[1], merged_count(merge, src.shape[1] + dst_b.shape[1]))
        sets.append((src, dst_b, r))
    return static_partition(frames * P, pos[:, :patch_start].reshape(-1), sets, device)


def merge_queries(q: torch.Tensor, layout: AttentionLayout, part: Partition) -> tuple[SlotMap, torch.Tensor]:
    """Match within the groups on the head-averaged queries. q: [B, H, N, d] -> (slot map [B, 1, N],
    best-match scores of the merged sources, a subsample, for the merge-quality proxy)."""
    B, _, N, _ = q.shape
    a = assign(rows_gather(q.mean(dim=1)), B, part, layout.recorder is not None)
    return SlotMap(a.slot_of.view(B, 1, N), part.n_slots), a.merged_scores


# ------------------------------------------------------------------------------------- attention


def spark3r_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout,
                      p: Spark3RParams) -> torch.Tensor:
    """Merged queries over pruned keys/values, unmerged by copy. q, k, v: [B, H, N, d] -> [B, H, N, d]."""
    check_tokens("Spark3R", q, layout)
    S, P, ps = layout.frames, layout.tokens_per_frame, layout.patch_start
    if P != ps + layout.patch_h * layout.patch_w:
        raise ValueError(f"Spark3R: tokens_per_frame={P} != patch_start={ps} + patch_h*patch_w="
                         f"{layout.patch_h}*{layout.patch_w}")
    q_merge, kv_keep = ratios(p, layout.layer, S, layout.depth)
    dev = str(q.device)
    part = query_partition(S, layout.patch_h, layout.patch_w, ps, q_merge, p.sp_group_frames,
                           p.sp_first_frame_dst, dev)
    kv = kv_index(S, P, ps, kv_keep, dev)
    N = q.shape[2]
    if part.n_slots == N and kv.numel() == N:
        return sdpa_attention(q, k, v, layout)  # nothing reduced at this layer
    rec = layout.recorder
    sm, scores = None, None
    if part.n_slots < N:
        with phase(rec, "match"):
            sm, scores = merge_queries(q, layout, part)
    with phase(rec, "aggregate"):
        q_r = sm.merge(q) if sm is not None else q
        k_r, v_r = (k, v) if kv.numel() == N else (k.index_select(2, kv), v.index_select(2, kv))
    with phase(rec, "attention"):
        o_r = F.scaled_dot_product_attention(q_r, k_r, v_r)
    with phase(rec, "aggregate"):
        out = sm.unmerge(o_r) if sm is not None else o_r
    if rec is not None:
        count_work(rec, q, part, kv.numel(), sm is not None, scores)
    return out


def count_work(rec: Recorder, q: torch.Tensor, part: Partition, n_kv: int, merged: bool,
               scores: torch.Tensor | None) -> None:
    """Counters of one layer: M merged queries over L kept keys/values. q: [B, H, N, d]."""
    B, H, N, d = q.shape
    M, eb = part.n_slots, elem_bytes(q)
    rec.count("tokens_q", M * H)
    rec.count("tokens_kv", n_kv * H)
    rec.count("attn_flops", attention_flops(B, H, M, n_kv, d))
    rec.count("attn_bytes", attention_bytes(q, M, n_kv))
    q_moves = 2 * (N + M) if merged else 0  # merge reads N, writes M; unmerge reads M, writes N
    kv_moves = 4 * n_kv if n_kv < N else 0  # gathers of k and v read and write L rows each
    rec.count("agg_bytes", token_bytes(B * H, q_moves + kv_moves, d, eb))
    if merged:
        rec.count("match_flops", part.match_flops(B, d))
        rec.count("match_bytes", token_bytes(B, N, d, eb))  # reads the head-averaged queries once
        if scores is not None and scores.numel():
            rec.observe("merge_sim_p10", percentile(scores, 0.1))


@register_method("spark3r", params=Spark3RParams, workloads=("vggt",),
                 doc="Spark3R-style: queries merged within frame groups, keys/values pruned by temporal "
                     "stride, layer-adaptive K/V schedule (arXiv 2605.06270)")
def make_spark3r(p: Spark3RParams) -> AttentionFn:
    """Build Spark3R's ``attention_fn(q, k, v, layout) -> out``."""
    return lambda q, k, v, layout: spark3r_attention(q, k, v, layout, p)
