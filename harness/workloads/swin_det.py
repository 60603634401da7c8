"""``swin-det``: a Swin-T Mask R-CNN whose backbone runs under fake quantization (uniform, MixA-Q,
window pruning), scored by COCO box and mask mAP: the setting of MixA-Q's own results.

One point: build the float detector (:mod:`harness.models.swin_det`: a timm Swin backbone, torchvision's
FPN and Mask R-CNN heads; random seeded weights, a trained proxy, or a local mmdetection checkpoint),
apply the method's transform to a copy of the *backbone* exactly as the ``swin`` workload applies it
to the classifier (calibration here, outside the timed region, on images the detector's own transform
prepared), put it back into a copy of the detector, then time the detector's forward on one batch.
The FPN and the heads stay float, as in MixA-Q (it quantizes the backbone's blocks).

As in ``swin``, latency of fake quantization is not a speedup: compare ``work_bops`` (the backbone's
bit operations, the measure of MixA-Q's tables) and ``work_bops_model`` (the whole detector, heads at
32 bits) at equal quality.

Inputs (``images``):

- ``scenes``: the procedural detection scenes of :mod:`harness.data.det_scenes` (few small objects of
  5 hue classes among grey lures; the set the detection proxy trained on), at the model's input size:
  the first ``eval_images`` scenes of the held-out seed, whatever the point's seed; calibration scenes
  come from another seed. Ground truth is built in memory and scored by pycocotools.
- ``coco``: a COCO-format folder at ``data_path`` (``annotations/instances_val2017.json``,
  ``val2017/``), resized mmdet's way (:mod:`harness.data.coco`): evaluation takes the first images by
  id, calibration the last ``calib_images`` (they never overlap).

Columns: ``q_bbox_map`` / ``q_bbox_map50`` / ``q_bbox_map75`` / ``q_segm_map`` / ``q_segm_map50``
(pycocotools, on the evaluated images); fidelity of the backbone's stage outputs against the reference
method (SQNR and cosine per stage, SQNR over high / low importance windows) on the first
``compare_images`` of them; work counters per image of the timed batch's input size.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN

from harness.data import det_scenes
from harness.data.coco import ImageRecord, load_coco_gt, read_coco, write_coco_gt
from harness.measure.devices import autocast
from harness.methods.mixaq import MixAQParams, make_mixaq, sensitivity_probe
from harness.metrics import fidelity
from harness.metrics import work as W
from harness.metrics.coco_eval import IOU_TYPES, coco_results, score_results
from harness.models.seam import name_modules
from harness.models.swin_det import (
    COCO_CLASSES,
    DET_MODELS,
    URL_PREFIXES,
    backbone_of,
    checkpoint_file,
    load_detector_weights,
)
from harness.models.weights import Weights, check_weights, file_sha256, resolve_weights
from harness.params import param
from harness.quant.sensitivity import importance_sensitivity, score_cv, spearman_columns, stage_outputs
from harness.registry import create_method, register_workload
from harness.workloads.base import (
    Bench,
    MetricInfo,
    Point,
    RunContext,
    Workload,
    attach_weights,
    weights_info,
)
from harness.workloads.swin import (
    DIAG_MIN_WINDOWS,
    SQNR_CAP_DB,
    energy_db,
    split_energies,
    work_counters,
)

IMAGE_SOURCES = ("scenes", "coco")
CALIB_SCENE_SEED = det_scenes.VAL_SEED - 1
"""Calibration scenes come from this set: neither the training set nor the held-out one."""
N_STAGES = 4
DIAG_CHUNK = 16
"""Copies of an image per forward in the importance-vs-sensitivity diagnostic (one per window)."""
HEAD_BITS = W.FLOAT_BITS
"""The FPN and the heads run float: their MACs count at 32 x 32 bits in ``work_bops_model``."""
QUALITY = {  # column -> pycocotools stat
    "q_bbox_map": "bbox_mAP",
    "q_bbox_map50": "bbox_mAP_50",
    "q_bbox_map75": "bbox_mAP_75",
    "q_segm_map": "segm_mAP",
    "q_segm_map50": "segm_mAP_50",
}


@dataclass(frozen=True)
class SwinDetParams:
    """What a swin-det point runs on (names are what suites sweep)."""

    model: str = param(
        "swin_det_proxy",
        "detector: swin_t (mmdetection's Mask R-CNN Swin-T, 80 COCO classes, 800 x 1333), "
        "swin_det_proxy (the harness's trained proxy, 5 classes, 448 px scenes) or swin_det_micro "
        "(tiny, for tests)",
        choices=tuple(DET_MODELS),
    )
    images: str = param(
        "scenes",
        "input images: scenes (procedural detection scenes at the model's input size, held-out seed) "
        "or coco (a COCO-format folder at data_path)",
        choices=IMAGE_SOURCES,
    )
    data_path: str = param(
        "", "COCO-format folder (annotations/instances_val2017.json, val2017/) when images=coco")
    checkpoint: str = param(
        "", "weights: empty = random init from seed; proxy:swin-det-proxy; a local file in mmdetection's "
        "layout (mask_rcnn_swin-t-p4-w7_fpn_*.pth) or the harness's; hf:ORG/NAME/FILE (Hugging Face "
        "cache); an mmdetection release URL (read from the torch hub cache, never downloaded)")
    batch: int = param(1, "images in the timed forward (mmdetection tests one at a time)", range=(1, 4096))
    eval_images: int = param(0, "images scored for mAP (0: the timed batch)", range=(0, 1_000_000))
    calib_images: int = param(
        1, "images calibrating activation ranges (RepQ-ViT on COCO: one)", range=(1, 100_000))
    compare_images: int = param(
        4, "evaluated images whose backbone stage outputs are compared with the reference", range=(0, 1000))
    diag_images: int = param(
        0, "mixaq: images for the importance-vs-sensitivity diagnostic (fid_imp_sens_*; 0: off): the first "
        "evaluated images of the timed batch's input size", range=(0, 1000))
    act_act_convention: str = param(
        "linear",
        "BOPs of q.k^T and attn.v: linear (b_w*b_a, as the MixA-Q tables) or product (b_a*b_a)",
        choices=W.ACT_ACT_CONVENTIONS,
    )


@dataclass
class DetInputs:
    """images: the evaluated images, [3, H_i, W_i] each in 0..1 (the first ``batch`` are timed);
    records: their COCO records; gt: the ground truth (pycocotools ``COCO``)."""

    images: list[torch.Tensor]
    records: list[ImageRecord]
    gt: Any


@dataclass
class StageCapture:
    """Backbone stage tensors of some images, one entry per forward chunk (float32, CPU):
    out[c][i]: [n, H_i, W_i, C_i] stage i's output; tok[c][i]: [n, H_i, W_i] per-token mean |x| of
    stage i's input (after downsample)."""

    out: list[list[torch.Tensor]]
    tok: list[list[torch.Tensor]]


