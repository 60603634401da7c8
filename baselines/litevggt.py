"""LiteVGGT-style geometry-aware cached token merging at VGGT's global-attention seam.

Shu et al., "LiteVGGT: Boosting Vanilla VGGT via Geometry-aware Cached Token Merging"
(arXiv 2512.04939), re-implemented from the paper and its code (``GarlicBa/LiteVGGT-repo``,
``merging/merge.py``, ``vggt/layers/block.py``, ``vggt/models/aggregator.py``). Training-free part
only: the paper's fine-tuning and its FP8 (Transformer Engine on the linear layers, not on
attention) are not implemented. Steps, knobs and every deviation: docs/methods/litevggt.md.

One forward, per batch row:

1. **Geometry score** of every patch token (once per forward, at its first global layer): the
   local variance of the patch tokens over a ``lv_var_window`` square of the patch grid, after a
   fixed random orthogonal projection to ``lv_proj_dim`` channels (the reference's token-variance
   map; its pixel-gradient map needs the input image, which the seam does not carry).
2. **Roles**: frame 0 is the reference frame (all its patches are targets); in frames >= 1 the
   anchor of every 2 x 2 cell of the patch grid is the cell's LOWEST-scoring patch (a target), the
   top ``lv_protect_frac`` of the remaining patches by score are protected (own slot, never
   merged), the rest are src. Camera/register tokens pass through (``lv_special_targets``: they
   are targets, as upstream).
3. **Matching** (at the forward's first layer and at ``lv_recompute_layers``): every src finds its
   most similar target by cosine similarity of the layer's normed input ``x_norm`` over all
   targets of all frames; the top ``lv_ratio`` share of src by that score merge.
4. **Reuse**: the other layers apply the cached assignment to their own q, k, v.
5. ONE assignment for Q, K and V: plain mean per group, SDPA, output copied back to every member.

A forward starts when the layer index does not increase (``layer <= last layer seen``): the
roles and the match are then recomputed. At the attention scope the same layer is called over
and over, so every call recomputes.

Shapes: q, k, v ``[B, H, N, d]`` with N = S * P (frames times tokens per frame) -> ``[B, H, N, d]``.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from harness.methods.merging import (
    Partition,
    SlotMap,
    assign,
    merged_count,
    percentile,
    phase,
    rows_gather,
    shared_merge_attention,
    static_partition,
)
from harness.models.seam import (
    AttentionFn,
    AttentionLayout,
    check_tokens,
    elem_bytes,
    sdpa_attention,
    token_bytes,
)
from harness.params import param
from harness.registry import register_method

CELL = 2  # side of the anchor cells of the patch grid (the reference's sx = sy = 2)
ROLE_SRC, ROLE_TARGET, ROLE_KEPT = 0, 1, 2


@dataclass(frozen=True)
class LiteVGGTParams:
    """LiteVGGT knobs (names are what suites sweep). Defaults: the reference code's configuration."""

    lv_ratio: float = param(
        1.0, "fraction of the unprotected src merged into their most similar target (1.0: upstream's "
        "effective setting, its r = 0.9 N exceeds the src count)", range=(0.0, 1.0)
    )
    lv_recompute_layers: tuple[int, ...] = param(
        (0, 6, 15, 20), "global layers that recompute the merge indices; the others reuse the last "
        "ones (upstream: 0, 6, 15, 20 of VGGT-1B's 24); a forward's first layer always computes"
    )
    lv_protect_frac: float = param(
        0.1, "share of each frame's patches protected by highest geometry score (never merged)",
        range=(0.0, 1.0)
    )
    lv_special_targets: bool = param(
        False, "camera/register tokens absorb merges (upstream); False: pass-through"
    )
    lv_proj_dim: int = param(
        32, "channels of the random orthogonal projection before the token variance (0: all)",
        range=(0, None)
    )
    lv_var_window: int = param(3, "side of the local window of the token variance (odd)", range=(1, 15))
    lv_proj_seed: int = param(0, "seed of the random orthogonal projection", range=(0, None))

    def __post_init__(self) -> None:
        if self.lv_var_window % 2 == 0:
            raise ValueError(f"lv_var_window={self.lv_var_window} must be odd (a window centred on a token)")
        if any(layer < 0 for layer in self.lv_recompute_layers):
            raise ValueError(f"lv_recompute_layers={list(self.lv_recompute_layers)} must be global layer "
                             "indices >= 0")


# -- step 1: geometry score ------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def projection(channels: int, dim: int, seed: int, device: str, dtype: torch.dtype) -> torch.Tensor | None:
    """[channels, dim] matrix with orthonormal columns, drawn in float64 on the CPU from ``seed``;
    None when ``dim`` is 0 or not below ``channels`` (the variance is then taken on all channels)."""
    if dim == 0 or dim >= channels:
        return None
    mat = torch.empty(channels, dim, dtype=torch.float64)
    torch.nn.init.orthogonal_(mat, generator=torch.Generator().manual_seed(seed))
    return mat.to(device=device, dtype=dtype)


