"""Devices and dtypes: the one place for which names a suite may use and what they mean.

The device names accepted here are exactly those the timer (:mod:`harness.measure.timing`) and the
telemetry sampler handle, so a suite that loads can run; ``auto`` is resolved here only.
torch is imported lazily (suites load and validate without it).
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from typing import Any

#: compute dtypes a point may ask for (names of torch dtypes); float32 is the default
DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float16")
#: device names in the words of error messages
DEVICE_NAMES = "cpu, cuda, cuda:N or auto"
_DEVICE_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def device_problem(name: str) -> str | None:
    """None when ``name`` is a device the harness can time, else the problem in words."""
    if _DEVICE_PATTERN.match(name):
        return None
    return f"{name!r} is not a device; allowed: {DEVICE_NAMES}"


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; any other name unchanged."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(device: Any) -> Any:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a torch.device -> torch.device.

    ``"cuda"`` without an index means the current CUDA device. Raises ValueError for other
    device types and RuntimeError when CUDA is asked for but unavailable.
    """
    import torch

    if isinstance(device, str):
        device = resolve_device(device)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a device name; use {DEVICE_NAMES}") from e
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"device {device!r}: the timer supports 'cpu' and 'cuda[:N]', not {dev.type!r}")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch.cuda.is_available() is False")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device("cuda", index)


def torch_dtype(name: str) -> Any:
    """The torch dtype of a dtype name in :data:`DTYPE_NAMES`."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; allowed: {', '.join(DTYPE_NAMES)}")
    import torch

    return getattr(torch, name)


def autocast(device: Any, dtype: str) -> AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` for reduced precision; a no-op for float32."""
    if dtype == "float32":
        return nullcontext()
    import torch

    return torch.autocast(device_type=torch.device(device).type, dtype=torch_dtype(dtype))
