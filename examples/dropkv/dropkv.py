"""An out-of-tree method for the harness: VGGT's global attention over a strided subset of keys/values.

Everything a method needs is in this one file: a frozen dataclass of its knobs (the names a suite
sweeps, declared with ``harness.param``), and a function, registered with ``@register_method``,
that turns one instance into an ``attention_fn`` for VGGT's global-attention seam. Run it with::

    PYTHONPATH=examples/dropkv HARNESS_PLUGINS=dropkv harness run examples/dropkv/dropkv.yaml

The seam (``harness.AttentionFn``): ``attention_fn(q, k, v, layout) -> out`` with q, k, v of shape
``[B, H, N, d]`` after qk-norm and RoPE (N = S * P tokens, frame-major) and ``out`` the shape of q.
``layout`` says S (frames), P (tokens per frame) and where the patch tokens start; its optional
``recorder`` (set only in the workload's untimed counting pass) sums the counters the ``vggt``
workload turns into ``work_*`` columns: ``tokens_q`` and ``tokens_kv`` (kept tokens per head and
layer), ``attn_flops`` (docs/extending/methods.md lists them all).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness import AttentionFn, AttentionLayout, param, register_method


@dataclass(frozen=True)
class DropKVParams:
    """The knobs of dropkv (a suite sets and sweeps them by these names)."""

    keep: float = param(0.5, "share of key/value tokens kept (every round(1/keep)-th token)",
                        range=(0.01, 1.0))


def kept_stride(keep: float) -> int:
    """The stride that keeps about ``keep`` of the tokens: 1 keeps all, 2 every second, ..."""
    return max(1, round(1.0 / keep))


@register_method("dropkv", params=DropKVParams, workloads=("vggt",),
                 doc="example plugin: global attention over every n-th key/value token")
def make_dropkv(p: DropKVParams) -> AttentionFn:
    """The ``attention_fn`` of one parameter setting."""
    step = kept_stride(p.keep)

    def attention_fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     layout: AttentionLayout | None = None) -> torch.Tensor:
        k_kept, v_kept = k[:, :, ::step], v[:, :, ::step]  # [B, H, ceil(N / step), d]
        rec = layout.recorder if layout is not None else None
        if rec is not None:  # only in the workload's counting pass, never in a timed call
            b, h, n_q, d = q.shape
            n_kv = k_kept.shape[-2]
            rec.count("tokens_q", h * n_q)  # per head and layer: the work_tokens_q_frac column
            rec.count("tokens_kv", h * n_kv)  # the work_tokens_kv_frac column
            rec.count("attn_flops", 2 * 2 * b * h * n_q * n_kv * d)  # q k^T and p v: work_attn_flops
        return F.scaled_dot_product_attention(q, k_kept, v_kept)

    return attention_fn
