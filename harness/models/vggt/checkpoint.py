"""Loading and saving VGGT weights (.pt / .pth / .safetensors) with strict key/shape checks.

The official facebook/VGGT-1B ``model.pt`` or ``model.safetensors`` loads strictly into
``build_vggt("vggt-1b", enable_track=True)``. A model built without the track head skips the
checkpoint's ``track_head.*`` keys (and says so in the log). A model built on the meta device
takes the checkpoint tensors as its parameters (no second copy in memory).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from harness.models.checkpoint import (
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    CheckpointError,
    compare_state_dict,
    read_state_dict,
    sample_keys,
)
from harness.models.weights import weight_file_problem

log = logging.getLogger(__name__)

__all__ = ["CheckpointError", "LoadReport", "load_checkpoint", "read_state_dict", "save_checkpoint"]


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did."""

    path: Path
    loaded: int
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _on_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def load_checkpoint(model: nn.Module, path: str | Path, *, strict: bool = True) -> LoadReport:
    """Load weights from ``path`` into ``model``.

    strict=True: any missing, unexpected or misshapen key raises :class:`CheckpointError`
    listing them (the first 10 of each, with counts) and the path. strict=False: missing and
    unexpected keys are logged and skipped; misshapen keys still raise. A nonexistent path
    raises FileNotFoundError; a folder, an empty file or one that torch / safetensors cannot read
    raise :class:`CheckpointError` with the reason in one line. ``track_head.*`` keys are skipped
    when the model has no track head.
    """
    path = Path(path)
    sd = _read(path)
    skipped: list[str] = []
    if getattr(model, "track_head", "absent") is None:
        skipped = [k for k in sd if k.startswith("track_head.")]
        if skipped:
            log.info("track head disabled: skipping %d checkpoint keys", len(skipped))
            sd = {k: v for k, v in sd.items() if not k.startswith("track_head.")}

    diff = compare_state_dict(sd, model)
    diff.raise_if_mismatched(path, strict=strict)
    missing, unexpected = diff.missing, diff.unexpected
    if missing:
        log.warning(
            "checkpoint %s: %d model keys missing, left as they are %s",
            path, len(missing), sample_keys(missing),
        )
    if unexpected:
        log.warning(
            "checkpoint %s: ignoring %d unexpected keys %s", path, len(unexpected), sample_keys(unexpected)
        )

    meta = _on_meta(model)
    dropped = set(unexpected)
    sd = {k: v for k, v in sd.items() if k not in dropped}
    model.load_state_dict(sd, strict=False, assign=meta)
    if meta:
        still_meta = [n for n, p in model.named_parameters() if p.is_meta]
        if still_meta:
            raise CheckpointError(
                f"checkpoint {path} left {len(still_meta)} parameters of a meta-device model unset "
                f"{sample_keys(still_meta)}"
            )
        reset = getattr(model, "reset_buffers", None)
        if callable(reset):
            reset("cpu")
    return LoadReport(path=path, loaded=len(sd), skipped=skipped, missing=missing, unexpected=unexpected)


def _read(path: Path) -> dict[str, torch.Tensor]:
    """:func:`read_state_dict`, with the reason a file cannot be read in one line."""
    if path.exists():
        problem = weight_file_problem(path)
        if problem is not None:
            raise CheckpointError(problem)
    try:
        return read_state_dict(path)
    except CheckpointError as e:
        cause = e.__cause__
        if cause is None:
            raise
        raise CheckpointError(f"cannot read checkpoint {path}: {one_line_reason(cause)}") from cause


def one_line_reason(e: BaseException) -> str:
    """``Type: reason`` of a torch / safetensors read error in one line: torch's weights-only
    unpickler wraps its reason in a paragraph of advice, an empty or cut file gives a bare EOFError."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines:
        return f"{type(e).__name__}: {lines[0]}"
    if isinstance(e, EOFError):
        return "EOFError: the file ends before the data does (truncated or cut off)"
    return type(e).__name__


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write ``model.state_dict()`` to ``path``: .safetensors or a torch file (.pt/.pth/.bin) by suffix."""
    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import save_file

        save_file(sd, str(path))
    elif suffix in TORCH_SUFFIXES:
        torch.save(sd, path)
    else:
        allowed = ", ".join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)
        raise ValueError(
            f"cannot save checkpoint to {path}: unknown suffix {path.suffix!r}; allowed: {allowed}"
        )
    return path
