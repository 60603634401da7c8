"""Micro-benchmark: the merging primitives, torch path against the Triton kernels.

- best match: cosine similarity + row-wise maximum of one HTTM K/V match set at the VGGT-1B
  layer shape (8 frames on CPU, 100 on CUDA; 16 head groups of 64, blocks of 1024 tokens with
  307 candidates and 717 src each);
- segment mean: the merge of a [1, 16, N, 64] tensor into 0.3 N slots.

The Triton cases run on CUDA only (on CPU Triton is its interpreter, which says nothing about
speed); their skip says so. ``extra_info`` records shapes and the path.
"""

from __future__ import annotations

import pytest
import torch

from harness.methods import kernels
from harness.methods.merging import SlotMap, best_match

FRAMES = {"cpu": 8, "cuda": 100}
DTYPES = {"cpu": torch.float32, "cuda": torch.bfloat16}
TOKENS_PER_FRAME, BLOCK, CAND, HEADS, HEAD_DIM = 1041, 1024, 307, 16, 64


def _path(monkeypatch: pytest.MonkeyPatch, device: str, path: str) -> None:
    if path == "triton" and (device != "cuda" or not kernels.triton_importable()):
        pytest.skip("the Triton kernels are timed on CUDA only (on CPU Triton runs its interpreter)")
    monkeypatch.setenv(kernels.ENV_VAR, path)


@pytest.mark.parametrize("path", ["torch", "triton"])
def test_best_match(benchmark, monkeypatch, device: str, path: str) -> None:
    _path(monkeypatch, device, path)
    blocks = FRAMES[device] * TOKENS_PER_FRAME // BLOCK
    g = torch.Generator().manual_seed(0)
    src = torch.randn(HEADS * blocks, BLOCK - CAND, HEAD_DIM, generator=g).to(device, DTYPES[device])
    cand = torch.randn(HEADS * blocks, CAND, HEAD_DIM, generator=g).to(device, DTYPES[device])
    benchmark.group = "best match"
    benchmark.extra_info.update(path=path, rows=src.shape[0], ns=src.shape[1], nc=CAND, dim=HEAD_DIM,
                                dtype=str(src.dtype))
    score, index = benchmark(best_match, src, cand, False)
    assert score is None and index.shape == src.shape[:2]


@pytest.mark.parametrize("path", ["torch", "triton"])
def test_segment_mean(benchmark, monkeypatch, device: str, path: str) -> None:
    _path(monkeypatch, device, path)
    N = FRAMES[device] * TOKENS_PER_FRAME
    M = int(0.3 * N)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, HEADS, N, HEAD_DIM, generator=g).to(device, DTYPES[device])
    slot_of = torch.randint(0, M, (1, HEADS, N), generator=g).to(device)
    benchmark.group = "segment mean"
    benchmark.extra_info.update(path=path, tokens=N, slots=M, heads=HEADS, dtype=str(x.dtype))

    def merge() -> torch.Tensor:
        return SlotMap(slot_of, M).merge(x)  # a fresh map: the torch path's sort is part of the cost

    out = benchmark(merge)
    assert out.shape == (1, HEADS, M, HEAD_DIM)
