"""FastVGGT-style token merging at VGGT's global-attention seam (arXiv 2509.02560).

A clean re-implementation of ``mystorm16/FastVGGT`` (ToMeSD's random 2-D dst split plus the
whole first frame as targets, matching on the layer's normed input, salient tokens protected,
one assignment shared by Q, K, V). Steps and every deviation from upstream's code (its quirks):
docs/methods/merging.md.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch

from harness.methods.merging import (
    Partition,
    SlotMap,
    assign,
    from_layer,
    percentile,
    phase,
    rows_gather,
    shared_merge_attention,
    static_partition,
)
from harness.metrics.memory_model import (
    Ledger,
    SeamShape,
    SlotMapBytes,
    assign_bytes,
    cached_bytes,
    output_bytes,
    partition_sets,
    plain_bytes,
    shared_merge_bytes,
)
from harness.models.seam import AttentionFn, AttentionLayout, elem_bytes, sdpa_attention, token_bytes
from harness.params import param
from harness.registry import register_method

SALIENT_RULES = ("stride", "dissimilar")


@dataclass(frozen=True)
class FastVGGTParams:
    """FastVGGT knobs (names are what suites sweep). Defaults: upstream's configuration."""

    fv_ratio: float = param(
        1.0, "fraction of the unprotected src tokens merged (1.0 = upstream's 'all src')", range=(0.0, 1.0)
    )
    salient_frac: float = param(0.1, "share of tokens protected as salient (never merged)", range=(0.0, 1.0))
    salient_rule: str = param(
        "stride", "salient tokens: upstream's fixed stride, or the least similar src", choices=SALIENT_RULES
    )
    special_targets: bool = param(
        False, "camera/register tokens may absorb merges (upstream quirk); False: pass-through"
    )
    merge_seed: int = param(33, "seed of the random dst cell pattern (upstream: 33)", range=(0, None))
    start_layer: int = param(0, "global layers with a smaller index use plain attention", range=(0, None))

    def seam_peak_bytes(self, shape: SeamShape, dense_similarity: bool = False) -> dict[str, float]:
        """Temporaries at the peak of one call, GPU path (Triton kernels): the assignment on the
        layer's normed input (x_norm ``[B, N, C]``, float32 under autocast, already alive): slot map,
        best-match index, the gathered ``[cand | src]`` metric of the one match set (``nc + ns``
        tokens of C channels: the largest term), the kernel's score and index (no similarity is
        stored); the merged q, k, v ``[B, H, M, d]``; SDPA on M tokens; the unmerge index; the cached
        partition. ``dense_similarity``: the src x dst similarity in one matrix instead (torch path
        without chunking, upstream FastVGGT's one matmul): ``[ns, nc]`` in the matmul's dtype. The
        torch path as it is chunks that matrix (``SIM_CHUNK_ELEMS``) and merges with
        ``embedding_bag``."""
        s = shape
        if s.layer < self.start_layer or s.frames == 1:
            return plain_bytes(s)
        part, _ = fastvggt_partition(s.frames, s.patch_h, s.patch_w, s.patch_start, self)
        led = Ledger()
        led.alloc("cached: FastVGGT partition", cached_bytes(part))
        slot = assign_bytes(led, s, s.batch, partition_sets(part), s.heads * s.head_dim, s.norm_bytes,
                            dense=dense_similarity)
        out = shared_merge_bytes(led, s, SlotMapBytes(led, s, 1, part.n_slots, slot))
        return led.terms(out, output_bytes(s))


def cell_dst_mask(frames: int, patch_h: int, patch_w: int, seed: int) -> torch.Tensor:
    """[frames, patch_h, patch_w] bool: one random dst per 2 x 2 cell in true 2-D coordinates.

    Cells start at even (row, col); an odd last row / column gives 1 x 2, 2 x 1 or 1 x 1 cells,
    each also with exactly one dst. Independent draw per frame and cell from ``seed``.
    """
    ch, cw = (patch_h + 1) // 2, (patch_w + 1) // 2
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(frames, ch, cw, 2, generator=gen)
    cell_h = (patch_h - 2 * torch.arange(ch)).clamp(max=2).view(1, ch, 1)
    cell_w = (patch_w - 2 * torch.arange(cw)).clamp(max=2).view(1, 1, cw)
    dy = (u[..., 0] * cell_h).long()
    dx = (u[..., 1] * cell_w).long()
    rows = 2 * torch.arange(ch).view(1, ch, 1) + dy
    cols = 2 * torch.arange(cw).view(1, 1, cw) + dx
    mask = torch.zeros(frames, patch_h, patch_w, dtype=torch.bool)
    f = torch.arange(frames).view(frames, 1, 1).expand(frames, ch, cw)
    mask[f, rows.expand(frames, ch, cw), cols.expand(frames, ch, cw)] = True
    return mask


