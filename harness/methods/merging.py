"""Token-merging primitives shared by HTTM and the ToMe / FastVGGT baselines.

Vocabulary
- A *decision row* is one (batch element, head group) pair. Merge decisions have shape
  ``[B, G, N]``; the ``H`` heads of the attention tensors are split into ``G`` equal groups and
  every head of a group follows its group's decision (``G = 1``: one decision for all heads).
- A *slot map* ``slot_of: [B, G, N]`` sends every original token to a slot in ``[0, M)``.
  Tokens that share a slot are merged into their plain mean; unmerging copies a slot's output
  row back to every token of the slot (ToMeSD-style copy). Slots nobody maps to are empty
  (zero rows), which is how ragged per-row lengths are padded.
- A *match set* is a batch of ``nb`` equally sized bipartite problems ("blocks"): each block
  has ``ns`` src tokens and ``nc`` candidate targets, given as original token indices. Each src
  finds its most similar candidate (cosine); the top ``r`` src of every block (by that score)
  join their candidate's slot, the other src get slots of their own. Everything about a match
  set except the similarities is data-independent, so methods build it once per shape.

Matching returns a :class:`SlotMap` whose ``merge`` / ``unmerge`` methods are the pair of
closures a caller needs; no index bookkeeping leaks out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.methods import kernels
from harness.models.seam import (
    AttentionFn,
    AttentionLayout,
    Recorder,
    attention_bytes,
    attention_flops,
    elem_bytes,
    named_range,
    ranges_on,
    sdpa_attention,
    token_bytes,
)

SIM_CHUNK_ELEMS = {"cpu": 1 << 18, "cuda": 1 << 28}
"""Most similarity entries held at once by :func:`best_match`, per device type (CPU: 1 MiB in
float32, so a chunk's scores stay in L2 cache between the matmul and the max; CUDA: 512 MiB
in bf16, fewer launches)."""

GATHER_CHUNK_ELEMS = {"cpu": 1 << 20, "cuda": 1 << 30}
"""Most gathered metric entries held at once by :func:`assign` (CPU: 4 MiB in float32, which
keeps every intermediate small: large fresh allocations cost page faults on every call)."""

P10_SAMPLE = 1 << 16
"""Most merged-pair scores used to estimate the 10th-percentile merge similarity."""



@dataclass(frozen=True, eq=False)
class MatchSet:
    """A batch of ``nb`` same-sized bipartite matching problems (all indices are static).

    src: [nb, ns] original token indices that may be merged away.
    cand: [nb, nc] original token indices they may merge into.
    cand_slot: [nb, nc] slot of each candidate.
    unm_base: [nb, 1] first slot of the block's src that stay unmerged (they take
        ``unm_base + 0, 1, ...`` in descending score order).
    r: number of src merged per block (``0 <= r <= ns``); the top-r by best score.
    """

    src: torch.Tensor
    cand: torch.Tensor
    cand_slot: torch.Tensor
    unm_base: torch.Tensor
    r: int

    @functools.cached_property
    def cand_src(self) -> torch.Tensor:
        """[nb, nc + ns]: each block's candidates then its src (one gather per block)."""
        return torch.cat([self.cand, self.src], dim=1)

    @property
    def n_src(self) -> int:
        return self.src.shape[0] * self.src.shape[1]


@dataclass(frozen=True, eq=False)
class Partition:
    """Everything static about one merge: slots of never-matched tokens plus the match sets.

    static_slot: [N] slot of every token that is not a src of any match set (dst, kept,
        pass-through tokens); entries of src tokens are ignored (set to -1).
    sets: the match sets; their src index sets are disjoint.
    n_slots: M, slots after merging (equal for every decision row).
    """

    static_slot: torch.Tensor
    sets: tuple[MatchSet, ...]
    n_slots: int

    def match_flops(self, rows: int, dim: int) -> float:
        """FLOPs of the similarity matmuls for ``rows`` decision rows of width ``dim``."""
        return float(sum(2.0 * rows * s.src.numel() * s.cand.shape[1] * dim for s in self.sets if s.r > 0))


