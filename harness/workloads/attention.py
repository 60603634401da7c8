"""``attention``: a scaled-dot-product attention micro-workload.

Random q, k, v of shape ``[batch, heads, seq_len, head_dim]`` (from the point's seed, in the
point's dtype, on its device) go through a method's ``attention_fn(q, k, v, layout) -> out``.
The layout describes one frame of ``seq_len`` tokens (patch grid 1 x seq_len, no special
tokens), so any attention_fn from the VGGT seam can be timed here in isolation.

Methods registered here: ``sdpa`` (``F.scaled_dot_product_attention``) and ``math`` (the
explicit ``softmax(q k^T / sqrt(d)) v``). Columns: ``fid_max_abs_err`` / ``fid_cos`` against
the suite's reference method on the same inputs, ``work_attn_flops``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from harness.measure.devices import torch_dtype
from harness.models.seam import AttentionLayout, Recorder, attention_bytes, attention_flops, sdpa_attention
from harness.params import param
from harness.registry import create_method, register_method, register_workload
from harness.workloads.base import Bench, MetricInfo, Point, RunContext, Workload


@dataclass(frozen=True)
class AttentionParams:
    """Shape of one attention call: q, k, v are [batch, heads, seq_len, head_dim]."""

    seq_len: int = param(256, "tokens N (queries = keys)", range=(1, 1 << 20))
    heads: int = param(4, "attention heads H", range=(1, 1024))
    head_dim: int = param(64, "channels per head d", range=(1, 1024))
    batch: int = param(1, "batch size B", range=(1, 4096))


@dataclass(frozen=True)
class AttentionInputs:
    """The 'model' of this workload: fixed random inputs. q, k, v: [B, H, N, d]."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor


AttentionPoint = Point[AttentionParams, Any]


@register_workload
class AttentionWorkload(Workload[AttentionParams, AttentionInputs]):
    name = "attention"
    Params = AttentionParams
    doc = "scaled-dot-product attention on random q/k/v [batch, heads, seq_len, head_dim]"

    def build_model(self, point: AttentionPoint) -> AttentionInputs:
        p = point.workload_params
        gen = torch.Generator(device="cpu").manual_seed(point.seed)
        shape = (p.batch, p.heads, p.seq_len, p.head_dim)
        dtype = torch_dtype(point.dtype)
        q, k, v = (torch.randn(shape, generator=gen).to(device=point.device, dtype=dtype) for _ in range(3))
        return AttentionInputs(q, k, v)

    def bench(self, model: AttentionInputs, point: AttentionPoint, ctx: RunContext) -> Bench:
        p = point.workload_params
        layout = _layout(p.seq_len)
        attn = create_method(self.name, point.method, point.method_params)
        inputs = ctx.inputs((point.workload_params, point.common), lambda: model)
        q, k, v = inputs.q, inputs.k, inputs.v

        def fn() -> torch.Tensor:
            return attn(q, k, v, layout)

        def evaluate(out: torch.Tensor) -> dict[str, float]:
            if not isinstance(out, torch.Tensor) or out.shape != q.shape:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"method {point.method!r} returned {got}, but an attention function returns "
                                 f"the shape of q, {tuple(q.shape)} [batch, heads, seq_len, head_dim]")
            ref = self._reference(model, point, ctx, layout)
            if ref is None:
                return {}
            return fidelity(out, ref)

        def breakdown() -> dict[str, float]:
            rec = Recorder(timed=True, device=point.device)
            with torch.no_grad():
                attn(q, k, v, _layout(p.seq_len, rec))
            return rec.breakdown()

        flops = attention_flops(p.batch, p.heads, p.seq_len, p.seq_len, p.head_dim)
        nbytes = attention_bytes(q, p.seq_len, p.seq_len)
        counters = {"work_attn_flops": flops, "work_attn_bytes": nbytes, "work_flops": flops,
                    "work_bytes": nbytes}
        return Bench(fn=fn, evaluate=evaluate, counters=counters, breakdown=breakdown)

    def _reference(
        self, model: AttentionInputs, point: AttentionPoint, ctx: RunContext, layout: AttentionLayout
    ) -> torch.Tensor | None:
        """The reference method's output on these inputs (cached with them), None without one."""
        if ctx.reference_method is None:
            return None

        def make() -> torch.Tensor:
            with torch.no_grad():
                ref = create_method(self.name, ctx.reference_method, ctx.reference_params)
                return ref(model.q, model.k, model.v, layout)

        return ctx.reference("output", make)

    def metrics(self) -> dict[str, MetricInfo]:
        return {
            "fid_max_abs_err": MetricInfo(
                "fidelity", "largest |out - reference| over all elements", higher_is_better=False
            ),
            "fid_cos": MetricInfo(
                "fidelity", "cosine similarity of the flattened output with the reference output",
                higher_is_better=True, tolerance=1e-3,
            ),
            "work_attn_flops": MetricInfo(
                "work", "FLOPs of the two attention matmuls (2 per multiply-add)", unit="FLOP", tolerance=0.0
            ),
            "work_attn_bytes": MetricInfo(
                "work", "bytes model: q, k, v read and the output written once", unit="B", tolerance=0.0
            ),
            "work_flops": MetricInfo("work", "FLOPs of the timed call (the attention matmuls)", unit="FLOP"),
            "work_bytes": MetricInfo("work", "bytes model of the timed call", unit="B"),
        }


def fidelity(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Max abs error and cosine similarity of ``out`` vs ``ref`` (same shape), in float32."""
    a, b = out.float().flatten(), ref.float().flatten()
    return {
        "fid_max_abs_err": float((a - b).abs().max()),
        "fid_cos": float(F.cosine_similarity(a, b, dim=0)),
    }


def _layout(seq_len: int, recorder: Recorder | None = None) -> AttentionLayout:
    return AttentionLayout(
        frames=1, tokens_per_frame=seq_len, patch_h=1, patch_w=seq_len, patch_start=0, recorder=recorder
    )


# ---------------------------------------------------------------- methods


@dataclass(frozen=True)
class SdpaParams:
    """F.scaled_dot_product_attention has no knobs here (the backend picks the kernel)."""


@dataclass(frozen=True)
class MathParams:
    """The explicit softmax(q k^T / sqrt(d)) v has no knobs."""


def math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: AttentionLayout | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v written out. q: [B, H, N, d], k, v: [B, H, M, d] -> [B, H, N, d]."""
    rec = layout.recorder if layout is not None else None
    if rec is None:
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        return torch.matmul(torch.softmax(scores, dim=-1), v)
    rec.count("attn_flops", attention_flops(q.shape[0], q.shape[1], q.shape[-2], k.shape[-2], q.shape[-1]))
    with rec.phase("scores"):
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    with rec.phase("softmax"):
        probs = torch.softmax(scores, dim=-1)
    with rec.phase("weighted_sum"):
        return torch.matmul(probs, v)


@register_method("sdpa", params=SdpaParams, workloads=("attention",), doc="F.scaled_dot_product_attention")
def make_sdpa(params: SdpaParams) -> Any:
    """The ``sdpa`` method: torch's fused attention (the reference)."""
    return sdpa_attention


@register_method("math", params=MathParams, workloads=("attention",),
                 doc="explicit softmax(q k^T / sqrt d) v")
def make_math(params: MathParams) -> Any:
    """The ``math`` method: attention written out (three kernels)."""
    return math_attention
