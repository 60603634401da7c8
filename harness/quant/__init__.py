"""Fake quantization for Swin: quantizers and the quantized two-branch Swin block.

``quantizers``: weight / activation / softmax quantizers and their range observers.
``qswin``: the two-branch (high / low activation bits) Swin block and stage wrapper shared
by uniform quantization (every window high) and MixA-Q (windows split by importance).
``repq``: RepQ-ViT's scale reparameterization (post-LayerNorm per-channel grids folded into the
LayerNorm and the next linear), the ``ptq: repq`` base.
"""
