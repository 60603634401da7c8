"""Plain VGGT: full scaled-dot-product attention in every global layer (the reference method)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.metrics.memory_model import SeamShape, plain_bytes
from harness.models.seam import AttentionFn, sdpa_attention
from harness.registry import register_method


@dataclass(frozen=True)
class PlainParams:
    """Plain VGGT: full scaled-dot-product attention (the reference)."""

    def seam_peak_bytes(self, shape: SeamShape) -> dict[str, float]:
        """Temporaries of one call beyond q, k, v and the output: SDPA picks a fused kernel (flash /
        memory-efficient, on CPU and CUDA alike), so no N x N matrix; only its float32 logsumexp
        ``[B, H, N]`` and, under autocast, bf16 copies of the float32 q and k
        (:func:`harness.metrics.memory_model.plain_bytes`)."""
        return plain_bytes(shape)


@register_method("vggt", params=PlainParams, workloads=("vggt",), doc="plain VGGT (full SDPA)")
def make_plain(_: PlainParams) -> AttentionFn:
    """The seam's own SDPA: what every merging method is compared against."""
    return sdpa_attention
