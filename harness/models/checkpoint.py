"""Reading local weight files and comparing them with a model, whatever the model.

- :func:`read_state_dict`: a ``.pt`` / ``.pth`` / ``.bin`` file (``torch.load`` with
  ``weights_only=True`` onto the CPU; a dict wrapped under ``"model"`` or ``"state_dict"`` is
  unwrapped) or a ``.safetensors`` file, as ``{name: tensor}``.
- :func:`compare_state_dict` / :class:`KeyDiff`: the keys a state dict lacks, has in excess, or
  holds with another shape than the model; :meth:`KeyDiff.raise_if_mismatched` turns them into
  one :class:`CheckpointError` listing each kind with its count.

Model-specific loading (key remapping, skipped heads, meta-device models) stays with the model
(:mod:`harness.models.vggt.checkpoint`, :mod:`harness.models.swin`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from harness.errors import HarnessError

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
#: Keys shown per kind of mismatch in an error message (the rest are counted).
SHOW_KEYS = 10


class CheckpointError(HarnessError, ValueError):
    """A checkpoint is unreadable or does not match the model (missing, unexpected or misshapen keys)."""


def sample_keys(keys: list[str], show: int = SHOW_KEYS) -> str:
    """``[a, b, ... (n more)]``: the first ``show`` keys and how many were left out."""
    more = f", ... ({len(keys) - show} more)" if len(keys) > show else ""
    return "[" + ", ".join(keys[:show]) + more + "]"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors stored in ``path`` (.pt/.pth/.bin weights-only, or .safetensors), on the CPU.

    Raises FileNotFoundError naming the path when there is no such file, and
    :class:`CheckpointError` for an unknown suffix, an unreadable file, or one that does not
    hold a mapping of tensors.
    """
    path = Path(path)
    if not path.is_file():
        folder = " (it is a folder; expected a weight file)" if path.is_dir() else ""
        raise FileNotFoundError(f"checkpoint not found: {path}{folder}")
    suffix = path.suffix.lower()
    if suffix not in TORCH_SUFFIXES + SAFETENSORS_SUFFIXES:
        allowed = ", ".join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)
        raise CheckpointError(
            f"unknown checkpoint format {path.suffix!r} for {path}; allowed suffixes: {allowed}"
        )
    try:
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable, truncated or unpicklable under weights_only
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    return dict(obj)


@dataclass(frozen=True)
class KeyDiff:
    """How a state dict differs from a model's own.

    missing: model keys the state dict lacks; unexpected: state-dict keys the model lacks;
    misshapen: ``"key (checkpoint (..), model (..))"`` for keys present in both with other shapes.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshapen: list[str] = field(default_factory=list)

    def problems(self, strict: bool = True) -> list[str]:
        """``"<n> missing keys [...]"`` etc.; without ``strict`` only misshapen keys count."""
        kinds = [("misshapen", self.misshapen)]
        if strict:
            kinds = [("missing", self.missing), ("unexpected", self.unexpected)] + kinds
        return [f"{len(keys)} {kind} keys {sample_keys(keys)}" for kind, keys in kinds if keys]

    def raise_if_mismatched(self, path: str | Path, *, strict: bool = True, what: str = "the model") -> None:
        """Raise :class:`CheckpointError` naming ``path`` and every problem (see :meth:`problems`)."""
        problems = self.problems(strict)
        if problems:
            raise CheckpointError(f"checkpoint {path} does not match {what}: " + "; ".join(problems))


def compare_state_dict(sd: Mapping[str, torch.Tensor], model: nn.Module) -> KeyDiff:
    """Compare the keys and shapes of ``sd`` with ``model.state_dict()`` (in the model's key order)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return KeyDiff(
        missing=[k for k in expected if k not in sd],
        unexpected=[k for k in sd if k not in expected],
        misshapen=[
            f"{k} (checkpoint {tuple(sd[k].shape)}, model {expected[k]})"
            for k in expected
            if k in sd and tuple(sd[k].shape) != expected[k]
        ],
    )


__all__ = [
    "SAFETENSORS_SUFFIXES",
    "TORCH_SUFFIXES",
    "CheckpointError",
    "KeyDiff",
    "compare_state_dict",
    "read_state_dict",
    "sample_keys",
]