def local_variance(grid: torch.Tensor, window: int) -> torch.Tensor:
    """Variance over the ``window`` x ``window`` neighbourhood (in-grid tokens only), summed over
    channels. grid: [R, C, h, w] -> [R, h, w]."""
    pad = window // 2
    mean = F.avg_pool2d(grid, window, stride=1, padding=pad, count_include_pad=False)
    mean_sq = F.avg_pool2d(grid * grid, window, stride=1, padding=pad, count_include_pad=False)
    return (mean_sq - mean * mean).clamp_min(0.0).sum(1)


def geometry_scores(metric: torch.Tensor, layout: AttentionLayout, p: LiteVGGTParams) -> torch.Tensor:
    """Token-variance score of every patch token. metric: [B, N, C] -> [B, S, h, w] (float32 or
    float64)."""
    B, _, C = metric.shape
    S, P, ps = layout.frames, layout.tokens_per_frame, layout.patch_start
    h, w = layout.patch_h, layout.patch_w
    x = metric if metric.dtype == torch.float64 else metric.float()
    patches = x.reshape(B, S, P, C)[:, :, ps:]  # [B, S, h*w, C]
    proj = projection(C, p.lv_proj_dim, p.lv_proj_seed, str(x.device), x.dtype)
    if proj is not None:
        patches = patches @ proj
    grid = patches.reshape(B * S, h, w, -1).permute(0, 3, 1, 2)
    return local_variance(grid, p.lv_var_window).view(B, S, h, w)


# -- step 2: roles ----------------------------------------------------------------------------


