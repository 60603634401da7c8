"""Plain VGGT: full scaled-dot-product attention in every global layer (the reference method)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.models.seam import AttentionFn, sdpa_attention
from harness.registry import register_method


@dataclass(frozen=True)
class PlainParams:
    """Plain VGGT: full scaled-dot-product attention (the reference)."""


@register_method("vggt", params=PlainParams, workloads=("vggt",), doc="plain VGGT (full SDPA)")
def make_plain(_: PlainParams) -> AttentionFn:
    """The seam's own SDPA: what every merging method is compared against."""
    return sdpa_attention
