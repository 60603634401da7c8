"""What a trainable proxy model provides to the training loop.

A proxy is a small model the harness trains itself on its own procedural data, so that accuracy
columns mean something on machines without real checkpoints. :class:`Proxy` is the contract:
the model (built by the same code as benchmarking), deterministic batches, the loss, and a
held-out evaluation. The loop in :mod:`harness.train.loop` owns the rest (optimiser, schedule,
checkpoints, resume, curves, model card).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.params import param


@dataclass(frozen=True)
class TrainConfig:
    """The recipe of one proxy (every field lands in the model card)."""

    steps: int = param(1000, "optimiser steps", range=(1, None))
    batch: int = param(8, "samples per step", range=(1, None))
    lr: float = param(1e-3, "peak learning rate (AdamW)", range=(0.0, None))
    weight_decay: float = param(0.05, "AdamW weight decay", range=(0.0, None))
    warmup_steps: int = param(50, "linear warm-up steps, then cosine decay to lr * min_lr_frac",
                              range=(0, None))
    min_lr_frac: float = param(0.02, "final learning rate as a fraction of lr", range=(0.0, 1.0))
    grad_clip: float = param(1.0, "gradient-norm clip (0: off)", range=(0.0, None))
    eval_every: int = param(200, "held-out evaluation every this many steps", range=(1, None))
    ckpt_every: int = param(100, "resumable checkpoint every this many steps", range=(1, None))
    seed: int = param(0, "seed of the initialisation and of the training batches", range=(0, None))
    threads: int = param(2, "torch intra-op threads on CPU (fixed for reproducibility)", range=(1, None))
    save_dtype: str = param("float16", "dtype of the shipped weights", choices=("float16", "float32"))


class Proxy(ABC):
    """One trainable proxy: a name, a model, data, a loss and a held-out evaluation."""

    #: registry name (``harness train NAME``, ``checkpoint: proxy:NAME``)
    name: str = ""
    #: one line for ``harness train --list`` and the model card
    description: str = ""
    #: metric used to pick nothing but printed as the headline of the card (in ``evaluate``'s dict)
    headline: str = ""

    @abstractmethod
    def default_config(self) -> TrainConfig:
        """The recipe the committed weights were trained with."""

    @abstractmethod
    def build_model(self, seed: int) -> nn.Module:
        """A freshly initialised model (deterministic in ``seed``), in train mode, on the CPU."""

    @abstractmethod
    def batch(self, step: int, size: int, seed: int) -> Any:
        """The training batch of ``step``: a deterministic function of (step, size, seed)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar loss to minimise, named float parts for the curves)."""

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out metrics of ``model`` (eval mode, no grad) on data disjoint from training."""

    #: the largest recipe seed (seeds are 0 .. max_seed); the default keeps every generator seed a
    #: proxy derives from it (e.g. ``seed * 1_000_003 + step``) within torch's 64-bit range
    max_seed: int = 2**32 - 1
    #: why seeds stop at :attr:`max_seed` (said when a larger one is refused)
    max_seed_reason: str = "seeds are kept to 32 bits"

    def seed_problem(self, seed: int) -> str | None:
        """None when ``seed`` is a recipe seed of this proxy, else the problem in words."""
        if 0 <= seed <= self.max_seed:
            return None
        return (f"{self.name} takes seeds 0 to {self.max_seed}, got {seed}"
                + ("" if seed < 0 else f" ({self.max_seed_reason})"))

    def prepare(self, progress: bool = True) -> None:
        """Expensive set-up before the first step (e.g. render a data pool; a progress bar only
        when ``progress``); default: nothing."""
        return None

    def baselines(self) -> dict[str, dict[str, float]]:
        """Held-out metrics of trivial predictors (``{predictor: {metric: value}}``) for the card."""
        return {}

    def model_info(self) -> dict[str, Any]:
        """Architecture facts for the card (shape config, image size, ...)."""
        return {}

    def data_info(self) -> dict[str, Any]:
        """What the training and held-out data are (generator, seeds, sizes) for the card."""
        return {}

    def weights_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors the shipped weight file holds (default: the whole model's state dict)."""
        return model.state_dict()

    def to_device(self, batch: Any, device: torch.device) -> Any:
        """Move a batch to ``device`` (tensors, or tuples/dicts of them)."""
        if isinstance(batch, torch.Tensor):
            return batch.to(device)
        if isinstance(batch, dict):
            return {k: self.to_device(v, device) for k, v in batch.items()}
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.to_device(v, device) for v in batch)
        return batch


__all__ = ["Proxy", "TrainConfig"]
