"""Quantization-aware fine-tuning of a committed proxy: uniform QAT and SAQA, from a recipe file.

A recipe (:mod:`harness.train.recipe`, YAML under ``harness/train/recipes/``) names a base proxy
(``swin-proxy`` or ``swin-det-proxy``), the bit widths and the training schedule. ``harness train
RECIPE`` runs it through the shared loop (:mod:`harness.train.loop`: AdamW, warm-up + cosine,
checkpoints, resume, curves, model card) with :class:`QATProxy`:

- the model is the base proxy's committed float weights, its Swin replaced by a trainable quantized
  copy (:func:`harness.quant.qat.trainable_copy`: PTQ-calibrated on the images the benchmark
  workload calibrates with, then latent weights with straight-through fake quantization and
  learned LSQ activation steps). For the detector only the backbone trains: the FPN and the heads
  stay the float proxy's, so that a QAT point differs from the float reference in its backbone only,
  as every other point does;
- uniform QAT: every window in the high branch (W{w}A{a});
- SAQA (``saqa: true``): each step draws per-pair low-bit ratios (:func:`harness.quant.qat.saqa_ratios`,
  a pure function of (seed, step)) and runs the two-branch model at A{a} / A{a_bits_low}, starting from
  ``start`` (MixA-Q: from the uniform QAT checkpoint);
- data, loss and held-out metrics are the base proxy's: its training stream continued past the
  steps it trained on (fresh images from the full distribution), its held-out set;
  held-out metrics are taken at ratio 0, and for SAQA also at ``eval_ratio`` on every pair
  (suffix ``_r{ratio}``);
- the saved weights are the quantized Swin's state (latent weights, LayerNorm copies, learned steps,
  and which quantizers trained at which bits): a benchmark point loads them with ``qat:
  proxy:NAME`` (or the file) on ``uniform``, ``mixaq`` or ``sparsevit``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from harness.data.shapes import CALIB_SEED, shapes_images
from harness.models.checkpoint import read_state_dict
from harness.models.swin_det import backbone_of, replace_backbone
from harness.models.weights import PROXY_FILE, PROXY_ROOT, resolve_weights
from harness.quant.qat import (
    load_qat_state,
    n_pairs,
    qat_state,
    saqa_ratios,
    set_pair_ratios,
    trainable_copy,
)
from harness.quant.qswin import QuantSpec, RoutingSpec
from harness.train.base import Proxy, TrainConfig
from harness.train.card import read_card
from harness.train.det_proxy import SwinDetProxy
from harness.train.recipe import QATRecipe
from harness.train.swin_proxy import SwinProxy
from harness.workloads.swin_det import SwinDetParams, backbone_input, load_calib

#: base proxies a recipe may fine-tune
BASES: dict[str, type[Proxy]] = {"swin-proxy": SwinProxy, "swin-det-proxy": SwinDetProxy}
#: generator seed of the SAQA ratios of step ``step``: ``seed * RATIO_SEED_STRIDE + step + RATIO_SEED_OFFSET``
RATIO_SEED_STRIDE, RATIO_SEED_OFFSET = 1_000_003, 7_777


class QATProxy(Proxy):
    """A recipe as a :class:`Proxy` for the training loop (see the module docstring)."""

    def __init__(self, recipe: QATRecipe) -> None:
        self.recipe = recipe
        self.base = BASES[recipe.base]()
        self.name = recipe.name
        kind = "SAQA" if recipe.saqa else "uniform QAT"
        bits = f"W{recipe.w_bits}A{recipe.a_bits}" + (f"/A{recipe.a_bits_low}" if recipe.saqa else "")
        self.description = f"{kind} {bits} of {recipe.base}: {recipe.description}".rstrip(": ")
        self.headline = self.base.headline
        self._calib: torch.Tensor | None = None

    def default_config(self) -> TrainConfig:
        return self.recipe.train

    @property
    def is_detector(self) -> bool:
        return isinstance(self.base, SwinDetProxy)

    # -- the model ---------------------------------------------------------------------------------

    def float_model(self, seed: int) -> nn.Module:
        """The base proxy with its committed float weights, eval mode."""
        model = self.base.build_model(seed)
        path = PROXY_ROOT / self.recipe.base / PROXY_FILE
        model.load_state_dict({k: v.float() for k, v in read_state_dict(path).items()}, strict=True)
        return model.eval()

    def swin_of(self, model: nn.Module) -> nn.Module:
        """The (quantized) timm Swin inside ``model``."""
        return backbone_of(model) if self.is_detector else model

    def calib_images(self, model: nn.Module) -> torch.Tensor:
        """The images the benchmark workload calibrates with, as the Swin sees them: [N, 3, H, W]."""
        n = self.recipe.calib_images
        if self.is_detector:
            params = SwinDetParams(model="swin_det_proxy", calib_images=n)
            return backbone_input(model, load_calib(params), "cpu").clone()
        return shapes_images(n, CALIB_SEED, 224)[0]

    def spec(self) -> QuantSpec:
        r = self.recipe
        low = r.a_bits_low if r.saqa else r.a_bits
        return QuantSpec(w_bits=r.w_bits, a_bits_high=r.a_bits, a_bits_low=low, embed_bits=r.embed_bits,
                         calib="whole")

    def build_quantized(self, seed: int, start: str) -> nn.Module:
        """The base model with a trainable quantized Swin (from ``start`` when given), eval mode."""
        model = self.float_model(seed)
        swin = self.swin_of(model)
        pairs = n_pairs(swin)
        routing = RoutingSpec(pair_ratios=(0.0,) * pairs, pair_prune=(0.0,) * pairs, importance="l2")
        q = trainable_copy(swin, self.spec(), routing, self.calib_images(model))
        if start:
            found = resolve_weights(start)
            load_qat_state(q, read_state_dict(found.path), found.label)
        if not self.is_detector:
            return q.eval()
        model.requires_grad_(False)  # neck and heads stay the float proxy's
        return replace_backbone(model, q).eval()

    def build_model(self, seed: int) -> nn.Module:
        return self.build_quantized(seed, self.recipe.start).train()

    def weights_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The quantized Swin's state (what a ``qat:`` point loads), each shared tensor once."""
        return qat_state(self.swin_of(model))

    # -- data, loss, evaluation --------------------------------------------------------------------

    def ratios(self, step: int, seed: int, pairs: int) -> tuple[float, ...]:
        """Per-pair low-bit ratios of training step ``step`` (all 0 for uniform QAT)."""
        r = self.recipe
        if not r.saqa:
            return (0.0,) * pairs
        gen = torch.Generator().manual_seed(seed * RATIO_SEED_STRIDE + step + RATIO_SEED_OFFSET)
        return saqa_ratios(gen, pairs, r.max_ratio, r.ratio_grid)

    def data_step(self, step: int) -> int:
        """The base proxy's step whose batch fine-tuning step ``step`` trains on: past the base's own
        training (fresh images, the full distribution, after any curriculum)."""
        return self.base.default_config().steps + step

    def batch(self, step: int, size: int, seed: int) -> dict[str, Any]:
        """``{"data": the base proxy's batch of step data_step(step), "step": step, "seed": seed}``."""
        return {"data": self.base.batch(self.data_step(step), size, seed), "step": step, "seed": seed}

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        swin = self.swin_of(model)
        ratios = self.ratios(batch["step"], batch["seed"], n_pairs(swin))
        set_pair_ratios(swin, ratios)
        loss, parts = self.base.loss(model, batch["data"])
        return loss, {**parts, "mean_ratio": sum(ratios) / len(ratios)}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The base proxy's held-out metrics at ratio 0; for SAQA also at ``eval_ratio``."""
        swin = self.swin_of(model)
        pairs = n_pairs(swin)
        set_pair_ratios(swin, (0.0,) * pairs)
        metrics = self.base.evaluate(model)
        if self.recipe.saqa:
            set_pair_ratios(swin, (self.recipe.eval_ratio,) * pairs)
            tag = f"_r{self.recipe.eval_ratio:g}"
            metrics |= {k + tag: v for k, v in self.base.evaluate(model).items()}
            set_pair_ratios(swin, (0.0,) * pairs)
        return metrics

    def prepare(self, progress: bool = True) -> None:
        self.base.prepare(progress)

    def baselines(self) -> dict[str, dict[str, float]]:
        """The float proxy (its committed card) and the starting point before this fine-tuning."""
        out: dict[str, dict[str, float]] = {}
        card = read_card(PROXY_ROOT / self.recipe.base)
        if card:
            out[f"float {self.recipe.base} (its model card)"] = card["heldout"]
        label = self.recipe.start or f"PTQ W{self.recipe.w_bits}A{self.recipe.a_bits} (percentile)"
        out[f"before fine-tuning: {label}"] = self.evaluate(self.build_quantized(self.recipe.train.seed,
                                                                                  self.recipe.start))
        return out

    def model_info(self) -> dict[str, Any]:
        return {"base": self.recipe.base, **self.base.model_info()}

    def data_info(self) -> dict[str, Any]:
        skip = ("train", "description")
        recipe = {k: v for k, v in dataclasses.asdict(self.recipe).items() if k not in skip}
        return {**self.base.data_info(), "qat recipe": recipe,
                "activation quantizers": "LSQ steps from the PTQ calibration (percentile), fixed zero points",
                "weight quantizer": "per-channel symmetric max-abs, straight-through gradient"}


__all__ = ["BASES", "QATProxy"]
