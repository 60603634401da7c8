"""Baselines the methods are compared against.

Token merging at VGGT's global-attention seam (``attention_fn(q, k, v, layout) -> out``):
:mod:`baselines.tome` (ToMe-style uniform bipartite merging) and :mod:`baselines.fastvggt`
(FastVGGT-style reference-frame merging). Shared primitives live in
:mod:`harness.methods.merging`.
"""
