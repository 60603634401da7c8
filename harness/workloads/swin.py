"""``swin``: timm Swin classification under uniform fake quantization, MixA-Q and window pruning.

One point: build the float Swin (random init seeded, or a local checkpoint), apply the method's
model transform to a copy (calibration happens here, outside the timed region), then time the
quantized forward on one batch under ``torch.inference_mode``.

Latency is measured honestly, and it is NOT the point of this workload: fake quantization
rounds values in floating point, so quantized models are *slower* than the float model (extra
elementwise work, the two-branch gather/scatter), never faster. The acceleration MixA-Q claims is
in bit operations: compare ``work_bops`` / ``work_bops_speedup`` / ``work_eq_act_bits`` across
methods, and fidelity at equal BOPs.

Methods: ``fp32`` (float, the reference), ``uniform`` (W{w}A{a}), ``mixaq`` (two-branch
mixed-precision windows), ``sparsevit`` (window pruning on the uniform base). A method's
``MethodSpec.build(params)`` returns a transform ``(model, calib_images, seed=0) -> model``
returning a quantized copy (``fp32``: the model itself).

Inputs (``images``): ``synthetic`` (seeded structured scenes: textured objects on a smooth
background), ``shapes`` (the labelled procedural shape x texture set of ``harness.data.shapes``
that ``swin_proxy`` was trained on: its fixed held-out images, whatever the point's seed, and
calibration images from a third seed) or ``folder`` (an ImageFolder at ``data_path``; labels =
index of the class folder in sorted order = the ImageNet-1k index for the standard 1000-synset
layout). Evaluation uses ``eval_images`` images (0: the timed batch), calibration
``calib_images`` others (synthetic: a different seed; folder: the last images of the folder,
evaluation the first).

Work counters are per image (BOPs conventions in ``harness.metrics.work``). Fidelity compares
with the suite's reference method run in float32 on the same images (cached once per input):
logits (KL, top-1 agreement), final features (SQNR), each stage's output (SQNR, cosine), and
the stage outputs split into high- and low-importance windows (see ``metrics()``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.data.shapes import CALIB_SEED, HELDOUT_SEED, shapes_images
from harness.measure.devices import autocast
from harness.methods.mixaq import MixAQParams, make_mixaq, sensitivity_probe
from harness.metrics import fidelity
from harness.metrics import work as W
from harness.models.seam import name_modules
from harness.models.swin import (
    MODEL_CHOICES,
    build_swin,
    list_image_folder,
    pretrained_problem,
    read_image_folder,
    synthetic_images,
)
from harness.models.weights import Weights, check_weights, resolve_weights
from harness.params import param
from harness.quant.qswin import LOW, PRUNED, window_bits, window_scores
from harness.quant.sensitivity import importance_sensitivity, score_cv, spearman_columns
from harness.registry import create_method, register_method, register_workload
from harness.workloads.base import (
    Bench,
    MetricInfo,
    Point,
    RunContext,
    Workload,
    attach_weights,
    weights_info,
)

N_STAGES = 4
PATCH_SIZE = 4
"""Patch size (px) of every Swin variant here: ``img_size`` must be a multiple of it."""
SQNR_CAP_DB = 300.0
"""SQNR of identical tensors (infinite) is reported as this, so results stay finite."""
CALIB_SEED_OFFSET = 100_003
"""Synthetic calibration images use seed + this, so they differ from the evaluated images."""
IMAGE_SOURCES = ("synthetic", "shapes", "folder")
DIAG_MIN_WINDOWS = 4
"""Stages with fewer windows get no importance-sensitivity correlation (Swin at 224 px: 64/16/4/1)."""


@dataclass(frozen=True)
class SwinParams:
    """What a Swin point runs on (names are what suites sweep)."""

    model: str = param(
        "swin_t",
        "Swin variant: swin_t, swin_s, swin_b (timm), or swin_micro (tiny, for tests)",
        choices=MODEL_CHOICES,
    )
    img_size: int = param(
        224, "square input side in pixels (multiple of 4); 448 gives 256/64/16/4 windows", range=(32, 4096)
    )
    batch: int = param(2, "images in the timed forward", range=(1, 4096))
    images: str = param(
        "synthetic",
        "input images: synthetic (seeded structured scenes), shapes (labelled procedural set of "
        "swin_proxy, held-out seed) or folder (an ImageFolder at data_path)",
        choices=IMAGE_SOURCES,
    )
    data_path: str = param("", "ImageFolder root (class subfolders) when images=folder")
    checkpoint: str = param(
        "", "weights: empty = random init from seed; a local .pth/.pt/.safetensors file; hf:ORG/NAME[/FILE] "
        "(Hugging Face hub cache); proxy:NAME (a trained proxy under harness/proxies/)")
    pretrained: bool = param(
        False, "timm pretrained weights through timm's hub download; needs network or a filled HF cache "
        "(swin_t/s/b only, not with a checkpoint)")
    calib_images: int = param(4, "images used to calibrate activation ranges", range=(1, 100_000))
    eval_images: int = param(0, "images for fidelity / top-1 (0: the timed batch)", range=(0, 1_000_000))
    diag_images: int = param(
        0, "mixaq: images for the importance-vs-sensitivity diagnostic (fid_imp_sens_*; 0: off)",
        range=(0, 1000),
    )
    act_act_convention: str = param(
        "linear",
        "BOPs of q.k^T and attn.v: linear (b_w*b_a, as the MixA-Q tables) or product (b_a*b_a)",
        choices=W.ACT_ACT_CONVENTIONS,
    )

    def __post_init__(self) -> None:
        # the patch grid must tile the image (windows need not: timm pads them); refused at load
        if self.img_size % PATCH_SIZE:
            lo = max(PATCH_SIZE, self.img_size // PATCH_SIZE * PATCH_SIZE)
            raise ValueError(
                f"img_size={self.img_size} is not a multiple of the Swin patch size {PATCH_SIZE}, so the "
                f"patches do not tile the image (allowed: multiples of {PATCH_SIZE}; nearest: "
                f"{lo} or {lo + PATCH_SIZE})"
            )


@dataclass
class SwinInputs:
    """images: [batch, 3, S, S] timed batch; eval_images: [n, 3, S, S]; labels: [n] or None
    (all on the point's device, labels on CPU)."""

    images: torch.Tensor
    eval_images: torch.Tensor
    labels: torch.Tensor | None


@dataclass
class Captured:
    """One model's outputs on the evaluation images (float32, CPU).

    logits: [n, K]; features: [n, h, w, C] (after the final norm); stage_out[i]: [n, H_i, W_i, C_i];
    stage_tok[i]: [n, H_i, W_i] per-token mean |x| of stage i's input (after downsample).
    """

    logits: torch.Tensor
    features: torch.Tensor
    stage_out: list[torch.Tensor]
    stage_tok: list[torch.Tensor]


def _input_key(p: SwinParams, seed: int, device: str) -> tuple:
    return ("swin.inputs", p.images, p.data_path, p.img_size, p.batch, p.eval_images, seed, device)


def _calib_key(p: SwinParams, seed: int, device: str) -> tuple:
    return ("swin.calib", p.images, p.data_path, p.img_size, p.calib_images, seed, device)


def load_inputs(p: SwinParams, seed: int, device: str) -> SwinInputs:
    """The timed batch and the evaluation images (+ labels for a folder)."""
    n_eval = p.eval_images or p.batch
    n = max(n_eval, p.batch)
    if p.images == "synthetic":
        imgs, labels = synthetic_images(n, p.img_size, seed), None
    elif p.images == "shapes":
        imgs, labels = shapes_images(n, HELDOUT_SEED, p.img_size)
    else:
        imgs, labels = read_image_folder(p.data_path, p.img_size, range(n))
    imgs = imgs.to(device)
    return SwinInputs(
        images=imgs[: p.batch], eval_images=imgs[:n_eval], labels=None if labels is None else labels[:n_eval]
    )


def load_calib(p: SwinParams, seed: int, device: str) -> torch.Tensor:
    """Calibration images [calib_images, 3, S, S], disjoint from the evaluated ones."""
    if p.images == "synthetic":
        return synthetic_images(p.calib_images, p.img_size, seed + CALIB_SEED_OFFSET).to(device)
    if p.images == "shapes":
        return shapes_images(p.calib_images, CALIB_SEED, p.img_size)[0].to(device)
    total = len(list_image_folder(p.data_path))
    n_used = max(p.eval_images or p.batch, p.batch)
    if n_used + p.calib_images > total:
        raise ValueError(
            f"image folder {p.data_path} has {total} images: not enough for {n_used} evaluated + "
            f"{p.calib_images} calibration images (they must not overlap)"
        )
    imgs, _ = read_image_folder(p.data_path, p.img_size, range(total - p.calib_images, total))
    return imgs.to(device)


def capture(model: nn.Module, images: torch.Tensor, batch: int, device: str, dtype: str) -> Captured:
    """Run ``model`` over ``images`` in chunks of ``batch`` and keep logits, features and stage tensors."""
    store: dict[str, list[list[torch.Tensor]]] = {
        "out": [[] for _ in model.layers],
        "tok": [[] for _ in model.layers],
    }
    handles = []
    for i, stage in enumerate(model.layers):
        handles.append(
            stage.register_forward_hook(lambda _m, _a, y, i=i: store["out"][i].append(y.float().cpu()))
        )
        handles.append(
            stage.downsample.register_forward_hook(
                lambda _m, _a, y, i=i: store["tok"][i].append(y.detach().float().abs().mean(-1).cpu())
            )
        )
    logits, feats = [], []
    try:
        with torch.inference_mode(), autocast(device, dtype):
            for s in range(0, images.shape[0], batch):
                f = model.forward_features(images[s : s + batch])
                logits.append(model.forward_head(f).float().cpu())
                feats.append(f.float().cpu())
    finally:
        for h in handles:
            h.remove()
    return Captured(
        logits=torch.cat(logits),
        features=torch.cat(feats),
        stage_out=[torch.cat(x) for x in store["out"]],
        stage_tok=[torch.cat(x) for x in store["tok"]],
    )


def _sqnr(ref: torch.Tensor, test: torch.Tensor) -> float:
    return min(fidelity.sqnr_db(ref, test), SQNR_CAP_DB)


def _window_energy(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Sum of squares per regular window. x: [n, H, W, C] -> [n, nW] (zero padding)."""
    e = x.double().pow(2).sum(-1)  # [n, H, W]
    n, H, W = e.shape
    wh, ww = window
    e = nn.functional.pad(e, (0, (ww - W % ww) % ww, 0, (wh - H % wh) % wh))
    Hp, Wp = e.shape[1:]
    return e.reshape(n, Hp // wh, wh, Wp // ww, ww).sum(dim=(2, 4)).reshape(n, -1)


def split_energies(
    ref_out: torch.Tensor, ref_tok: torch.Tensor, test_out: torch.Tensor, window: tuple[int, int]
) -> tuple[float, float, float, float] | None:
    """(signal, noise) energy of one stage's output over its high- and low-importance windows:
    ``(signal_high, noise_high, signal_low, noise_low)``, summed over the images; None when the
    stage has fewer than 2 windows.

    ref_out, test_out: [n, H, W, C] stage outputs; ref_tok: [n, H, W] the *reference* stage input's
    per-token mean |x|. Per image, windows (regular partition) are ranked by their L2 importance; the
    top half (ceil(nW/2)) is "high", the rest "low"; noise = ref_out - test_out.
    """
    scores = window_scores(ref_tok, window, (0, 0))  # [n, nW]
    nW = scores.shape[1]
    if nW < 2:
        return None
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    high = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order[:, : math.ceil(nW / 2)], True)
    sig = _window_energy(ref_out, window)
    noise = _window_energy(ref_out - test_out, window)
    return (float(sig[high].sum()), float(noise[high].sum()), float(sig[~high].sum()),
            float(noise[~high].sum()))


def energy_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise), capped at SQNR_CAP_DB (identical tensors: no noise)."""
    return SQNR_CAP_DB if noise == 0 else min(10 * math.log10(signal / noise), SQNR_CAP_DB)


def split_sqnr(ref: Captured, test: Captured, windows: list[tuple[int, int]]) -> tuple[float, float] | None:
    """Mean over stages of the SQNR (dB) of each stage output restricted to its high- and
    low-importance windows (:func:`split_energies`); None when no stage has 2 or more windows."""
    hi_db, lo_db = [], []
    for i, win in enumerate(windows):
        e = split_energies(ref.stage_out[i], ref.stage_tok[i], test.stage_out[i], win)
        if e is not None:
            hi_db.append(energy_db(e[0], e[1]))
            lo_db.append(energy_db(e[2], e[3]))
    if not hi_db:
        return None
    return sum(hi_db) / len(hi_db), sum(lo_db) / len(lo_db)


def score_spread(test: Captured, windows: list[tuple[int, int]]) -> dict[str, float]:
    """work_score_cv_stage{i}: mean over the evaluated images of the coefficient of variation of
    stage i's L2 window scores (the model's own stage input, regular partition); stages with 2 or
    more windows."""
    row = {}
    for i, win in enumerate(windows):
        cv = score_cv(test.stage_tok[i], win)
        if cv is not None:
            row[f"work_score_cv_stage{i}"] = float(cv.mean())
    return row


def fidelity_metrics(ref: Captured, test: Captured, windows: list[tuple[int, int]]) -> dict[str, float]:
    """fid_* columns of ``test`` against ``ref`` (same images)."""
    row = {
        "fid_logit_kl": fidelity.kl_divergence(ref.logits, test.logits),
        "fid_top1_agree": fidelity.top1_agreement(ref.logits, test.logits),
        "fid_sqnr_db": _sqnr(ref.features, test.features),
    }
    for i, (r, t) in enumerate(zip(ref.stage_out, test.stage_out)):
        row[f"fid_sqnr_stage{i}_db"] = _sqnr(r, t)
        row[f"fid_cos_stage{i}"] = fidelity.cosine_similarity(r, t, dim=-1)
    split = split_sqnr(ref, test, windows)
    if split is not None:
        row["fid_sqnr_high_db"], row["fid_sqnr_low_db"] = split
    return row


def work_counters(model: nn.Module, act_act_convention: str) -> dict[str, float]:
    """work_* counters per image of a float or quantized Swin (after one forward of it)."""
    geom = W.SwinGeometry.from_model(model)
    info = getattr(model, "quant_info", None)
    if info is None:  # float model
        macs = W.model_macs(geom)["total"]
        return {
            "work_macs": macs,
            "work_bops": W.float_bops(geom),
            "work_bops_speedup": 1.0,
            "work_eq_act_bits": float(W.FLOAT_BITS),
            "work_low_window_frac": 0.0,
            "work_pruned_window_frac": 0.0,
        }
    spec = info.spec
    bits = window_bits(model)
    bops = W.bops(geom, bits, spec.w_bits, spec.embed_bits, act_act_convention, default_bits=spec.a_bits_high)
    ref = W.bops(geom, info.ref_a_bits, spec.w_bits, spec.embed_bits, act_act_convention)
    executed = [None if b is None else (b > 0).long() for b in bits]
    macs = W.bops(geom, executed, 1, 1, "linear", default_bits=1)
    counts = [r.counts for st in model.layers for r in st.last_routes]
    total = sum(sum(c) for c in counts)
    return {
        "work_macs": macs,
        "work_bops": bops,
        "work_bops_speedup": ref / bops,
        "work_eq_act_bits": W.equivalent_act_bits(
            geom, bops, spec.w_bits, spec.embed_bits, act_act_convention
        ),
        "work_low_window_frac": sum(c[LOW] for c in counts) / total,
        "work_pruned_window_frac": sum(c[PRUNED] for c in counts) / total,
    }


SwinPoint = Point[SwinParams, Any]


@register_workload
class SwinWorkload(Workload[SwinParams, nn.Module]):
    name = "swin"
    Params = SwinParams
    doc = (
        "timm Swin classification under fake quantization (uniform, MixA-Q, window pruning); "
        "latency of fake quantization is not a speedup, compare work_bops"
    )

    def model_key(self, point: SwinPoint) -> tuple:
        p = point.workload_params
        return ("swin", p.model, p.img_size, p.checkpoint, p.pretrained, point.device, point.dtype,
                point.seed)

    def build_model(self, point: SwinPoint) -> nn.Module:
        p = point.workload_params
        weights = resolve_weights(p.checkpoint)
        model = build_swin(p.model, p.img_size, seed=point.seed, checkpoint=weights.path,
                           pretrained=p.pretrained)
        if p.pretrained:  # timm's own weights (fetched into the hub cache by build_swin)
            weights = Weights(spec="pretrained", path=None, label=f"timm-pretrained:{p.model}", sha256="")
        # the float model's stages as named ranges (the quantized copies name theirs themselves)
        name_modules((f"stage.{i}", stage) for i, stage in enumerate(model.layers))
        return attach_weights(model.to(point.device).eval(), weights)

    def check_paths(self, params: Any) -> list[str]:
        problems = check_weights(params.checkpoint)  # hf: specs: syntax only, nothing is downloaded
        pretrained = pretrained_problem(params.model, params.pretrained, params.checkpoint)
        if pretrained:
            problems.append(pretrained)
        if params.images == "folder":
            if not params.data_path:
                problems.append("images: folder needs data_path (an ImageFolder root with class subfolders)")
            elif not Path(params.data_path).is_dir():
                problems.append(
                    f"data_path {params.data_path!r} does not exist (expected an ImageFolder root)"
                )
        elif params.data_path:
            problems.append(
                f"data_path {params.data_path!r} is set but images is {params.images!r} (set images: folder)"
            )
        return problems

    # -- one point ---------------------------------------------------------------------

    def bench(self, model: nn.Module, point: SwinPoint, ctx: RunContext) -> Bench:
        p = point.workload_params
        dev, dtype = point.device, point.dtype
        inputs: SwinInputs = ctx.inputs(_input_key(p, point.seed, dev),
                                        lambda: load_inputs(p, point.seed, dev))
        calib = ctx.derived(_calib_key(p, point.seed, dev), lambda: load_calib(p, point.seed, dev))
        transform = create_method(self.name, point.method, point.method_params)
        qmodel = transform(model, calib, seed=point.seed)
        windows = [tuple(stage.blocks[0].window_size) for stage in qmodel.layers]

        def fn() -> torch.Tensor:
            with torch.inference_mode(), autocast(dev, dtype):
                return qmodel(inputs.images)

        fn()  # untimed: records the routes of the timed batch for the work counters
        counters = work_counters(qmodel, p.act_act_convention)
        counters["work_flops"] = 2.0 * counters["work_macs"] * p.batch  # the timed batch, float work

        def evaluate(_out: torch.Tensor) -> dict[str, float]:
            test = capture(qmodel, inputs.eval_images, p.batch, dev, dtype)
            row: dict[str, float] = {}
            if inputs.labels is not None:
                row["q_top1"] = float((test.logits.argmax(-1) == inputs.labels).double().mean())
            row.update(score_spread(test, windows))
            if p.diag_images and point.method == "mixaq":
                row.update(self._sensitivity(model, point, ctx, inputs, calib))
            if ctx.reference_method is None:
                return row
            if ctx.is_reference(point) and dtype == "float32":
                return row  # identical to itself: no fidelity columns
            ref = self._reference(model, point, ctx, inputs, calib)
            row.update(fidelity_metrics(ref, test, windows))
            return row

        return Bench(fn=fn, evaluate=evaluate, counters=counters, info=weights_info(model))

    def _sensitivity(
        self, model: nn.Module, point: SwinPoint, ctx: RunContext, inputs: SwinInputs, calib: torch.Tensor
    ) -> dict[str, float]:
        """fid_imp_sens_* of a mixaq point: Spearman correlation, per stage, between a window's L2
        importance and the logit error it adds when it alone runs at ``a_bits_low`` (see
        :mod:`harness.quant.sensitivity`), on the first ``diag_images`` evaluated images. It depends
        on the bit widths, not on the ratio or the importance mode: cached per bit configuration."""
        p = point.workload_params
        mp: MixAQParams = point.method_params
        probe = sensitivity_probe(mp)
        key = ("sensitivity", self.model_key(point), probe, p.diag_images)

        def make() -> dict[str, float]:
            qm = make_mixaq(probe)(model, calib, seed=point.seed)
            per_stage = importance_sensitivity(qm, inputs.eval_images[: p.diag_images], DIAG_MIN_WINDOWS)
            return spearman_columns(per_stage)

        return dict(ctx.derived(key, make))

    def _reference(
        self, model: nn.Module, point: SwinPoint, ctx: RunContext, inputs: SwinInputs, calib: torch.Tensor
    ) -> Captured:
        """The reference method's outputs on the evaluation images, in float32, cached per input."""
        p = point.workload_params

        def make() -> Captured:
            transform = create_method(self.name, ctx.reference_method, ctx.reference_params)
            ref_model = transform(model, calib, seed=point.seed)
            return capture(ref_model, inputs.eval_images, p.batch, point.device, "float32")

        return ctx.reference(self.model_key(point), make)

    def metrics(self) -> dict[str, MetricInfo]:
        def fid(help_: str, up: bool, tol: float | None = None, unit: str = "") -> MetricInfo:
            return MetricInfo("fidelity", help_, higher_is_better=up, unit=unit, tolerance=tol)

        def work(help_: str, up: bool | None, unit: str = "", cost_axis: bool = False) -> MetricInfo:
            return MetricInfo("work", help_, higher_is_better=up, unit=unit, tolerance=0.0,
                              cost_axis=cost_axis)

        out = {
            "q_top1": MetricInfo(
                "quality",
                "top-1 accuracy on the evaluated images (images: folder or shapes, which have labels)",
                higher_is_better=True,
                tolerance=0.01,
            ),
            "fid_logit_kl": fid(
                "KL(reference || test) of the class softmax, mean over images", False, 0.01, "nat"
            ),
            "fid_top1_agree": fid("fraction of images whose top-1 class matches the reference", True, 0.02),
            "fid_sqnr_db": fid(
                f"SQNR of the final features (after the last norm) vs the reference; "
                f"{SQNR_CAP_DB:g} = identical",
                True,
                0.5,
                "dB",
            ),
            "fid_sqnr_high_db": fid(
                "mean over stages (>= 2 windows) of the stage-output SQNR over the top "
                "half of windows by reference L2 importance",
                True,
                0.5,
                "dB",
            ),
            "fid_sqnr_low_db": fid("same over the bottom half of windows (low importance)", True, 0.5, "dB"),
            "work_macs": work(
                "multiply-accumulates per image actually executed (pruned windows excluded)", False, "MAC"
            ),
            "work_bops": work(
                "bit operations per image: MACs x operand bits (see harness.metrics.work)", False, "BOP",
                cost_axis=True,
            ),
            "work_bops_speedup": work(
                "BOPs of uniform W{w}A{ref} (mixaq/sparsevit: a_bits_high/a_bits; "
                "uniform: ref_a_bits) divided by this point's BOPs",
                True,
                "x",
            ),
            "work_eq_act_bits": work("uniform block activation bits with the same BOPs", False, "bit"),
            "work_flops": work("FLOPs of the timed batch (2 x MACs x batch; the float work, which fake "
                               "quantization does not reduce)", None, "FLOP"),
            "work_low_window_frac": work("fraction of block windows run in the low-bit branch", None),
            "work_pruned_window_frac": work("fraction of block windows pruned (block skipped)", None),
        }
        for i in range(N_STAGES):
            out[f"fid_sqnr_stage{i}_db"] = fid(
                f"SQNR of stage {i}'s output vs the reference", True, 0.5, "dB"
            )
            out[f"fid_cos_stage{i}"] = fid(
                f"mean per-token cosine similarity of stage {i}'s output", True, 0.01
            )
            out[f"work_score_cv_stage{i}"] = work(
                f"spread of stage {i}'s L2 window importance: std / mean over an image's windows "
                "(regular partition, the evaluated model's stage input), mean over images; >= 2 windows",
                None,
            )
            out[f"fid_imp_sens_spearman_stage{i}"] = fid(
                f"mixaq, diag_images > 0: Spearman correlation between stage {i}'s L2 window importance "
                f"and the logit error a window adds when it alone runs at a_bits_low, mean over images "
                f"(stages with >= {DIAG_MIN_WINDOWS} windows)",
                True,
                0.05,
            )
        out["fid_imp_sens_spearman"] = fid(
            "mean over stages of fid_imp_sens_spearman_stage{i}: does the importance rank windows by "
            "how much their low-bit error costs (1: perfectly, 0: no relation)",
            True,
            0.05,
        )
        return out


# ----------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class FP32Params:
    """The float model, no quantization (the reference)."""


def _identity(model: nn.Module, calib_images: torch.Tensor | None = None, seed: int = 0) -> nn.Module:
    return model


@register_method("fp32", params=FP32Params, workloads=("swin", "swin-det"),
                 doc="float32 model, no quantization")
def make_fp32(params: FP32Params) -> Any:
    """The ``fp32`` method: the identity transform (the reference)."""
    return _identity