def cell_anchors(scores: torch.Tensor) -> torch.Tensor:
    """The lowest-scoring patch of every 2 x 2 cell (cells from even row / column; an odd last row
    or column gives 1 x 2, 2 x 1 or 1 x 1 cells); ties go to the first in row-major order.
    scores: [R, h, w] -> anchor mask [R, h, w] bool."""
    R, h, w = scores.shape
    ch, cw = -(-h // CELL), -(-w // CELL)
    padded = F.pad(scores, (0, cw * CELL - w, 0, ch * CELL - h), value=float("inf"))
    cells = padded.view(R, ch, CELL, cw, CELL).permute(0, 1, 3, 2, 4).reshape(R, ch, cw, CELL * CELL)
    pick = cells.argmin(-1)  # [R, ch, cw]: dy * 2 + dx
    rows = torch.arange(ch, device=scores.device).view(1, ch, 1) * CELL + pick // CELL
    cols = torch.arange(cw, device=scores.device).view(1, 1, cw) * CELL + pick % CELL
    mask = torch.zeros(R, h, w, dtype=torch.bool, device=scores.device)
    mask[torch.arange(R, device=scores.device).view(R, 1, 1).expand_as(rows), rows, cols] = True
    return mask


def protected_count(patches: int, cells: int, frac: float) -> int:
    """Protected patches per frame: int(frac * patches) (upstream's count), at most the non-anchors."""
    return min(int(frac * patches), patches - cells)


def frame_roles(scores: torch.Tensor, frac: float) -> torch.Tensor:
    """Roles of the patches of frames >= 1. scores: [R, h, w] -> [R, h * w] long (ROLE_*):
    anchors are targets, the top ``frac`` of the others by score kept, the rest src."""
    R, h, w = scores.shape
    anchors = cell_anchors(scores).view(R, h * w)
    n_cells = -(-h // CELL) * -(-w // CELL)
    role = torch.where(anchors, ROLE_TARGET, ROLE_SRC)
    k = protected_count(h * w, n_cells, frac)
    if k > 0:
        ranked = scores.view(R, h * w).masked_fill(anchors, float("-inf"))
        top = ranked.topk(k, dim=1).indices
        role.scatter_(1, top, ROLE_KEPT)
    return role


def sequence_roles(scores: torch.Tensor, layout: AttentionLayout, p: LiteVGGTParams) -> torch.Tensor:
    """Role of every token. scores: [B, S, h, w] -> [B, N] long on the CPU."""
    B, S = scores.shape[:2]
    P, ps = layout.tokens_per_frame, layout.patch_start
    role = torch.empty(B, S, P, dtype=torch.long)
    role[:, :, :ps] = ROLE_TARGET if p.lv_special_targets else ROLE_KEPT
    role[:, 0, ps:] = ROLE_TARGET  # the reference frame
    rest = frame_roles(scores[:, 1:].flatten(0, 1), p.lv_protect_frac)
    role[:, 1:, ps:] = rest.view(B, S - 1, -1).cpu()
    return role.view(B, S * P)


def row_partition(role: torch.Tensor, ratio: float, device: torch.device) -> Partition:
    """One batch row's partition: one match set of all src against all targets. role: [N] (CPU)."""
    kept = (role == ROLE_KEPT).nonzero().view(-1)
    src = (role == ROLE_SRC).nonzero().view(1, -1)
    dst = (role == ROLE_TARGET).nonzero().view(1, -1)
    r = merged_count(ratio, src.shape[1])
    return static_partition(role.numel(), kept, [(src, dst, r)], device)


# -- steps 3 and 4: matching and its cache ----------------------------------------------------


@dataclass
class MergeCache:
    """What the layers of one forward share: the rows' partitions (from the geometry scores, fixed
    for the forward) and the slot map of the last recompute. One per built ``attention_fn``."""

    key: tuple = ()
    last_layer: int = -1
    parts: list[Partition] = field(default_factory=list)
    slots: SlotMap | None = None

    def new_forward(self, key: tuple, layer: int) -> bool:
        """A call starts a forward when nothing is cached, the shape changed or the layer index
        did not increase."""
        return self.slots is None or key != self.key or layer <= self.last_layer


def match(metric: torch.Tensor, parts: list[Partition], sample: bool) -> tuple[SlotMap, torch.Tensor]:
    """Assign every row against its partition. metric: [B, N, C] -> (SlotMap [B, 1, N], merged
    pairs' cosine similarities, a subsample)."""
    rows = [assign(rows_gather(metric[b:b + 1]), 1, part, sample) for b, part in enumerate(parts)]
    n_slots = {part.n_slots for part in parts}
    assert len(n_slots) == 1, "LiteVGGT: every batch row must keep the same number of slots"
    slot_of = torch.cat([a.slot_of for a in rows]).unsqueeze(1)
    return SlotMap(slot_of, n_slots.pop()), torch.cat([a.merged_scores for a in rows])


def merge_metric(k: torch.Tensor, layout: AttentionLayout, warned: list[bool]) -> torch.Tensor:
    """The layer's normed input [B, N, C]; the keys averaged over heads [B, N, d] without one."""
    if layout.x_norm is not None:
        return layout.x_norm
    if not warned[0]:
        warnings.warn("LiteVGGT: layout.x_norm is None; matching on the keys averaged over heads instead",
                      stacklevel=4)
        warned[0] = True
    return k.mean(dim=1)


def recompute(cache: MergeCache, metric: torch.Tensor, layout: AttentionLayout, p: LiteVGGTParams,
              new_forward: bool) -> None:
    """Refresh the cache at a recompute layer (and the roles too at a forward's first layer)."""
    rec = layout.recorder
    B, N, C = metric.shape
    flops = bytes_read = 0.0
    if new_forward:
        scores = geometry_scores(metric, layout, p)
        roles = sequence_roles(scores, layout, p)
        cache.parts = [row_partition(roles[b], p.lv_ratio, metric.device) for b in range(B)]
        patches = layout.frames * layout.patch_h * layout.patch_w
        proj_dim = p.lv_proj_dim if 0 < p.lv_proj_dim < C else 0
        flops += 2.0 * B * patches * C * proj_dim
        bytes_read += token_bytes(B, patches, C, elem_bytes(metric))
    cache.slots, merged_scores = match(metric, cache.parts, rec is not None)
    if rec is not None:
        rec.count("match_flops", flops + sum(part.match_flops(1, C) for part in cache.parts))
        rec.count("match_bytes", bytes_read + token_bytes(B, N, C, elem_bytes(metric)))
        if merged_scores.numel():
            rec.observe("merge_sim_p10", percentile(merged_scores, 0.1))


# -- one call -----------------------------------------------------------------------------------


def litevggt_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout,
                       p: LiteVGGTParams, cache: MergeCache, warned: list[bool]) -> torch.Tensor:
    """LiteVGGT-merged attention. q, k, v: [B, H, N, d] -> [B, H, N, d]."""
    B, H, N, d = q.shape
    check_tokens("LiteVGGT", q, layout)
    if layout.tokens_per_frame != layout.patch_start + layout.patch_h * layout.patch_w:
        raise ValueError(
            f"LiteVGGT: tokens_per_frame={layout.tokens_per_frame} != patch_start={layout.patch_start} "
            f"+ patch_h*patch_w={layout.patch_h}*{layout.patch_w}"
        )
    if layout.frames == 1:
        return sdpa_attention(q, k, v, layout)  # no frame besides the reference: nothing to merge
    rec = layout.recorder
    key = (B, N, layout.frames, layout.patch_h, layout.patch_w, layout.patch_start, q.device)
    new_forward = cache.new_forward(key, layout.layer)
    again = new_forward or layout.layer in p.lv_recompute_layers
    if again:
        metric = merge_metric(k, layout, warned)
        with phase(rec, "match"):
            recompute(cache, metric, layout, p, new_forward)
        if rec is not None and layout.x_norm is None:
            rec.count("metric_fallback", 1)
    cache.key, cache.last_layer = key, layout.layer
    if rec is not None:
        rec.count("index_recompute" if again else "index_reuse", 1)
    assert cache.slots is not None
    return shared_merge_attention(q, k, v, cache.slots, rec)


@register_method("litevggt", params=LiteVGGTParams, workloads=("vggt",),
                 doc="LiteVGGT-style geometry-aware merging, indices cached across layers (arXiv 2512.04939)")
def make_litevggt(p: LiteVGGTParams) -> AttentionFn:
    """Build LiteVGGT's ``attention_fn(q, k, v, layout) -> out`` (with its own index cache)."""
    cache = MergeCache()
    warned = [False]
    return lambda q, k, v, layout: litevggt_attention(q, k, v, layout, p, cache, warned)
