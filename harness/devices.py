"""Device and dtype helpers shared by workloads (one place for the name -> torch mapping)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a CommonParams dtype name ("float32", "bfloat16", "float16")."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; allowed: {', '.join(DTYPES)}") from None


def autocast(device: str | torch.device, dtype: str) -> AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` for reduced precision; a no-op for float32."""
    if dtype == "float32":
        return nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=torch_dtype(dtype))


def synchronize(device: str | torch.device) -> None:
    """Wait for queued work on a CUDA device (no-op elsewhere)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
