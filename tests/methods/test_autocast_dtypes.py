"""Every registered ``vggt`` method under bf16 autocast, with q and k in float32 as VGGT's global seam
hands them over on CUDA (the qk LayerNorm runs in float32 under autocast, SDPA / FlexAttention
return bf16).

The output must be what plain attention (:func:`harness.models.seam.sdpa_attention`) gives under the
same autocast: q's shape, the attention's dtype (bf16), finite. CPU autocast casts SDPA, matmul and
FlexAttention as CUDA's does, so the dtype mix is the GPU's. New methods are covered by their
registration: the cases are ``method_names("vggt")``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from harness import registry
from harness.models.seam import AttentionLayout, VGGTMethod, sdpa_attention

pytestmark = pytest.mark.usefixtures("one_thread")

registry.load_builtins()

FRAMES, PATCH_START, PATCH_H, PATCH_W = 3, 5, 4, 6
HEADS, HEAD_DIM, DEPTH = 16, 8, 4  # 16 heads: VGGT-1B's, which HTTM's default head groups divide
LAYERS = (0, DEPTH - 1)
"""The first global layer and the last: layer-dependent methods (AVGGT's frame layers, Spark3R's
tiers, LiteVGGT's recompute / reuse) take another path at each."""
FORWARD_CALIBRATION = {"hess": {"hess_score": "output_error"}}
"""Methods whose default calibration needs a model with gradients (HeSS's Fisher score: tested with one
in tests/baselines/test_hess_fisher.py) are calibrated here by their forward-only score, which feeds the
same attention path."""
VARIANTS = {"blocksparse, flex backend": ("blocksparse", {"bs_backend": "flex"}),
            "hess, flex backend": ("hess", {"hess_backend": "flex", "hess_score": "output_error"})}
"""Registered methods with a second attention path their defaults do not take on CPU."""
CASES = {name: (name, FORWARD_CALIBRATION.get(name, {})) for name in registry.method_names("vggt")} | VARIANTS


def _layout(layer: int, x_norm: torch.Tensor) -> AttentionLayout:
    return AttentionLayout(frames=FRAMES, tokens_per_frame=PATCH_START + PATCH_H * PATCH_W, patch_h=PATCH_H,
                           patch_w=PATCH_W, patch_start=PATCH_START, layer=layer, x_norm=x_norm, depth=DEPTH)


def _inputs(v_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k float32 [1, H, N, d]; v of ``v_dtype``; x_norm float32 [1, N, H * d]."""
    g = torch.Generator().manual_seed(0)
    N = FRAMES * (PATCH_START + PATCH_H * PATCH_W)
    q, k, v = (torch.randn(1, HEADS, N, HEAD_DIM, generator=g) for _ in range(3))
    return q, k, v.to(v_dtype), torch.randn(1, N, HEADS * HEAD_DIM, generator=g)


def _attention_fn(name: str, overrides: dict[str, Any], q, k, v, x_norm) -> Any:
    """The method's attention_fn (calibrated first when it needs it), or None (e.g. quantvggt)."""
    spec = registry.get_method("vggt", name)
    built = registry.create_method("vggt", name, spec.params(**overrides))
    if not isinstance(built, VGGTMethod):
        return built
    if built.attention_fn is not None and built.calibrate is not None:
        def probe(fn) -> None:
            for layer in range(DEPTH):
                fn(q, k, v, _layout(layer, x_norm))

        built.calibrate(probe)
    return built.attention_fn


@pytest.mark.parametrize("v_dtype", [torch.float32, torch.bfloat16], ids=["v float32", "v bf16"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_method_under_autocast_returns_plain_attentions_shape_and_dtype(case, v_dtype):
    name, overrides = CASES[case]
    q, k, v, x_norm = _inputs(v_dtype)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fn = _attention_fn(name, overrides, q, k, v, x_norm)
        if fn is None:
            pytest.skip(f"{name} changes linear layers, not the attention seam")
        want = sdpa_attention(q, k, v).dtype
        outs = {layer: fn(q, k, v, _layout(layer, x_norm)) for layer in LAYERS}
    assert want == torch.bfloat16
    for layer, out in outs.items():
        assert out.shape == q.shape, (case, layer)
        assert out.dtype == want, (case, layer, out.dtype)
        assert torch.isfinite(out.float()).all(), (case, layer)


def test_every_registered_vggt_method_is_a_case():
    assert set(registry.method_names("vggt")) <= {name for name, _ in CASES.values()}