def scene_inputs(cfg: det_scenes.DetScenesConfig, seed: int, n: int) -> DetInputs:
    """The first ``n`` scenes of set ``seed`` with their ground truth (built through a COCO JSON,
    the same path a COCO folder takes)."""
    scenes = [det_scenes.make_det_scene(cfg, seed, i) for i in range(n)]
    images, annotations, categories = det_scenes.coco_entries(cfg, scenes)
    with tempfile.TemporaryDirectory(prefix="harness-scenes-") as tmp:
        gt = load_coco_gt(write_coco_gt(Path(tmp) / "gt.json", images, annotations, categories))
    S = cfg.img_size
    records = [ImageRecord(image_id=img["id"], path=Path(f"scene:{seed}/{i}"), orig_hw=(S, S),
                           resized_hw=(S, S), scale_factor=(1.0, 1.0)) for i, img in enumerate(images)]
    # rounded to 8 bits, as a saved scene is (and as the proxy trained and was scored)
    return DetInputs(images=[det_scenes.quantize_pixels(s.image) for s in scenes], records=records, gt=gt)


def scene_config(p: SwinDetParams) -> det_scenes.DetScenesConfig:
    """The scenes at the model's (square) input size; below the default size (448 px) the objects
    and lures shrink in proportion."""
    size, base = DET_MODELS[p.model].min_size, det_scenes.DetScenesConfig()
    if size >= base.img_size:
        return dataclasses.replace(base, img_size=size)
    f = size / base.img_size
    return dataclasses.replace(
        base, img_size=size, radius_px=(base.radius_px[0] * f, base.radius_px[1] * f),
        lure_radius_px=(base.lure_radius_px[0] * f, base.lure_radius_px[1] * f))


