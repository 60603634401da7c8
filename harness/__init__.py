"""Benchmarking and profiling harness for vision-transformer acceleration.

Two method families are measured against their baselines on the same device:
HTTM (head-wise temporal token merging) on VGGT, and MixA-Q (mixed-precision
activation quantization) on Swin.
"""

__version__ = "0.1.0"
