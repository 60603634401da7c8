"""ToMe-style uniform token merging at VGGT's global-attention seam (Bolya et al., ICLR 2023).

Bipartite matching of alternating tokens on the head-averaged keys, the top-r most similar A
tokens merged into their B partner, one assignment shared by Q, K and V, optional proportional
attention, unmerge by copy. Steps and the deviations the seam forces: docs/methods/merging.md.
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
from harness.models.seam import AttentionFn, AttentionLayout, elem_bytes, token_bytes
from harness.params import param
from harness.registry import register_method


@dataclass(frozen=True)
class ToMeParams:
    """ToMe knobs (names are what suites sweep)."""

    tome_ratio: float = param(
        0.5, "fraction of the N tokens merged away (bipartite: at most the A half)", range=(0.0, 0.5)
    )
    prop_attn: bool = param(False, "proportional attention: add log(group size) of each key to the logits")
    protect_special: bool = param(True, "camera/register tokens pass through (never merged)")
    start_layer: int = param(0, "global layers with a smaller index use plain attention", range=(0, None))

    def seam_peak_bytes(self, shape: SeamShape) -> dict[str, float]:
        """Temporaries at the peak of one call, GPU path (Triton kernels): the keys averaged over
        heads ``[B, N, d]``; the assignment (slot map, best-match index, the gathered metric of the
        one A/B match set: the kernel stores no similarity); the merged q, k, v ``[B, H, M, d]``
        (float32 sums first, so v's merge makes a bf16 copy); SDPA on M tokens; the unmerge index
        (int64 ``[B * H * N]``); and the cached partition. The torch path (CPU, or
        ``HARNESS_MERGE_KERNELS=torch``) differs: chunked similarities instead of the fused kernel,
        and ``embedding_bag`` merges with a sort of the decisions instead of the scatter kernel."""
        s = shape
        if s.layer < self.start_layer:
            return plain_bytes(s)
        part = tome_partition(s.frames, s.tokens_per_frame, s.patch_start, self.tome_ratio,
                              self.protect_special)
        led = Ledger()
        led.alloc("cached: ToMe partition", cached_bytes(part))
        led.alloc("keys averaged over heads", s.batch * s.tokens * s.head_dim * s.qk_bytes)
        slot = assign_bytes(led, s, s.batch, partition_sets(part), s.head_dim, s.qk_bytes)
        out = shared_merge_bytes(led, s, SlotMapBytes(led, s, 1, part.n_slots, slot), self.prop_attn)
        return led.terms(out, output_bytes(s))


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
        rec.count("match_bytes", token_bytes(B, N, d, elem_bytes(metric)))  # reads the metric once
        if a.merged_scores.numel():
            rec.observe("merge_sim_p10", percentile(a.merged_scores, 0.1))
    return out


@register_method("tome", params=ToMeParams, workloads=("vggt",),
                 doc="ToMe-style bipartite merging, uniform across heads")
def make_tome(p: ToMeParams) -> AttentionFn:
    """Build ToMe's ``attention_fn(q, k, v, layout) -> out``."""

    return from_layer(p.start_layer, lambda q, k, v, layout: tome_attention(q, k, v, layout, p))