def load_inputs(p: SwinDetParams) -> DetInputs:
    """The evaluated images (the timed batch first) and their ground truth."""
    n = max(p.eval_images or p.batch, p.batch)
    if p.images == "scenes":
        return scene_inputs(scene_config(p), det_scenes.VAL_SEED, n)
    cfg = DET_MODELS[p.model]
    ds = read_coco(p.data_path, limit=n, short_side_px=cfg.min_size, max_long_side_px=cfg.max_size)
    if len(ds) < n:
        raise ValueError(f"COCO folder {p.data_path} has {len(ds)} images; the point needs {n}")
    images = [ds[i][0] for i in range(len(ds))]
    return DetInputs(images=images, records=list(ds.records), gt=ds.coco)


def load_calib(p: SwinDetParams) -> list[torch.Tensor]:
    """Calibration images, disjoint from the evaluated ones: [3, H_i, W_i] each in 0..1."""
    if p.images == "scenes":
        cfg = scene_config(p)
        return [det_scenes.quantize_pixels(det_scenes.make_det_scene(cfg, CALIB_SCENE_SEED, i).image)
                for i in range(p.calib_images)]
    cfg = DET_MODELS[p.model]
    ds = read_coco(p.data_path, short_side_px=cfg.min_size, max_long_side_px=cfg.max_size)
    n_used = max(p.eval_images or p.batch, p.batch)
    if n_used + p.calib_images > len(ds):
        raise ValueError(
            f"COCO folder {p.data_path} has {len(ds)} images: not enough for {n_used} evaluated + "
            f"{p.calib_images} calibration images (they must not overlap)"
        )
    return [ds[i][0] for i in range(len(ds) - p.calib_images, len(ds))]


def backbone_input(model: MaskRCNN, images: list[torch.Tensor], device: str) -> torch.Tensor:
    """What the backbone sees for ``images``: the detector's transform (normalize, resize if needed,
    pad the batch to a multiple of 32) -> [N, 3, H, W]."""
    with torch.inference_mode():
        return model.transform([im.to(device) for im in images])[0].tensors


def quantized_detector(model: MaskRCNN, body: nn.Module) -> MaskRCNN:
    """A copy of ``model`` with ``body`` as its backbone's Swin (``model`` itself is not changed)."""
    return copy.deepcopy(model, memo={id(backbone_of(model)): body})


def body_at(float_body: nn.Module, hw: tuple[int, int]) -> nn.Module:
    """A copy of the float backbone whose recorded geometry (patch grid, the blocks' maps) is that of
    a ``hw`` (pixels) input, windows unchanged: what the methods transform, so that BOPs counters and
    SparseViT's prune-ratio solver see the detection resolution (the backbone runs at any size)."""
    body = copy.deepcopy(float_body)
    body.set_input_size(img_size=hw, window_size=tuple(body.layers[0].blocks[0].window_size))
    return body