def fastvggt_partition(
    frames: int, patch_h: int, patch_w: int, patch_start: int, p: FastVGGTParams,
    device: torch.device | str = "cpu",
) -> tuple[Partition, int]:
    """Static roles for S frames (cached). Returns (partition, number of salient src)."""
    return _fastvggt_partition(
        frames, patch_h, patch_w, patch_start, p.fv_ratio, p.salient_frac, p.salient_rule,
        p.special_targets, p.merge_seed, str(device),
    )


@functools.lru_cache(maxsize=64)
def _fastvggt_partition(
    S: int, h: int, w: int, ps: int, ratio: float, salient_frac: float, rule: str,
    special_targets: bool, seed: int, device: str,
) -> tuple[Partition, int]:
    P = ps + h * w
    N = S * P
    role = torch.zeros(S, P, dtype=torch.long)  # 0 src, 1 target, 2 kept
    role[0] = 1
    role[:, :ps] = 1 if special_targets else 2
    role[1:, ps:] = cell_dst_mask(S - 1, h, w, seed).view(S - 1, h * w).long()
    role = role.view(-1)
    n_salient = int(salient_frac * N)
    if rule == "stride" and n_salient > 0:
        strided = torch.arange(0, N, N // n_salient)[:n_salient]
        strided = strided[role[strided] == 0]
        role[strided] = 2  # salient src keep their own slot; salient targets/kept stay as they are
    src = (role == 0).nonzero().view(1, -1)
    dst = (role == 1).nonzero().view(1, -1)
    kept = (role == 2).nonzero().view(-1)
    n_prot = int(round(salient_frac * src.numel())) if rule == "dissimilar" else 0
    r = int(ratio * (src.numel() - n_prot))
    return static_partition(N, kept, [(src, dst, r)], device), n_prot


def fastvggt_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout, p: FastVGGTParams,
    warn_fallback: list[bool] | None = None,
) -> torch.Tensor:
    """FastVGGT-merged attention. q, k, v: [B, H, N, d] -> [B, H, N, d]."""
    B, H, N, d = q.shape
    if layout.num_tokens != N:
        raise ValueError(f"FastVGGT: layout has {layout.num_tokens} tokens but q has N={N}")
    if layout.tokens_per_frame != layout.patch_start + layout.patch_h * layout.patch_w:
        raise ValueError(
            f"FastVGGT: tokens_per_frame={layout.tokens_per_frame} != patch_start={layout.patch_start} "
            f"+ patch_h*patch_w={layout.patch_h}*{layout.patch_w}"
        )
    if layout.frames == 1:
        return sdpa_attention(q, k, v, layout)
    rec = layout.recorder
    part, _ = fastvggt_partition(
        layout.frames, layout.patch_h, layout.patch_w, layout.patch_start, p, q.device
    )
    with phase(rec, "match"):
        if layout.x_norm is not None:
            metric = layout.x_norm
        else:
            if warn_fallback is not None and not warn_fallback[0]:
                warnings.warn(
                    "FastVGGT: layout.x_norm is None; matching on the keys averaged over heads instead",
                    stacklevel=4,  # fastvggt_attention <- make_fastvggt's lambda <- from_layer <- caller
                )
                warn_fallback[0] = True
            metric = k.mean(dim=1)
        a = assign(rows_gather(metric), B, part, rec is not None)
    sm = SlotMap(a.slot_of.view(B, 1, N), part.n_slots)
    out = shared_merge_attention(q, k, v, sm, rec)
    if rec is not None:
        rec.count("match_flops", part.match_flops(B, metric.shape[-1]))
        rec.count("match_bytes", token_bytes(B, N, metric.shape[-1], elem_bytes(metric)))
        if layout.x_norm is None:
            rec.count("metric_fallback", 1)
        if a.merged_scores.numel():
            rec.observe("merge_sim_p10", percentile(a.merged_scores, 0.1))
    return out


@register_method("fastvggt", params=FastVGGTParams, workloads=("vggt",),
                 doc="FastVGGT-style merging (ToMeSD 2x2 random dst, frame 0 kept)")
def make_fastvggt(p: FastVGGTParams) -> AttentionFn:
    """Build FastVGGT's ``attention_fn(q, k, v, layout) -> out``."""
    warned = [False]

    return from_layer(p.start_layer, lambda q, k, v, layout: fastvggt_attention(q, k, v, layout, p, warned))
