"""AVGGT-style global attention (Sun et al., "AVGGT: Rethinking Global Attention for Accelerating
VGGT", arXiv 2512.02541, CVPR 2026), at VGGT's global-attention seam. Written from the paper's
description (no public code).

Two steps, both training-free:

1. **Early global layers become frame attention**: a global layer with index below
   ``frame_layers`` attends within each frame only (its q, k, v as VGGT computed them).
2. **K/V subsampling in the other global layers**: each query frame attends to
   - its own frame in full (the "diagonal", ``keep_diagonal``),
   - every frame's special tokens (camera and registers) in full,
   - the patch tokens of the other frames on a grid: rows and columns of the patch grid that are
     multiples of ``kv_stride`` (1 / kv_stride^2 of them),
   - with ``mean_fill``, one extra key / value per other frame: the mean of that frame's patch
     keys / values the grid dropped, so what was dropped still contributes.

Choices the paper leaves open (or that its text available here does not fix), made here:
the count of converted layers is a knob (``frame_layers``, default 2: the trained proxy and the
tiny presets have 4 global layers, VGGT-1B 24); the grid starts at patch row / column 0; the
mean-fill token is a plain mean without a log-count logit bias; queries are never subsampled
(every token gets its output, so nothing needs unmerging).

Shapes: q, k, v ``[B, H, N, d]`` with N = S * P (frames times tokens per frame) -> ``[B, H, N, d]``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.methods.merging import phase
from harness.metrics.memory_model import INT64, Ledger, SeamShape, chunks, output_bytes, sdpa_bytes
from harness.models.seam import AttentionFn, AttentionLayout, attention_bytes, attention_flops, check_tokens
from harness.params import param
from harness.registry import register_method

KEY_CHUNK_ELEMS = 1 << 26  # keys materialized at once (elements of the per-frame key sets)


@dataclass(frozen=True)
class AVGGTParams:
    """AVGGT knobs (names are what suites sweep)."""

    frame_layers: int = param(2, "global layers with a smaller index run frame attention", range=(0, None))
    kv_stride: int = param(2, "grid stride of the other frames' patch keys/values (1: keep all)",
                           range=(1, 64))
    keep_diagonal: bool = param(True, "each query frame keeps its own frame's keys in full")
    mean_fill: bool = param(True, "one mean key/value per other frame for its dropped patch tokens")

    def seam_peak_bytes(self, shape: SeamShape) -> dict[str, float]:
        """Temporaries at the peak of one call (the same code runs on CPU and GPU). With B = 1,
        regrouping by frame (``frames_as_batch`` / ``frames_back``) is a view, and SDPA's output keeps
        its query's layout, so frame-attention layers need only SDPA's own output and logsumexp (and
        autocast's bf16 copies of q and k). Other layers: the grid-subsampled keys / values of every
        frame ``[B, H, S, Pk, d]`` (the dropped ones gathered once for the mean fill), an output in
        the attention's dtype (bf16 under autocast) made after the first chunk's SDPA and filled
        chunk by chunk, and per chunk of query frames
        (``KEY_CHUNK_ELEMS``) the concatenated key / value sets, the chunk's queries, the mask and
        SDPA. With B > 1 the regroupings are copies (counted)."""
        s = shape
        B, H, S, P, d = s.batch, s.heads, s.frames, s.tokens_per_frame, s.head_dim
        qb, e, N = s.qk_bytes, s.elem_bytes, s.tokens
        led = Ledger()
        copies = B > 1
        if s.layer < self.frame_layers:
            regrouped = [led.alloc(f"{n} regrouped by frame", s.head_tensor(N, elem)) for n, elem in
                         (("q", qb), ("k", qb), ("v", e)) if copies]
            out = sdpa_bytes(led, s, B * S * H, P, P, qb, qb, e)
            led.free(*regrouped)
            if copies:
                out, o = led.alloc("attention output", s.head_tensor(N, s.cast(qb))), out
                led.free(o)
            return led.terms(out, output_bytes(s))
        kept, dropped = grid_split(P, s.patch_start, s.patch_h, s.patch_w, self.kv_stride, "cpu")
        led.alloc("cached: grid split", (kept.numel() + dropped.numel()) * INT64)
        fill = self.mean_fill and dropped.numel() > 0
        Pk = kept.numel() + (1 if fill else 0)
        subs = [led.alloc(f"subsampled {n}", s.head_tensor(S * kept.numel(), elem))
                for n, elem in (("k", qb), ("v", e))]
        for name, elem, sub in (("k", qb, subs[0]), ("v", e, subs[1])):
            led.bind(name, sub)
            if fill:
                gathered = led.alloc(f"dropped {name} (for the mean)",
                                     s.head_tensor(S * dropped.numel(), elem))
                mean = led.alloc(f"subsampled {name}", s.head_tensor(S, elem))
                led.free(gathered)
                led.bind(name, led.alloc(f"subsampled {name}", s.head_tensor(S * Pk, elem)))
                led.free(mean)
        L = (P if self.keep_diagonal else 0) + S * Pk
        q_b = led.alloc("q regrouped by frame", s.head_tensor(N, qb)) if copies else None
        out = None  # made at the first chunk, in the attention's dtype
        block_of = led.alloc("key frame index", S * Pk * INT64)
        led.free(led.alloc("key frame index", S * Pk * INT64))
        chunk = max(1, KEY_CHUNK_ELEMS // max(1, B * H * L * d))
        for _, c in chunks(S, chunk):
            led.unbind("k_c", "v_c")  # rebound to views of the subsampled keys first
            led.bind("frames", led.alloc("query frame numbers", c * INT64))
            if self.keep_diagonal:
                led.bind("allow", led.alloc("key mask", c * S * Pk))
                led.bind("k_c", led.alloc("key set per query frame", B * c * H * L * d * qb))
                led.bind("v_c", led.alloc("value set per query frame", B * c * H * L * d * e))
                ones = led.alloc("key mask", c * P)
                led.bind("allow", led.alloc("key mask", c * L))
                led.free(ones)
            led.bind("rows", led.alloc("query frame numbers", B * c * INT64))
            q_c = led.alloc("query frames", B * c * H * P * d * qb)
            expanded = [] if self.keep_diagonal or not copies else [
                led.alloc("key set per query frame", B * c * H * L * d * el) for el in (qb, e)]
            mask = B * c * L if self.keep_diagonal else 0
            o = sdpa_bytes(led, s, B * c * H, P, L, qb, qb, e, mask_elems=mask)
            led.free(q_c, *expanded)
            if out is None:
                out = led.alloc("attention output", s.head_tensor(N, s.cast(qb)))
            led.free(o)
        led.unbind("allow", "k_c", "v_c", "frames", "rows")
        if copies:
            out, out_b = led.alloc("attention output", s.head_tensor(N, s.cast(qb))), out
            led.free(out_b)
        led.free(q_b, block_of)
        return led.terms(out, output_bytes(s))


def frames_as_batch(t: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, H, S*P, d] -> [B*S, H, P, d] (4-D: torch's fused CPU attention takes 4-D inputs only;
    5-D inputs fall back to the math path, about 4x slower)."""
    B, H, N, d = t.shape
    return t.view(B, H, frames, N // frames, d).transpose(1, 2).reshape(B * frames, H, N // frames, d)


def frames_back(t: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*S, H, P, d] -> [B, H, S*P, d]."""
    BS, H, P, d = t.shape
    return t.view(batch, BS // batch, H, P, d).transpose(1, 2).reshape(batch, H, BS // batch * P, d)


def frame_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: int) -> torch.Tensor:
    """Attention within each frame. q, k, v: [B, H, S*P, d] -> [B, H, S*P, d]."""
    out = F.scaled_dot_product_attention(*(frames_as_batch(t, frames) for t in (q, k, v)))
    return frames_back(out, q.shape[0])


@functools.lru_cache(maxsize=64)
def grid_split(tokens_per_frame: int, patch_start: int, patch_h: int, patch_w: int, stride: int,
               device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, dropped) token indices within a frame: special tokens and grid patches are kept."""
    pos = torch.arange(tokens_per_frame)
    patch = pos - patch_start
    row, col = patch // patch_w, patch % patch_w
    keep = (pos < patch_start) | ((row % stride == 0) & (col % stride == 0))
    return pos[keep].to(device), pos[~keep].to(device)


def subsampled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout,
                         p: AVGGTParams) -> torch.Tensor:
    """Step 2 on one global layer. q, k, v: [B, H, N, d] -> [B, H, N, d]."""
    B, H, N, d = q.shape
    S, P = layout.frames, layout.tokens_per_frame
    rec = layout.recorder
    kept, dropped = grid_split(P, layout.patch_start, layout.patch_h, layout.patch_w, p.kv_stride,
                               str(q.device))
    kf, vf = k.view(B, H, S, P, d), v.view(B, H, S, P, d)
    fill = p.mean_fill and dropped.numel() > 0
    with phase(rec, "aggregate"):
        k_sub, v_sub = kf.index_select(3, kept), vf.index_select(3, kept)  # [B, H, S, Pk, d]
        if fill:
            k_sub = torch.cat([k_sub, kf.index_select(3, dropped).mean(3, keepdim=True)], dim=3)
            v_sub = torch.cat([v_sub, vf.index_select(3, dropped).mean(3, keepdim=True)], dim=3)
        Pk = k_sub.shape[3]  # keys per other frame (grid + fill)
        k_all, v_all = k_sub.reshape(B, H, S * Pk, d), v_sub.reshape(B, H, S * Pk, d)
    own = P if p.keep_diagonal else 0
    L = own + S * Pk
    q_b = frames_as_batch(q, S)  # [B*S, H, P, d], row b * S + f
    out: torch.Tensor | None = None  # made at the first chunk, in the attention's dtype
    chunk = max(1, KEY_CHUNK_ELEMS // max(1, B * H * L * d))
    block_of = torch.arange(S * Pk, device=q.device) // Pk  # [S*Pk] frame of each subsampled key
    with phase(rec, "attention"):
        for f0 in range(0, S, chunk):
            c = min(chunk, S - f0)
            frames = torch.arange(f0, f0 + c, device=q.device)
            # key set of query frame f: its own frame in full, then every frame's subsampled keys
            # with frame f's own block masked out when the diagonal is kept in full
            k_c = k_all.unsqueeze(1).expand(B, c, H, S * Pk, d)  # [B, c, H, S*Pk, d]
            v_c = v_all.unsqueeze(1).expand(B, c, H, S * Pk, d)
            if p.keep_diagonal:
                allow = block_of.unsqueeze(0) != frames.unsqueeze(1)  # [c, S*Pk]
                k_c = torch.cat([kf[:, :, f0:f0 + c].transpose(1, 2), k_c], dim=3)
                v_c = torch.cat([vf[:, :, f0:f0 + c].transpose(1, 2), v_c], dim=3)
                allow = torch.cat([allow.new_ones(c, P), allow], dim=1)
                mask = allow.view(1, c, 1, 1, L).expand(B, c, 1, 1, L).reshape(B * c, 1, 1, L)
            else:
                mask = None
            rows = (torch.arange(B, device=q.device).view(B, 1) * S + frames.view(1, c)).reshape(-1)
            o = F.scaled_dot_product_attention(q_b[rows], k_c.reshape(B * c, H, L, d),
                                               v_c.reshape(B * c, H, L, d), attn_mask=mask)
            if out is None:  # bf16 under autocast, while q may be float32 (the qk LayerNorm's dtype)
                out = torch.empty_like(q_b, dtype=o.dtype)  # q_b's strides: frames_back is a view
            out[rows] = o
            del o
    assert out is not None
    out = frames_back(out, B)
    if rec is not None:
        keys = own + (S - (1 if p.keep_diagonal else 0)) * Pk  # keys a query really attends to
        rec.count("tokens_q", N * H)
        rec.count("tokens_kv", keys * H)
        rec.count("attn_flops", attention_flops(B, H, N, keys, d))
        rec.count("attn_bytes", attention_bytes(q, N, S * keys))  # each frame reads its own key set
    return out


def avggt_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout,
                    p: AVGGTParams) -> torch.Tensor:
    """AVGGT global attention. q, k, v: [B, H, N, d] -> [B, H, N, d]."""
    B, H, N, d = q.shape
    check_tokens("AVGGT", q, layout)
    rec = layout.recorder
    if layout.layer < p.frame_layers:
        P = layout.tokens_per_frame
        if rec is not None:
            rec.count("tokens_q", N * H)
            rec.count("tokens_kv", P * H)
            rec.count("attn_flops", attention_flops(B, H, N, P, d))
            rec.count("attn_bytes", attention_bytes(q, N, N))
        with phase(rec, "attention"):
            return frame_attention(q, k, v, layout.frames)
    return subsampled_attention(q, k, v, layout, p)


@register_method("avggt", params=AVGGTParams, workloads=("vggt",),
                 doc="AVGGT-style: early global layers as frame attention, K/V grid-subsampled (arXiv "
                     "2512.02541)")
def make_avggt(p: AVGGTParams) -> AttentionFn:
    """Build AVGGT's ``attention_fn(q, k, v, layout) -> out``."""
    return lambda q, k, v, layout: avggt_attention(q, k, v, layout, p)