def head_macs(model: MaskRCNN, run: Any) -> float:
    """Multiply-accumulates of the convolutions and linear layers outside the backbone's Swin (FPN,
    RPN, box and mask heads) during ``run()``, in total (RoIAlign, NMS and mask pasting not counted)."""
    inside = {id(m) for m in backbone_of(model).modules()}
    total = [0.0]

    def conv(m: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        total[0] += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def deconv(m: nn.ConvTranspose2d, inp: Any, _out: torch.Tensor) -> None:
        total[0] += inp[0].numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        total[0] += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if id(m) in inside:
            continue
        if isinstance(m, nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(deconv))
        elif isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def detect(
    model: MaskRCNN, images: list[torch.Tensor], batch: int, device: str, dtype: str, gt: Any,
    records: list[ImageRecord], capture_first: int = 0,
) -> tuple[dict[str, list[dict]], StageCapture]:
    """Run the detector over ``images`` in chunks of ``batch``; -> (COCO results per iou type, the
    backbone's stage tensors of the first ``capture_first`` images). Results are made per chunk, so
    no chunk's masks stay in memory."""
    body = backbone_of(model)
    store: dict[str, list[torch.Tensor]] = {"out": [], "tok": []}
    handles = []
    for stage in body.layers:
        handles.append(stage.register_forward_hook(
            lambda _m, _a, y: store["out"].append(y.detach().float().cpu())))
        handles.append(stage.downsample.register_forward_hook(
            lambda _m, _a, y: store["tok"].append(y.detach().float().abs().mean(-1).cpu())))
    results: dict[str, list[dict]] = {t: [] for t in IOU_TYPES}
    cap = StageCapture(out=[], tok=[])
    try:
        with torch.inference_mode(), autocast(device, dtype):
            for s in range(0, len(images), batch):
                store["out"], store["tok"] = [], []
                preds = model([im.to(device) for im in images[s : s + batch]])
                preds = [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in p.items()}
                         for p in preds]
                for t, res in coco_results(gt, records[s : s + batch], preds).items():
                    results[t] += res
                if s < capture_first:
                    cap.out.append(store["out"])
                    cap.tok.append(store["tok"])
    finally:
        for h in handles:
            h.remove()
    return results, cap


def stage_fidelity(ref: StageCapture, test: StageCapture, windows: list[tuple[int, int]]) -> dict[str, float]:
    """fid_* columns of the backbone's stage outputs: energies summed over the captured chunks."""
    row: dict[str, float] = {}
    hi_db, lo_db = [], []
    for i, win in enumerate(windows):
        sig = noise = 0.0
        cos, n_tok = 0.0, 0
        split = [0.0, 0.0, 0.0, 0.0]
        has_split = False
        for r_out, r_tok, t_out in zip((c[i] for c in ref.out), (c[i] for c in ref.tok),
                                       (c[i] for c in test.out)):
            sig += float(r_out.double().pow(2).sum())
            noise += float((r_out.double() - t_out.double()).pow(2).sum())
            cos += fidelity.cosine_similarity(r_out, t_out, dim=-1) * r_out[..., 0].numel()
            n_tok += r_out[..., 0].numel()
            e = split_energies(r_out, r_tok, t_out, win)
            if e is not None:
                has_split = True
                split = [a + b for a, b in zip(split, e)]
        if not n_tok:
            continue
        row[f"fid_sqnr_stage{i}_db"] = energy_db(sig, noise)
        row[f"fid_cos_stage{i}"] = cos / n_tok
        if has_split:
            hi_db.append(energy_db(split[0], split[1]))
            lo_db.append(energy_db(split[2], split[3]))
    if hi_db:
        row["fid_sqnr_high_db"] = sum(hi_db) / len(hi_db)
        row["fid_sqnr_low_db"] = sum(lo_db) / len(lo_db)
    return row


def score_spread(cap: StageCapture, windows: list[tuple[int, int]]) -> dict[str, float]:
    """work_score_cv_stage{i}: :func:`harness.quant.sensitivity.score_cv` (std / mean of stage i's L2
    window scores per image, as the ``swin`` workload reports it), mean over the captured images
    (stages with >= 2 windows)."""
    row = {}
    for i, win in enumerate(windows):
        cvs = [cv for chunk in cap.tok if (cv := score_cv(chunk[i], win)) is not None]
        if cvs:
            row[f"work_score_cv_stage{i}"] = float(torch.cat(cvs).mean())
    return row


