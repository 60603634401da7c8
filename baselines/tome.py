"""ToMe-style uniform token merging at VGGT's global-attention seam (Bolya et al., ICLR 2023).

One call (q, k, v: [B, H, N, d] -> out [B, H, N, d]):
1. Metric: the keys averaged over heads, [B, N, d]; cosine similarity.
2. Alternating bipartite split over the whole sequence: A = even positions, B = odd
   positions. With ``protect_special`` the camera/register tokens of every frame are in
   neither set: they pass through (never merged away, never absorb others).
3. Every A token finds its most similar B token; the top r A tokens by that score merge
   into their B token, r = floor(tome_ratio * N) capped at |A| (ToMe's cap of 50 %).
4. ONE assignment, shared by Q, K and V: plain mean per merged token; optional
   proportional attention (``prop_attn``: log of each key's group size added to the logits,
   which makes merging exact duplicates lossless).
5. Unmerge by copy: each token receives its merged token's output row.

Deviations from ToMe (tome/merge.py), all forced by the seam:
- ToMe merges the hidden state once per block and the shorter sequence persists; here every
  global layer merges q, k, v afresh from the full sequence and unmerges after attention
  (ToMeSD-style), so token sizes always start at 1. ToMe's size-weighted average therefore
  equals the plain mean, and there is no ``size_weighted`` knob; sizes matter only through
  ``prop_attn``.
- The similarity is computed in chunks of A rows (never an N x N matrix).
- Special tokens are protected by exclusion rather than ToMe's -inf class-token row.
"""

from __future__ import annotations

import functools
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
from harness.models.seam import AttentionFn, AttentionLayout
from harness.params import param


@dataclass(frozen=True)
class ToMeParams:
    """ToMe knobs (names are what suites sweep)."""

    tome_ratio: float = param(
        0.5, "fraction of the N tokens merged away (bipartite: at most the A half)", range=(0.0, 0.5)
    )
    prop_attn: bool = param(False, "proportional attention: add log(group size) of each key to the logits")
    protect_special: bool = param(True, "camera/register tokens pass through (never merged)")
    start_layer: int = param(0, "global layers with a smaller index use plain attention", range=(0, None))


def tome_partition(
    frames: int, tokens_per_frame: int, patch_start: int, ratio: float, protect_special: bool,
    device: torch.device | str = "cpu",
) -> Partition:
    """Static alternating A/B split for S frames of P tokens (cached)."""
    return _tome_partition(frames, tokens_per_frame, patch_start, ratio, protect_special, str(device))


@functools.lru_cache(maxsize=64)
def _tome_partition(S: int, P: int, patch_start: int, ratio: float, protect: bool, device: str) -> Partition:
    N = S * P
    pos = torch.arange(N)
    special = (pos % P < patch_start) if protect else torch.zeros(N, dtype=torch.bool)
    a = pos[(pos % 2 == 0) & ~special]
    b = pos[(pos % 2 == 1) & ~special]
    r = min(int(ratio * N), a.numel()) if b.numel() else 0
    return static_partition(N, pos[special], [(a.view(1, -1), b.view(1, -1), r)], device)


def tome_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout, p: ToMeParams
) -> torch.Tensor:
    """ToMe-merged attention. q, k, v: [B, H, N, d] -> [B, H, N, d]."""
    B, H, N, d = q.shape
    if layout.num_tokens != N:
        raise ValueError(f"ToMe: layout has {layout.num_tokens} tokens but q has N={N}")
    rec = layout.recorder
    part = tome_partition(
        layout.frames, layout.tokens_per_frame, layout.patch_start, p.tome_ratio, p.protect_special, q.device
    )
    with phase(rec, "match"):
        metric = k.mean(dim=1)  # [B, N, d]
        a = assign(rows_gather(metric), B, part, rec is not None)
    sm = SlotMap(a.slot_of.view(B, 1, N), part.n_slots)
    out = shared_merge_attention(q, k, v, sm, rec, prop_attn=p.prop_attn)
    if rec is not None:
        rec.count("match_flops", part.match_flops(B, d))
        if a.merged_scores.numel():
            rec.observe("merge_sim_p10", percentile(a.merged_scores, 0.1))
    return out


def make_tome(p: ToMeParams) -> AttentionFn:
    """Build ToMe's ``attention_fn(q, k, v, layout) -> out``."""

    return from_layer(p.start_layer, lambda q, k, v, layout: tome_attention(q, k, v, layout, p))
