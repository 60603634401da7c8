"""Triton kernels for the token-merging primitives (GPU; on CPU only under ``TRITON_INTERPRET=1``).

Importing this module imports Triton; :mod:`harness.methods.kernels` decides whether to.

- :func:`best_match`: cosine similarity of every src row against its block's candidates and
  the row-wise maximum, fused. One program owns ``BLOCK_S`` src rows of one block and walks
  the candidates in tiles of ``BLOCK_C``: the similarity tile lives in registers only (it never
  goes to global memory), the candidate norms are computed in the same pass as the dot
  products, and a running (max, index) pair is kept per src row. Ties keep the lowest index
  (earlier tiles win ties, ``tl.argmax`` breaks ties to the left), as ``torch.max`` does.
- :func:`segment_mean`: the merge ``[B, H, N, d] -> [B, H, M, d]`` as one scatter-add kernel of
  rows (float32 atomics), then one division by the slot sizes; empty slots stay zero.

The unmerge is one ``index_select`` already (a single gather kernel), so it has no kernel here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_S = 32
"""src rows per program of :func:`best_match`."""
BLOCK_C = 32
"""candidates per tile of :func:`best_match`."""
BLOCK_N = 32
"""tokens per program of :func:`segment_mean`."""


@triton.jit
def _best_match_kernel(
    src_ptr, cand_ptr, score_ptr, index_ptr,
    ns, nc, D,
    s_r, s_s, s_d, c_r, c_c, c_d,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
):
    pid_s = tl.program_id(0)
    r = tl.program_id(1).to(tl.int64)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    mask_s = offs_s < ns
    src_base = src_ptr + r * s_r
    cand_base = cand_ptr + r * c_r
    best = tl.full([BLOCK_S], float("-inf"), tl.float32)
    best_i = tl.zeros([BLOCK_S], tl.int64)
    src_sq = tl.zeros([BLOCK_S], tl.float32)
    for c0 in range(0, nc, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < nc
        acc = tl.zeros([BLOCK_S, BLOCK_C], tl.float32)
        cand_sq = tl.zeros([BLOCK_C], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + offs_d
            mask_d = dd < D
            a = tl.load(src_base + offs_s[:, None] * s_s + dd[None, :] * s_d,
                        mask=mask_s[:, None] & mask_d[None, :], other=0.0)
            b = tl.load(cand_base + offs_c[:, None] * c_c + dd[None, :] * c_d,
                        mask=mask_c[:, None] & mask_d[None, :], other=0.0)
            if IEEE:
                acc += tl.dot(a, tl.trans(b), input_precision="ieee")
            else:
                acc += tl.dot(a, tl.trans(b))
            bf = b.to(tl.float32)
            cand_sq += tl.sum(bf * bf, axis=1)
            if c0 == 0:
                af = a.to(tl.float32)
                src_sq += tl.sum(af * af, axis=1)
        sim = acc / tl.maximum(tl.sqrt(cand_sq), 1e-12)[None, :]
        sim = tl.where(mask_c[None, :], sim, float("-inf"))
        tile_max, tile_arg = tl.max(sim, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = tile_max > best  # strictly: an earlier tile keeps a tie
        best = tl.where(better, tile_max, best)
        best_i = tl.where(better, tile_arg.to(tl.int64) + c0, best_i)
    score = best / tl.maximum(tl.sqrt(src_sq), 1e-12)
    tl.store(score_ptr + r * ns + offs_s, score, mask=mask_s)
    tl.store(index_ptr + r * ns + offs_s, best_i, mask=mask_s)


def best_match(src: torch.Tensor, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best candidate of every src row by cosine similarity, fused.

    src: [R, ns, D], cand: [R, nc, D] (nc >= 1, ns >= 1) -> (score [R, ns] in src's dtype,
    index [R, ns] long). fp32 inputs use IEEE fp32 dot products (no TF32), so the assignments
    equal the torch path's up to ties of nearly equal similarities.
    """
    R, ns, D = src.shape
    nc = cand.shape[1]
    score = torch.empty(R, ns, dtype=torch.float32, device=src.device)
    index = torch.empty(R, ns, dtype=torch.long, device=src.device)
    block_d = max(16, min(64, triton.next_power_of_2(D)))
    grid = (triton.cdiv(ns, BLOCK_S), R)
    _best_match_kernel[grid](
        src, cand, score, index, ns, nc, D,
        *src.stride(), *cand.stride(),
        BLOCK_S=BLOCK_S, BLOCK_C=BLOCK_C, BLOCK_D=block_d, IEEE=src.dtype == torch.float32,
    )
    return score.to(src.dtype), index


@triton.jit
def _segment_sum_kernel(
    x_ptr, slot_ptr, out_ptr,
    N, M, d, H, G,
    x_b, x_h, x_n, x_d,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    g = h // (H // G)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    slot = tl.load(slot_ptr + (b * G + g) * N + offs_n, mask=mask_n, other=0)
    for d0 in range(0, d, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask = mask_n[:, None] & (offs_d < d)[None, :]
        rows = tl.load(x_ptr + b * x_b + h * x_h + offs_n[:, None] * x_n + offs_d[None, :] * x_d,
                       mask=mask, other=0.0)
        dst = out_ptr + (bh * M + slot[:, None]) * d + offs_d[None, :]
        tl.atomic_add(dst, rows.to(tl.float32), mask=mask)


def segment_mean(x: torch.Tensor, slot_of: torch.Tensor, n_slots: int, counts: torch.Tensor) -> torch.Tensor:
    """Plain mean of the tokens of every slot. x: [B, H, N, d]; slot_of: [B, G, N] long (H a
    multiple of G); counts: [B, G, M] members per slot -> [B, H, M, d] in x's dtype (sums in
    float32; empty slots are zero)."""
    B, H, N, d = x.shape
    G, M = slot_of.shape[1], n_slots
    sums = torch.zeros(B, H, M, d, dtype=torch.float32, device=x.device)
    slots = slot_of.contiguous()
    grid = (triton.cdiv(N, BLOCK_N), B * H)
    _segment_sum_kernel[grid](
        x, slots, sums, N, M, d, H, G, *x.stride(),
        BLOCK_N=BLOCK_N, BLOCK_D=max(16, min(64, triton.next_power_of_2(d))),
    )
    inv = counts.clamp(min=1.0).reciprocal().to(torch.float32)  # [B, G, M]
    sums.view(B, G, H // G, M, d).mul_(inv[:, :, None, :, None])
    return sums.to(x.dtype)


__all__ = ["BLOCK_C", "BLOCK_N", "BLOCK_S", "best_match", "segment_mean"]