SwinDetPoint = Point[SwinDetParams, Any]


@register_workload
class SwinDetWorkload(Workload[SwinDetParams, MaskRCNN]):
    name = "swin-det"
    Params = SwinDetParams
    doc = (
        "Swin-T Mask R-CNN (timm backbone, torchvision heads) with the backbone under fake quantization "
        "(uniform, MixA-Q, window pruning); COCO box/mask mAP beside the backbone's BOPs"
    )

    def model_key(self, point: SwinDetPoint) -> tuple:
        p = point.workload_params
        return ("swin-det", p.model, p.checkpoint, point.device, point.dtype, point.seed)

    def build_model(self, point: SwinDetPoint) -> MaskRCNN:
        p = point.workload_params
        if p.checkpoint.startswith(URL_PREFIXES):  # an mmdetection release, from the torch hub cache
            path = checkpoint_file(p.checkpoint)
            weights = Weights(spec=p.checkpoint, path=path, label=path.name, sha256=file_sha256(path))
        else:
            weights = resolve_weights(p.checkpoint)
        model = DET_MODELS[p.model].build(seed=point.seed)
        if weights.path is not None:
            load_detector_weights(model, weights.path)
        name_modules((f"stage.{i}", stage) for i, stage in enumerate(backbone_of(model).layers))
        return attach_weights(model.to(point.device).eval(), weights)

    def check_paths(self, params: Any) -> list[str]:
        problems = [] if params.checkpoint.startswith(URL_PREFIXES) else check_weights(params.checkpoint)
        if params.images == "coco":
            if not params.checkpoint and DET_MODELS[params.model].num_classes == COCO_CLASSES:
                problems.append(f"images: coco with model {params.model} needs a checkpoint (random weights "
                                "score nothing on COCO): e.g. checkpoint=/path/mask_rcnn_swin-t-p4-w7_fpn_"
                                "ms-crop-3x_coco_20210906_131725-bacf6f7b.pth, mmdetection's release")
            if not params.data_path:
                problems.append("images: coco needs data_path (a COCO-format folder with "
                                "annotations/instances_val2017.json and val2017/)")
            elif not Path(params.data_path).is_dir():
                problems.append(f"data_path {params.data_path!r} does not exist (expected a COCO folder)")
        elif params.data_path:
            problems.append(f"data_path {params.data_path!r} is set but images is {params.images!r} "
                            "(set images: coco)")
        return problems

    # -- one point ---------------------------------------------------------------------

    def bench(self, model: MaskRCNN, point: SwinDetPoint, ctx: RunContext) -> Bench:
        p = point.workload_params
        dev, dtype = point.device, point.dtype
        inputs: DetInputs = ctx.inputs(("swin-det.inputs", p.model, p.images, p.data_path, p.batch,
                                        p.eval_images), lambda: load_inputs(p))
        calib = ctx.derived(("swin-det.calib", p.model, p.images, p.data_path, p.calib_images, dev),
                            lambda: backbone_input(model, load_calib(p), dev))
        timed = [im.to(dev) for im in inputs.images[: p.batch]]
        hw = tuple(backbone_input(model, timed, dev).shape[-2:])
        body = ctx.derived(("swin-det.body", self.model_key(point), hw),
                           lambda: body_at(backbone_of(model), hw))
        transform = create_method(self.name, point.method, point.method_params)
        qbody = transform(body, calib, seed=point.seed)
        qmodel = quantized_detector(model, qbody)
        windows = [tuple(stage.blocks[0].window_size) for stage in body.layers]

        def fn() -> list[dict[str, torch.Tensor]]:
            with torch.inference_mode(), autocast(dev, dtype):
                return qmodel(timed)

        macs_heads = head_macs(qmodel, fn) / p.batch  # untimed: also records the backbone's routes
        counters = work_counters(qbody, p.act_act_convention)
        ref_bops = counters["work_bops"] * counters["work_bops_speedup"]
        heads_bops = macs_heads * HEAD_BITS * HEAD_BITS
        counters.update({
            "work_macs_heads": macs_heads,
            "work_bops_model": counters["work_bops"] + heads_bops,
            "work_bops_speedup_model": (ref_bops + heads_bops) / (counters["work_bops"] + heads_bops),
            "work_flops": 2.0 * (counters["work_macs"] + macs_heads) * p.batch,
            "work_input_px": float(hw[0] * hw[1]),
        })

        def evaluate(_out: Any) -> dict[str, float]:
            n_fid = min(p.compare_images, len(inputs.images))
            results, test = detect(qmodel, inputs.images, p.batch, dev, dtype, inputs.gt, inputs.records,
                                   capture_first=n_fid)
            stats = score_results(inputs.gt, results, [r.image_id for r in inputs.records])
            row = {col: stats[name] for col, name in QUALITY.items()}
            row.update(score_spread(test, windows))
            if p.diag_images and point.method == "mixaq":
                row.update(self._sensitivity(model, body, point, ctx, inputs, calib))
            if ctx.reference_method is None or (ctx.is_reference(point) and dtype == "float32") or not n_fid:
                return row
            ref = self._reference(model, body, point, ctx, inputs, calib, n_fid)
            row.update(stage_fidelity(ref, test, windows))
            return row

        return Bench(fn=fn, evaluate=evaluate, counters=counters, info=weights_info(model))

    def _sensitivity(
        self, model: MaskRCNN, body: nn.Module, point: SwinDetPoint, ctx: RunContext, inputs: DetInputs,
        calib: torch.Tensor,
    ) -> dict[str, float]:
        """fid_imp_sens_* of a mixaq point: Spearman correlation, per stage, between a window's L2
        importance and the error it adds to the backbone's stage outputs (the FPN's inputs; the sum
        over stages of each stage's mean squared error) when it alone runs at ``a_bits_low``, on the
        first ``diag_images`` evaluated images whose backbone input has the timed batch's size (all
        of them for scenes). Cached per bit configuration (and QAT weights), not per ratio."""
        p = point.workload_params
        mp: MixAQParams = point.method_params
        probe = sensitivity_probe(mp)
        hw = tuple(body.patch_embed.img_size)
        key = ("swin-det.sensitivity", self.model_key(point), hw, probe, p.diag_images)

        def make() -> dict[str, float]:
            qm = make_mixaq(probe)(body, calib, seed=point.seed)
            images = []
            for im in inputs.images:
                x = backbone_input(model, [im], point.device)
                if tuple(x.shape[-2:]) == hw:
                    images.append(x)
                if len(images) == p.diag_images:
                    break
            per_stage = importance_sensitivity(qm, torch.cat(images), DIAG_MIN_WINDOWS, outputs=stage_outputs,
                                               chunk=DIAG_CHUNK)
            return spearman_columns(per_stage)

        return dict(ctx.derived(key, make))

    def _reference(
        self, model: MaskRCNN, body: nn.Module, point: SwinDetPoint, ctx: RunContext, inputs: DetInputs,
        calib: torch.Tensor, n_fid: int,
    ) -> StageCapture:
        """The reference method's backbone stage tensors on the first ``n_fid`` images, float32."""
        p = point.workload_params

        def make() -> StageCapture:
            transform = create_method(self.name, ctx.reference_method, ctx.reference_params)
            ref_model = quantized_detector(model, transform(body, calib, seed=point.seed))
            _, cap = detect(ref_model, inputs.images[:n_fid], p.batch, point.device, "float32", inputs.gt,
                            inputs.records[:n_fid], capture_first=n_fid)
            return cap

        return ctx.reference(self.model_key(point) + (n_fid,), make)

    def metrics(self) -> dict[str, MetricInfo]:
        def q(help_: str) -> MetricInfo:
            return MetricInfo("quality", help_, higher_is_better=True, tolerance=0.01)

        def fid(help_: str, tol: float, unit: str = "") -> MetricInfo:
            return MetricInfo("fidelity", help_, higher_is_better=True, unit=unit, tolerance=tol)

        def work(help_: str, up: bool | None, unit: str = "", cost_axis: bool = False) -> MetricInfo:
            return MetricInfo("work", help_, higher_is_better=up, unit=unit, tolerance=0.0,
                              cost_axis=cost_axis)

        out = {
            "q_bbox_map": q("COCO box mAP (IoU 0.50:0.95, pycocotools) on the evaluated images"),
            "q_bbox_map50": q("COCO box AP at IoU 0.50"),
            "q_bbox_map75": q("COCO box AP at IoU 0.75"),
            "q_segm_map": q("COCO mask mAP (IoU 0.50:0.95)"),
            "q_segm_map50": q("COCO mask AP at IoU 0.50"),
            "fid_sqnr_high_db": fid(
                "mean over backbone stages (>= 2 windows) of the stage-output SQNR over the top half of "
                "windows by reference L2 importance", 0.5, "dB"),
            "fid_sqnr_low_db": fid("same over the bottom half of windows (low importance)", 0.5, "dB"),
            "work_macs": work("backbone multiply-accumulates per image actually executed (pruned windows "
                              "excluded), at the timed batch's input size", False, "MAC"),
            "work_bops": work("backbone bit operations per image: MACs x operand bits (the measure of "
                              "MixA-Q's tables)", False, "BOP", cost_axis=True),
            "work_bops_speedup": work("backbone BOPs of uniform W{w}A{ref} / this point's", True, "x"),
            "work_eq_act_bits": work("uniform activation bits with the same backbone BOPs", False, "bit"),
            "work_low_window_frac": work("fraction of backbone block windows run low-bit", None),
            "work_pruned_window_frac": work("fraction of backbone block windows pruned", None),
            "work_macs_heads": work("MACs per image of the FPN, RPN, box and mask heads (convolutions and "
                                    "linear layers; float)", None, "MAC"),
            "work_bops_model": work(f"whole-detector BOPs per image: work_bops + heads' MACs x "
                                    f"{HEAD_BITS} x {HEAD_BITS}", False, "BOP"),
            "work_bops_speedup_model": work("whole-detector BOPs of the reference bit width divided by "
                                            "this point's", True, "x"),
            "work_flops": work("FLOPs of the timed batch (2 x all MACs x batch)", None, "FLOP"),
            "work_input_px": work("pixels of the backbone's input (timed batch, padded)", None, "px"),
        }
        for i in range(N_STAGES):
            out[f"fid_sqnr_stage{i}_db"] = fid(
                f"SQNR of backbone stage {i}'s output vs the reference; {SQNR_CAP_DB:g} = identical",
                0.5, "dB")
            out[f"fid_cos_stage{i}"] = fid(f"mean per-token cosine similarity of backbone stage {i}'s output",
                                           0.01)
            out[f"work_score_cv_stage{i}"] = work(
                f"spread of backbone stage {i}'s L2 window importance: std / mean over an image's windows, "
                "mean over the captured images; >= 2 windows", None)
            out[f"fid_imp_sens_spearman_stage{i}"] = fid(
                f"mixaq, diag_images > 0: Spearman correlation between backbone stage {i}'s L2 window "
                "importance and the stage-output error a window adds when it alone runs at a_bits_low, "
                f"mean over images (stages with >= {DIAG_MIN_WINDOWS} windows)", 0.05)
        out["fid_imp_sens_spearman"] = fid(
            "mean over stages of fid_imp_sens_spearman_stage{i}: does the importance rank windows by how "
            "much their low-bit error costs (1: perfectly, 0: no relation)", 0.05)
        return out