@dataclass(eq=False)
class SlotMap:
    """A token -> slot assignment, applied to head tensors.

    slot_of: [B, G, N] long in [0, n_slots); n_slots: M.
    ``merge(x: [B, H, N, d]) -> [B, H, M, d]`` (plain mean per slot, H a multiple of G);
    ``unmerge(y: [B, H, M, d]) -> [B, H, N, d]`` (gather: token n gets row slot_of[n]).

    The merge is a segmented mean (``embedding_bag``) over the tokens sorted by slot, which
    on CPU is several times faster than ``index_add_``; the sort is one sort of the [B, G, N]
    decisions (:func:`_sort_rows`), cached, so merging K and V with one map sorts once.
    """

    slot_of: torch.Tensor
    n_slots: int
    _flat: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)
    _bags: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)
    _counts: torch.Tensor | None = field(default=None, repr=False)

    def counts(self) -> torch.Tensor:
        """Members per slot: [B, G, M] (float, 0 for empty slots)."""
        if self._counts is None:
            B, G, N = self.slot_of.shape
            M = self.n_slots
            rows = torch.arange(B * G, device=self.slot_of.device).view(B, G, 1) * M
            flat = (self.slot_of + rows).reshape(-1)
            self._counts = torch.bincount(flat, minlength=B * G * M).view(B, G, M).float()
        return self._counts

    def _heads_per_group(self, heads: int) -> int:
        G = self.slot_of.shape[1]
        if heads % G:
            raise ValueError(f"SlotMap: {heads} heads cannot be split into {G} equal head groups")
        return heads // G

    def flat_index(self, heads: int, rows_per_head: int | None = None) -> torch.Tensor:
        """[B * H * N] row index into a flattened ``[B * H * M, d]`` merged tensor.

        M defaults to ``n_slots``; a smaller M (a merged tensor cut after the last used slot,
        e.g. by :func:`harness.methods.httm.ragged_attention`) works as long as every used
        slot index is below it.
        """
        M = self.n_slots if rows_per_head is None else rows_per_head
        key = (heads, M)
        if key not in self._flat:
            B, G, N = self.slot_of.shape
            hg = self._heads_per_group(heads)
            rows = torch.arange(B * heads, device=self.slot_of.device).view(B, G, hg, 1) * M
            self._flat[key] = (self.slot_of[:, :, None, :] + rows).reshape(-1)
        return self._flat[key]

    def bags(self, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(order [B * H * N], offsets [B * H * M]): tokens sorted by flat slot, bag starts.

        Sorted once per decision row ([B * G, N], a batched sort) and expanded to the heads
        of each group arithmetically.
        """
        if heads not in self._bags:
            B, G, N = self.slot_of.shape
            M = self.n_slots
            hg = self._heads_per_group(heads)
            dev = self.slot_of.device
            order_g = _sort_rows(self.slot_of.reshape(B * G, N), M)  # [B G, N]
            head_rows = torch.arange(B * heads, device=dev).view(B, G, hg, 1) * N
            order = (order_g.view(B, G, 1, N) + head_rows).reshape(-1)
            sizes = self.counts().long()[:, :, None, :].expand(B, G, hg, M).reshape(-1)
            offsets = sizes.cumsum(0) - sizes
            self._bags[heads] = (order, offsets)
        return self._bags[heads]

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """Plain mean per slot (empty slots are zero). x: [B, H, N, d] -> [B, H, M, d].

        With the Triton kernels (:mod:`harness.methods.kernels`) one scatter-add kernel.
        """
        if kernels.use_triton(x):
            self._heads_per_group(x.shape[1])  # the torch path checks this in bags()
            return kernels.triton_merge().segment_mean(x, self.slot_of, self.n_slots, self.counts())
        B, H, N, d = x.shape
        G, M = self.slot_of.shape[1], self.n_slots
        order, offsets = self.bags(H)
        sums = F.embedding_bag(order, x.reshape(B * H * N, d), offsets, mode="sum")
        inv = self.counts().clamp(min=1.0).reciprocal().to(sums.dtype)
        sums.view(B, G, H // G, M, d).mul_(inv[:, :, None, :, None])
        return sums.view(B, H, M, d)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """Copy each slot's row back to its tokens. y: [B, H, M, d] -> [B, H, N, d]."""
        B, H, M, d = y.shape
        N = self.slot_of.shape[-1]
        flat = y.reshape(B * H * M, d).index_select(0, self.flat_index(H, M))
        return flat.view(B, H, N, d)

    def occupied(self) -> torch.Tensor:
        """Non-empty slots per decision row: [B, G] long."""
        return (self.counts() > 0).sum(-1)


def _sort_rows(keys: torch.Tensor, bound: int) -> torch.Tensor:
    """Per-row stable argsort of small non-negative integers. keys: [R, N] in [0, bound) -> [R, N].

    One flat int32 sort of ``row * bound + key`` when it fits (torch sorts int32 keys stably
    with a radix sort: about 3x faster than a batched ``argsort(dim=1)`` on CPU); the rows
    stay apart because their keys do, and each row's positions are made relative again.
    """
    R, N = keys.shape
    if R * bound >= 2**31:
        return keys.argsort(dim=1, stable=True)
    rows = torch.arange(R, device=keys.device).view(R, 1)
    flat = (keys + rows * bound).to(torch.int32).reshape(-1)
    order = flat.sort(stable=True).indices.view(R, N)
    return order.sub_(rows * N)


def best_match(
    src: torch.Tensor, cand: torch.Tensor, need_score: bool = True, chunk_elems: int | None = None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Most similar candidate of every src row, by cosine similarity.

    src: [R, ns, D], cand: [R, nc, D] (any scale; normalized here).
    Returns (score [R, ns] cosine of the best candidate or None when not ``need_score``,
    index [R, ns] into nc).
    Computed as batched matmuls in chunks of whole rows of R (and of ns when one block is
    larger than the budget) so that at most ``chunk_elems`` similarities exist at once
    (default: :data:`SIM_CHUNK_ELEMS` for the device).
    Only the candidates are normalized before the matmul; the src norms only rescale the
    winning score, so they are divided out afterwards (and skipped without ``need_score``).
    The index comes from ``max`` even without the score: on CPU ``max(dim=-1)`` is about twice as
    fast as ``argmax(dim=-1)`` over the short candidate rows (both return the first maximum).
    With the Triton kernels (:mod:`harness.methods.kernels`) similarity and maximum are one
    kernel and no similarity is stored.
    """
    R, ns, _ = src.shape
    nc = cand.shape[1]
    if ns == 0 or nc == 0:
        score = src.new_full((R, ns), float("-inf")) if need_score else None
        return score, torch.zeros(R, ns, dtype=torch.long, device=src.device)
    if kernels.use_triton(src):
        score, index = kernels.triton_merge().best_match(src, cand)
        return (score if need_score else None), index
    if chunk_elems is None:
        chunk_elems = SIM_CHUNK_ELEMS.get(src.device.type, SIM_CHUNK_ELEMS["cpu"])
    cand_t = F.normalize(cand, dim=-1).transpose(1, 2)  # [R, D, nc]
    per_row = ns * nc
    if per_row * R <= chunk_elems:  # one shot
        sim = torch.bmm(src, cand_t)
        score, index = sim.max(dim=-1)
        score = score if need_score else None
    else:
        if per_row <= chunk_elems:
            step_r, step_s = max(1, chunk_elems // per_row), ns
        else:
            step_r, step_s = 1, max(1, chunk_elems // nc)
        index = torch.empty(R, ns, dtype=torch.long, device=src.device)
        best = src.new_empty(R, ns)  # the winning scores (returned only with need_score)
        buf = src.new_empty(min(R, step_r) * min(ns, step_s) * nc)  # reused: stays in cache
        for r0 in range(0, R, step_r):
            for s0 in range(0, ns, step_s):
                rs, ss = slice(r0, r0 + step_r), slice(s0, s0 + step_s)
                a = src[rs, ss]
                sim = torch.bmm(a, cand_t[rs], out=buf[: a.shape[0] * a.shape[1] * nc].view(*a.shape[:2], nc))
                torch.max(sim, dim=-1, out=(best[rs, ss], index[rs, ss]))
        score = best if need_score else None
    if score is not None:
        score = score.div_(torch.linalg.vector_norm(src, dim=-1).clamp_(min=1e-12))
    return score, index


def src_slots(
    score: torch.Tensor | None, index: torch.Tensor, cand_slot: torch.Tensor, unm_base: torch.Tensor, r: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slots of the src tokens of a batch of blocks.

    score, index: [R, nb, ns] best-match score and candidate index; cand_slot: [nb, nc];
    unm_base: [nb, 1]; r: src merged per block (top-r by score; score may be None when r >= ns).
    Returns (slot [R, nb, ns], merged [R, nb, ns] bool).
    """
    R, nb, ns = index.shape
    target = cand_slot.unsqueeze(0).expand(R, nb, cand_slot.shape[1]).gather(-1, index)
    if r >= ns:
        return target, torch.ones_like(index, dtype=torch.bool)
    assert score is not None, "src_slots: top-r selection needs the scores"
    order = score.argsort(dim=-1, descending=True)
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(ns, device=score.device).expand(R, nb, ns).contiguous()
    )
    merged = rank < r
    own = unm_base.unsqueeze(0) + (rank - r)
    return torch.where(merged, target, own), merged


@dataclass(frozen=True, eq=False)
class Assignment:
    """Result of matching one metric against a partition.

    slot_of: [R, N]; merged_scores: best-match scores of the merged src (a flattened
    subsample of at most ``P10_SAMPLE`` values, for the merge-quality proxy).
    """

    slot_of: torch.Tensor
    merged_scores: torch.Tensor


def rows_gather(metric: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Gather function over a row-major metric. metric: [R, N, D] -> gather(idx [K]) -> [R, K, D]."""
    return lambda idx: metric.index_select(1, idx)


def assign(
    gather: Callable[[torch.Tensor], torch.Tensor], rows: int, part: Partition, sample_scores: bool = False
) -> Assignment:
    """Match every decision row against the static partition.

    gather(idx [K]) -> [R, K, D]: the metric vectors of tokens ``idx`` for the R = ``rows``
    decision rows (cosine similarity is taken on D); see :func:`rows_gather`.
    Returns the slot of every token ([R, N]) and, when ``sample_scores``, a subsample of the
    merged pairs' cosine similarities.
    """
    R = rows
    N = part.static_slot.numel()
    slot_of = part.static_slot.unsqueeze(0).expand(R, N).clone()
    samples: list[torch.Tensor] = []
    budget = GATHER_CHUNK_ELEMS.get(slot_of.device.type, GATHER_CHUNK_ELEMS["cpu"])
    for ms in part.sets:
        nb, ns = ms.src.shape
        nc = ms.cand.shape[1]
        if ns == 0 or ms.r == 0:
            continue  # nothing merges: the src already have static slots
        need_score = sample_scores or ms.r < ns
        index = torch.empty(R, nb, ns, dtype=torch.long, device=slot_of.device)
        score = None
        n = nc + ns
        D = gather(ms.cand_src[:0].reshape(-1)).shape[-1]
        step = max(1, budget // max(1, R * n * D))  # blocks per chunk
        for b0 in range(0, nb, step):
            # one gather per chunk of blocks: [cand | src] of each block, all R rows
            idx = ms.cand_src[b0 : b0 + step].reshape(-1)
            x = gather(idx)
            bc = idx.numel() // n
            x = x.reshape(R * bc, n, x.shape[-1])
            s_c, i_c = best_match(x[:, nc:], x[:, :nc], need_score)
            index[:, b0 : b0 + bc] = i_c.view(R, bc, ns)
            if s_c is not None:
                if score is None:
                    score = s_c.new_empty(R, nb, ns)
                score[:, b0 : b0 + bc] = s_c.view(R, bc, ns)
        slot, merged = src_slots(score, index, ms.cand_slot, ms.unm_base, ms.r)
        slot_of.scatter_(1, ms.src.reshape(1, -1).expand(R, -1), slot.reshape(R, -1))
        if sample_scores:
            flat_s, flat_m = score.reshape(-1), merged.reshape(-1)
            step_p = max(1, flat_s.numel() // P10_SAMPLE)
            samples.append(flat_s[::step_p][flat_m[::step_p]])
    scores = torch.cat(samples) if samples else torch.empty(0, device=slot_of.device)
    return Assignment(slot_of=slot_of, merged_scores=scores)


def percentile(values: torch.Tensor, q: float) -> float:
    """The ``q``-quantile (0..1) of a 1-D tensor by order statistic; NaN when empty."""
    n = values.numel()
    if n == 0:
        return float("nan")
    k = min(n, max(1, int(round(q * (n - 1))) + 1))
    return float(values.float().kthvalue(k).values)


def static_partition(
    n_tokens: int,
    kept: torch.Tensor,
    sets: list[tuple[torch.Tensor, torch.Tensor, int]],
    device: torch.device | str,
) -> Partition:
    """Number the slots of a partition and build its match sets.

    n_tokens: N. kept: [T] tokens that keep their own slot and never absorb merges
    (slots 0..T-1, in the given order). sets: for each match set, (src [nb, ns],
    dst [nb, nd], r) with disjoint token indices; ``dst`` tokens keep their own slot and are
    the candidates. Slots of a set are numbered block by block: the block's nd dst, then its
    ns - r unmerged src (with r == 0 the src are numbered statically and the set is never
    matched, but stays in ``sets`` so set order matches the input). Extra candidates that
    are kept tokens (e.g. first-frame anchors) are added with :func:`with_extra_candidates`.
    """
    static = torch.full((n_tokens,), -1, dtype=torch.long)
    static[kept] = torch.arange(kept.numel())
    base = kept.numel()
    built: list[MatchSet] = []
    for src, dst, r in sets:
        nb, ns = src.shape
        nd = dst.shape[1]
        if r > ns or r < 0:
            raise ValueError(f"static_partition: r={r} must be in [0, ns={ns}]")
        per_block = nd + ns - r
        block_base = base + torch.arange(nb).view(nb, 1) * per_block
        dst_slot = block_base + torch.arange(nd).view(1, nd)
        static[dst.reshape(-1)] = dst_slot.reshape(-1)
        if r == 0:  # nothing merges: src keep static slots after the dst
            static[src.reshape(-1)] = (block_base + nd + torch.arange(ns).view(1, ns)).reshape(-1)
        built.append(
            MatchSet(src=src, cand=dst, cand_slot=dst_slot, unm_base=block_base + nd, r=r)
        )
        base += nb * per_block
    return _to_device(Partition(static_slot=static, sets=tuple(built), n_slots=base), device)


def with_extra_candidates(part: Partition, extra: list[torch.Tensor | None]) -> Partition:
    """Add already-slotted tokens as further candidates of each match set.

    extra[i]: [nb_i, a] token indices (on any device) appended to set i's candidates, or None.
    Their slots are read from ``static_slot`` (they must be kept or dst tokens).
    """
    sets = []
    for ms, ex in zip(part.sets, extra):
        if ex is None:
            sets.append(ms)
            continue
        ex = ex.to(ms.cand.device)
        ex_slot = part.static_slot[ex]
        if bool((ex_slot < 0).any()):
            raise ValueError("with_extra_candidates: an extra candidate is a src token (has no own slot)")
        sets.append(
            MatchSet(
                src=ms.src,
                cand=torch.cat([ms.cand, ex], dim=1),
                cand_slot=torch.cat([ms.cand_slot, ex_slot], dim=1),
                unm_base=ms.unm_base,
                r=ms.r,
            )
        )
    return Partition(static_slot=part.static_slot, sets=tuple(sets), n_slots=part.n_slots)


def _to_device(part: Partition, device: torch.device | str) -> Partition:
    sets = tuple(
        MatchSet(
            src=s.src.to(device),
            cand=s.cand.to(device),
            cand_slot=s.cand_slot.to(device),
            unm_base=s.unm_base.to(device),
            r=s.r,
        )
        for s in part.sets
    )
    return Partition(static_slot=part.static_slot.to(device), sets=sets, n_slots=part.n_slots)


def merged_count(ratio: float, n: int) -> int:
    """Tokens to merge away out of ``n`` for a merge ratio (round half up, within [0, n])."""
    return min(n, max(0, int(ratio * n + 0.5)))


@contextmanager
def phase(rec: Recorder | None, name: str) -> Iterator[None]:
    """``rec.phase(name)`` when a recorder is present; a ``phase:<name>`` range in profiles
    (checked inline: this sits in the timed path of every merging method)."""
    if ranges_on():
        with named_range(f"phase:{name}"), (rec.phase(name) if rec is not None else nullcontext()):
            yield
    elif rec is None:
        yield
    else:
        with rec.phase(name):
            yield


def shared_merge_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sm: SlotMap,
    rec: Recorder | None,
    prop_attn: bool = False,
) -> torch.Tensor:
    """Attention with ONE assignment shared by Q, K and V (ToMe / FastVGGT style).

    q, k, v: [B, H, N, d]; sm.slot_of: [B, 1, N] (or [B, G, N]). Merges all three by plain
    mean, runs SDPA on the merged tokens (with ``prop_attn`` adding log(slot size) of each key
    to the logits, ToMe's proportional attention), and copies each slot's output row back.
    Records "aggregate" / "attention" phases and tokens_q, tokens_kv, pad_q, attn_flops.
    Returns [B, H, N, d].
    """
    B, H, N, d = q.shape
    with phase(rec, "aggregate"):
        q_m, k_m, v_m = sm.merge(q), sm.merge(k), sm.merge(v)
        bias = None
        if prop_attn:
            G = sm.slot_of.shape[1]
            log_size = sm.counts().clamp(min=1.0).log().to(q.dtype)  # [B, G, M]
            bias = log_size[:, :, None, None, :].expand(B, G, H // G, 1, sm.n_slots).reshape(B, H, 1, -1)
    with phase(rec, "attention"):
        o_m = F.scaled_dot_product_attention(q_m, k_m, v_m, attn_mask=bias)
    with phase(rec, "aggregate"):
        out = sm.unmerge(o_m)
    if rec is not None:
        G = sm.slot_of.shape[1]
        real = float(sm.occupied().sum()) * (H // G) / B
        rec.count("tokens_q", real)
        rec.count("tokens_kv", real)
        rec.count("pad_q", sm.n_slots * H - real)
        rec.count("attn_flops", attention_flops(B, H, sm.n_slots, sm.n_slots, d))
        rec.count("attn_bytes", attention_bytes(q, sm.n_slots, sm.n_slots))
        # merges of q, k and v read N tokens and write M slots; the unmerge reads M, writes N
        rec.count("agg_bytes", token_bytes(B * H, 4 * (N + sm.n_slots), d, elem_bytes(q)))
    return out


def from_layer(start_layer: int, merged: AttentionFn) -> AttentionFn:
    """An ``attention_fn`` that runs ``merged`` on global layers >= ``start_layer`` and plain
    SDPA on the earlier ones (the ``start_layer`` knob every merging method has)."""

    def attention_fn(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout
    ) -> torch.Tensor:
        if layout.layer < start_layer:
            return sdpa_attention(q, k, v, layout)
        return merged(q, k, v, layout)

    return attention_fn
