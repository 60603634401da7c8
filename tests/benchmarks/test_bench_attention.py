"""Micro-benchmark: one attention call, ``F.scaled_dot_product_attention`` vs explicit softmax.

q, k, v: [B, H, N, d] random, B = 1. Two sizes per device: CPU float32 at N = 256 and 1024
(H = 4, d = 64); CUDA bfloat16 at N = 4096 and 16384 (H = 16, d = 64). ``extra_info``
records the shape, dtype, device and FLOPs so a saved JSON is self-describing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from harness.models.seam import attention_flops, sdpa_attention
from harness.workloads.attention import math_attention

IMPLS: dict[str, Callable[..., torch.Tensor]] = {"sdpa": sdpa_attention, "math": math_attention}
# (heads, seq_len, head_dim) for the "small" and "large" case on each device
SIZES = {
    "cpu": {"small": (4, 256, 64), "large": (4, 1024, 64)},
    "cuda": {"small": (16, 4096, 64), "large": (16, 16384, 64)},
}
DTYPES = {"cpu": torch.float32, "cuda": torch.bfloat16}


def _inputs(device: str, heads: int, seq_len: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    """q, k, v: [1, heads, seq_len, head_dim], seeded, in the device's benchmark dtype."""
    gen = torch.Generator().manual_seed(0)
    shape = (1, heads, seq_len, head_dim)
    return tuple(torch.randn(shape, generator=gen).to(device=device, dtype=DTYPES[device]) for _ in range(3))


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("impl", list(IMPLS))
def test_attention(benchmark, device: str, impl: str, size: str) -> None:
    heads, seq_len, head_dim = SIZES[device][size]
    q, k, v = _inputs(device, heads, seq_len, head_dim)
    fn = IMPLS[impl]
    benchmark.group = f"attention {size}"
    benchmark.extra_info.update({
        "impl": impl, "device": device, "dtype": str(DTYPES[device]).removeprefix("torch."),
        "shape_bhnd": [1, heads, seq_len, head_dim],
        "flops": attention_flops(1, heads, seq_len, seq_len, head_dim),
        "torch_threads": torch.get_num_threads(),
    })
    with torch.no_grad():
        out = benchmark(fn, q, k, v)
    assert out.shape == q.shape
    assert bool(torch.isfinite(out).all())
