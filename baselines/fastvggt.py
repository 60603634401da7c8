"""FastVGGT-style token merging at VGGT's global-attention seam (arXiv 2509.02560).

A clean re-implementation of ``mystorm16/FastVGGT`` ``merging/merge.py`` +
``vggt/layers/attention.py`` (ToMeSD's random 2-D split plus a reference frame). One call
(q, k, v: [B, H, N, d] -> out [B, H, N, d]):

1. Roles (data-independent, cached per shape and seed):
   - targets (dst, never merged away): every token of frame 0 (the reference frame) and, in
     frames >= 1, one random patch per 2 x 2 cell of the patch grid (ToMeSD), drawn with a
     generator seeded ``merge_seed`` (33 upstream), independently per frame and cell;
   - kept (pass-through): the camera/register tokens of every frame;
   - salient (protected, own slot): ``salient_frac`` of the tokens, see ``salient_rule``;
   - src: the remaining patches of frames >= 1.
2. Metric: ``layout.x_norm`` (the block's normed input, [B, N, C]) as upstream; when the
   caller passes None, the keys averaged over heads ([B, N, d]) are used instead and a
   warning says so once per factory.
3. Every src finds its most similar target over ALL targets of all frames (global matching,
   in chunks of src rows, never an N x N matrix); the top r src by score merge,
   r = floor(fv_ratio * (#src - #salient)). fv_ratio = 1 is upstream's effective "merge
   every unprotected src" (its r = 0.9 N exceeds the src count).
4. ONE assignment shared by Q, K, V; plain mean (no size tracking, no proportional
   attention, as upstream); SDPA on the merged tokens; unmerge by copy.

Deviations from upstream's code (quirks a clean implementation should not copy):
- S == 1 skips merging (upstream crashes: no src tokens) -- quirk 1.
- B > 1: decisions per batch row (upstream uses row 0's protection for all) -- quirk 2.
- The 2 x 2 cells sit in true 2-D coordinates; an odd last row / column forms 1 x 2, 2 x 1
  or 1 x 1 cells, each with one random dst. Upstream writes its 28 x 36 pattern contiguously
  into the 28 x 37 raster, so the pattern shears by one token per row: the last column does
  get dst tokens, but the last 28 tokens of each frame in raster order are always src -- quirk 3.
- ``merge_seed`` seeds this project's CPU generator; upstream draws with ``torch.randint`` on a
  generator seeded 33 on the GPU on every call, so ``merge_seed=33`` does NOT reproduce
  upstream's dst pattern (only its role: one fixed pattern for every layer and forward).
- Similarities are computed in the dtype of the metric (float32 in the CPU suites); upstream
  casts the whole model to bf16 and so matches in bf16, where near-ties can resolve differently.
- Salient tokens are never duplicated: a salient token that is already a target or kept
  stays where it is; only salient src become singletons (upstream appends every protected
  token a second time, doubling its key's weight) -- quirk 4. ``salient_rule="stride"`` uses
  upstream's fixed stride over the whole sequence (every (N // int(salient_frac N))-th token);
  ``"dissimilar"`` protects the ``salient_frac`` share of src with the LOWEST best-match
  similarity (a data score: the tokens merging would distort most).
- Special tokens never absorb merges (``special_targets=False``, default); True reproduces
  upstream, where every frame's camera/register tokens (and frame 0's) are targets -- quirk 5.
- The patch grid comes from the layout (quirk 6); the dst pattern is drawn per frame.
- The merge happens before SDPA and the unmerge right after it (upstream unmerges after the
  output projection; the projection is linear per token, so a copy before or after it is the
  same).
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
from harness.models.seam import AttentionFn, AttentionLayout, sdpa_attention
from harness.params import param

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
                    stacklevel=3,
                )
                warn_fallback[0] = True
            metric = k.mean(dim=1)
        a = assign(rows_gather(metric), B, part, rec is not None)
    sm = SlotMap(a.slot_of.view(B, 1, N), part.n_slots)
    out = shared_merge_attention(q, k, v, sm, rec)
    if rec is not None:
        rec.count("match_flops", part.match_flops(B, metric.shape[-1]))
        if layout.x_norm is None:
            rec.count("metric_fallback", 1)
        if a.merged_scores.numel():
            rec.observe("merge_sim_p10", percentile(a.merged_scores, 0.1))
    return out


def make_fastvggt(p: FastVGGTParams) -> AttentionFn:
    """Build FastVGGT's ``attention_fn(q, k, v, layout) -> out``."""
    if p.salient_rule not in SALIENT_RULES:
        raise ValueError(f"FastVGGT salient_rule={p.salient_rule!r} is not one of {', '.join(SALIENT_RULES)}")
    warned = [False]

    return from_layer(p.start_layer, lambda q, k, v, layout: fastvggt_attention(q, k, v, layout, p, warned))
