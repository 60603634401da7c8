"""``vggt``: VGGT on multi-view scenes, with an attention method on its global attention.

One point = a model (preset + random weights, a local checkpoint, an ``hf:`` hub file or a
trained ``proxy:``; see :mod:`harness.models.weights`) + inputs (a synthetic scene with exact
ground truth, or 7-Scenes / NRGBD / ScanNet frames read from a local folder) + an attention method
plugged into every global-attention layer through the seam of
:mod:`harness.models.seam`. Two scopes:

- ``scope: model`` times the whole forward (aggregator + the selected heads), as the
  papers' end-to-end "time".
- ``scope: attention`` times the attention core of one global layer (``layer``) on the
  real q, k, v that layer sees for these inputs: the part the methods replace. The q/k/v
  are captured once per input and reused by every method.

Columns (see :meth:`VGGTWorkload.metrics`): task quality vs ground truth (``q_*``: depth
AbsRel / delta<1.25 with per-frame median scaling, pose AUC@30 / relative errors / ATE,
point-cloud Acc / Comp / NC from depth + predicted cameras after a Sim(3) alignment, as the
HTTM and FastVGGT evaluations build point clouds), fidelity vs the suite's reference method
on the same input (``fid_*``), and work counters (``work_*``: kept Q and K/V tokens, padding,
attention FLOPs). With random weights the ``q_*`` columns measure an untrained network and
say nothing about a method; ``fid_*`` columns are meaningful either way.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.data.readers import Frames, read_7scenes, read_nrgbd, read_scannet, to_model_input
from harness.data.scenes import SceneConfig, render_scene
from harness.measure.devices import autocast, torch_dtype
from harness.metrics import fidelity, geometry
from harness.models.seam import (
    AttentionFn,
    AttentionLayout,
    GradCalibration,
    GradProbe,
    Recorder,
    VGGTMethod,
    sdpa_attention,
)
from harness.models.vggt import PRESETS, build_vggt, load_checkpoint, pose_encoding_to_extri_intri
from harness.models.weights import check_weights, resolve_weights
from harness.params import param
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
from harness.workloads.vggt_grad import grad_calibration, qkv_grads_only

log = logging.getLogger(__name__)

HEAD_SETS = {"camera,depth": ("camera", "depth"), "camera,depth,point": ("camera", "depth", "point")}
#: Most tokens kept per cached activation used for the token-cosine fidelity column.
TOKEN_SAMPLE_MAX = 65536
#: Most points used for Acc / Comp nearest neighbours.
MAX_POINTS = 20000
#: First synthetic scene seed of the vggt-proxy's held-out set (its training pool uses smaller seeds).
HELDOUT_SCENE_SEED = 1_000_000
#: Added to a point's scene seed for the synthetic scene a method calibrates on (never trained on by the
#: vggt-proxy, never evaluated by any point).
CALIB_SCENE_OFFSET = 2_000_000


@dataclass(frozen=True)
class VGGTParams:
    """Workload knobs (names are what suites set and sweep)."""

    preset: str = param("vggt-tiny", "model shape (harness list shows the presets)", choices=tuple(PRESETS))
    checkpoint: str = param(
        "", "weights: empty = random; a local .pt/.safetensors file; hf:ORG/NAME[/FILE] (Hugging Face hub "
        "cache, e.g. hf:facebook/VGGT-1B); proxy:NAME (a trained proxy under harness/proxies/)")
    lean: bool = param(False, "memory-lean VGGT*: keep only the layers the heads read (bf16 on CUDA)")
    frames: int = param(8, "number of input frames S", range=(1, None))
    height: int = param(392, "input height in px for synthetic scenes (multiple of 14)", range=(14, None))
    width: int = param(518, "input width in px (multiple of 14); datasets are cropped to it",
                       range=(14, None))
    data: str = param("synthetic", "input source", choices=("synthetic", "7scenes", "nrgbd", "scannet"))
    data_path: str = param("", "dataset root folder for 7scenes / nrgbd / scannet (the scans root)")
    data_scene: str = param("", "scene inside the dataset root (e.g. chess, an NRGBD scene, scene0000_00)")
    data_seq: str = param("seq-01", "7-Scenes sequence folder")
    stride: int = param(10, "keyframe stride for dataset inputs", range=(1, None))
    scene_mode: str = param("video", "synthetic camera path: video (overlapping) or sparse views",
                            choices=("video", "sparse"))
    scene_seed: int = param(-1, "seed of the synthetic scene (-1: the point's seed); the vggt-proxy "
                            f"never saw seeds >= {HELDOUT_SCENE_SEED} in training", range=(-1, None))
    eval_scenes: int = param(1, "synthetic scenes (seeds scene_seed, +1, ...) whose q_/fid_ columns are "
                             "averaged; the first is the one timed (scope=model)", range=(1, None))
    scope: str = param("model", "what is timed: the whole forward, or one global layer's attention core",
                       choices=("model", "attention"))
    layer: int = param(0, "global layer whose attention is timed when scope=attention (below the preset's "
                       "depth)", range=(0, None))
    heads: str = param("camera,depth", "heads run after the aggregator", choices=tuple(HEAD_SETS))

    def __post_init__(self) -> None:
        # cross-field (the preset's patch size): a suite setting this is refused at load, with file and line
        patch = PRESETS[self.preset].patch_size if self.preset in PRESETS else 14
        bad = [name for name in ("height", "width") if getattr(self, name) % patch]
        if bad:
            values = " and ".join(f"{name}={getattr(self, name)}" for name in bad)
            what = "is not a multiple" if len(bad) == 1 else "are not multiples"
            nearest = "; ".join(_nearest_multiples(getattr(self, name), patch, name) for name in bad)
            raise ValueError(f"{values} {what} of the patch size {patch} of preset {self.preset!r} "
                             f"(allowed: multiples of {patch}; nearest: {nearest})")


def _nearest_multiples(value: int, step: int, name: str) -> str:
    """``"height 98 or 112"``: the multiples of ``step`` around ``value`` (at least ``step``)."""
    lo = max(step, value // step * step)
    return f"{name} {lo} or {lo + step}" if lo < value else f"{name} {lo}"


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


# ----------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """Model inputs with ground truth. images: [S, 3, H, W] on the device; the rest on CPU."""

    images: torch.Tensor
    frames: Frames
    gt_points: torch.Tensor  # [S, H, W, 3]

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])


def scene_seed(p: VGGTParams, point_seed: int) -> int:
    """The synthetic scene seed of a point: ``scene_seed``, or the point's seed when it is -1."""
    return point_seed if p.scene_seed < 0 else p.scene_seed


def _input_key(p: VGGTParams, seed: int, device: str) -> tuple:
    return ("vggt.inputs", p.data, p.data_path, p.data_scene, p.data_seq, p.stride, p.frames, p.height,
            p.width, p.scene_mode, seed, device)


def load_inputs(p: VGGTParams, seed: int, device: str) -> Inputs:
    """Render or read the frames of a point and move the images to ``device``."""
    if p.data == "synthetic":
        frames: Frames = render_scene(
            SceneConfig(frames=p.frames, height=p.height, width=p.width, seed=seed, mode=p.scene_mode)
        )
        gt_points = frames.world_points  # type: ignore[attr-defined]
    else:
        if p.data == "7scenes":
            raw = read_7scenes(p.data_path, p.data_scene, seq=p.data_seq, stride=p.stride,
                               max_frames=p.frames)
        elif p.data == "scannet":
            raw = read_scannet(p.data_path, p.data_scene, stride=p.stride, max_frames=p.frames)
        else:
            raw = read_nrgbd(p.data_path, p.data_scene, stride=p.stride, max_frames=p.frames)
        frames = to_model_input(raw, target_w=p.width, mode="crop")
        gt_points = geometry.pointmap_from_depth(frames.depth, frames.intrinsics, frames.extrinsics)
    return Inputs(images=frames.images.to(device), frames=frames, gt_points=gt_points)


# ----------------------------------------------------------------------------- helpers


class _Captured(Exception):
    """Raised by a capturing attention_fn to stop the forward once a layer was seen."""


def _tokens_sample(x: torch.Tensor) -> torch.Tensor:
    """[B, S, P, C] -> at most TOKEN_SAMPLE_MAX token rows [n, C] (evenly strided), float32 on CPU."""
    flat = x.reshape(-1, x.shape[-1])
    step = max(1, flat.shape[0] // TOKEN_SAMPLE_MAX)
    return flat[::step].float().cpu()


def _last_layer_hook(model: torch.nn.Module, store: dict) -> Any:
    """Keep a sample of the global half of the aggregator's last kept layer output."""

    def hook(_module, _args, result):
        outputs = result[0]
        last = outputs[-1] if isinstance(outputs, list) else outputs[max(outputs)]
        C = last.shape[-1] // 2
        store["tokens"] = _tokens_sample(last[..., C:])

    return model.aggregator.register_forward_hook(hook)


def _cameras(out: dict, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """pose_enc -> (extrinsics [S, 3, 4], intrinsics [S, 3, 3]) of batch row 0, float32 CPU."""
    extr, intr = pose_encoding_to_extri_intri(out["pose_enc"][0].float().cpu(), hw)
    return extr, intr


def _pred_points(out: dict, hw: tuple[int, int]) -> torch.Tensor:
    """World points [S, H, W, 3] from the depth head and the predicted cameras."""
    extr, intr = _cameras(out, hw)
    depth = out["depth"][0, ..., 0].float().cpu()
    return geometry.pointmap_from_depth(depth, intr, extr)


def _summarize_recorder(rec: Recorder, layers: int, heads: int, n_tokens: int) -> dict[str, float]:
    """Counters of one forward, as fractions of the unmerged token count per layer and head."""
    full = float(layers * heads * n_tokens)
    out = {
        "work_tokens_q_frac": rec.counters.get("tokens_q", full) / full,
        "work_tokens_kv_frac": rec.counters.get("tokens_kv", full) / full,
        "work_pad_q_frac": rec.counters.get("pad_q", 0.0) / full,
        "work_attn_flops": rec.counters.get("attn_flops", 0.0),
    }
    for name in ("match_flops", "attn_bytes", "agg_bytes", "match_bytes"):
        if rec.counters.get(name):
            out[f"work_{name}"] = rec.counters[name]
    for name in ("index_recompute", "index_reuse"):  # merge indices reused across layers (LiteVGGT)
        if name in rec.counters:
            out[f"work_{name}"] = rec.counters[name]
    if rec.counters.get("kv_blocks"):  # block-sparse attention
        out["work_kept_block_frac"] = rec.counters["kv_blocks_kept"] / rec.counters["kv_blocks"]
    return out


def _call_work(counters: dict[str, float]) -> dict[str, float]:
    """``work_flops`` / ``work_bytes`` of a timed call that is exactly the attention core (its
    attention, matching and merge work; see :mod:`harness.measure.efficiency`)."""
    flops = counters.get("work_attn_flops", 0.0) + counters.get("work_match_flops", 0.0)
    nbytes = sum(counters.get(f"work_{k}_bytes", 0.0) for k in ("attn", "agg", "match"))
    return {"work_flops": flops, "work_bytes": nbytes}


# ----------------------------------------------------------------------------- workload


VGGTPoint = Point[VGGTParams, Any]

_ATTENTION_SCOPE_TRANSFORM = (
    "method {method!r} changes the model's layers (a model transform), but scope: attention times one "
    "global layer's attention core, which no linear layer touches; use scope: model")


def _transforms_model(method: str, method_params: Any) -> bool:
    """Whether a method changes the model's layers (built once here: builds are cheap, the work
    happens in the transform)."""
    try:
        return as_vggt_method(create_method("vggt", method, method_params)).model_transform is not None
    except Exception:  # noqa: BLE001 - a method that cannot be built fails at its point, with its error
        return False


def as_vggt_method(made: Any) -> VGGTMethod:
    """What a ``vggt`` method's build function returned, as a :class:`VGGTMethod` (a bare
    ``attention_fn`` is the common case)."""
    return made if isinstance(made, VGGTMethod) else VGGTMethod(attention_fn=made)


@register_workload
class VGGTWorkload(Workload[VGGTParams, torch.nn.Module]):
    name = "vggt"
    Params = VGGTParams
    doc = "VGGT multi-view reconstruction; attention methods plug into its global attention"

    def model_key(self, point: VGGTPoint) -> tuple:
        p = point.workload_params
        return ("vggt", p.preset, p.checkpoint, p.lean, point.device, point.dtype, point.seed)

    @classmethod
    def model_presets(cls) -> dict[str, dict[str, Any]]:
        return {
            name: {"embed_dim": c.embed_dim, "depth": c.depth, "heads": c.num_heads, "head_dim": c.head_dim,
                   "patch_embed": f"{c.patch_embed}({c.dino_depth})" if c.patch_embed == "dinov2" else "conv",
                   "dpt_features": c.dpt_features, "layers_read": c.intermediate_layer_idx}
            for name, c in PRESETS.items()
        }

    def build_model(self, point: VGGTPoint) -> torch.nn.Module:
        p = point.workload_params
        weights = resolve_weights(p.checkpoint)  # before building: a failed download costs no model
        model = build_vggt(p.preset, device="cpu", lean=p.lean)
        if weights.path is not None:
            load_checkpoint(model, weights.path, strict=True)
            log.info("vggt %s: weights %s (sha256 %s)", p.preset, weights.label, weights.sha256)
        return attach_weights(model.to(point.device).eval(), weights)

    def check_point(self, params: VGGTParams, method: str, method_params: Any) -> list[str]:
        """Constraints between a point's parameters and its model preset, checked by the suite loader
        for every point: the timed layer exists; a method's ``head_groups`` divides the heads."""
        cfg = PRESETS.get(params.preset)
        if cfg is None:
            return []
        problems = []
        if params.scope == "attention" and params.layer >= cfg.depth:
            problems.append(f"layer={params.layer} but preset {params.preset!r} has {cfg.depth} global "
                            f"layers (allowed: 0..{cfg.depth - 1}; scope: attention times that layer)")
        if params.scope == "attention" and _transforms_model(method, method_params):
            problems.append(_ATTENTION_SCOPE_TRANSFORM.format(method=method))
        groups = getattr(method_params, "head_groups", None)
        if isinstance(groups, int) and groups >= 1 and cfg.num_heads % groups:
            problems.append(f"head_groups={groups} of method {method!r} must divide the head count of preset "
                            f"{params.preset!r}, H={cfg.num_heads} (allowed: {_divisors(cfg.num_heads)})")
        return problems

    def check_paths(self, params: Any) -> list[str]:
        problems = check_weights(params.checkpoint)  # hf: specs: syntax only, nothing is downloaded
        if params.eval_scenes > 1 and (params.data != "synthetic" or params.scope != "model"):
            problems.append(f"eval_scenes: {params.eval_scenes} averages synthetic scenes of scope: model; "
                            f"it cannot be used with data: {params.data}, scope: {params.scope} "
                            "(set it to 1)")
        if params.data != "synthetic":
            if not params.data_path:
                problems.append(f"data: {params.data} needs data_path (the dataset root folder)")
            elif not Path(params.data_path).is_dir():
                problems.append(f"data_path {params.data_path!r} does not exist (expected the {params.data} "
                                "dataset root folder)")
            elif not (Path(params.data_path) / params.data_scene).is_dir() or not params.data_scene:
                found = sorted(d.name for d in Path(params.data_path).iterdir() if d.is_dir())
                problems.append(f"data_scene {params.data_scene!r} is not a folder of {params.data_path!r} "
                                f"(scenes found: {', '.join(found) or 'none'})")
        return problems

    # -- one point ---------------------------------------------------------------------

    def bench(self, model: torch.nn.Module, point: VGGTPoint, ctx: RunContext) -> Bench:
        p = point.workload_params
        seed = scene_seed(p, point.seed)
        inputs: Inputs = ctx.inputs(_input_key(p, seed, point.device),
                                    lambda: load_inputs(p, seed, point.device))
        method = as_vggt_method(create_method("vggt", point.method, point.method_params))
        ref_fn = self._reference_fn(ctx)
        used, setup = self._prepare(model, point, ctx, method)
        method_fn = method.attention_fn or sdpa_attention
        if p.scope == "attention":
            bench = self._bench_attention(used, point, ctx, inputs, method_fn, ref_fn)
        else:
            bench = self._bench_model(used, point, ctx, inputs, method_fn, ref_fn, ref_model=model)
        bench.counters.update(setup)
        return bench

    def _prepare(self, model, point: VGGTPoint, ctx: RunContext,
                 method: VGGTMethod) -> tuple[torch.nn.Module, dict[str, float]]:
        """Apply a method's model transform and calibration (untimed); returns the model the point
        times and the setup columns (``work_calib_s``, ``work_calib_forwards``, the method's own
        ``work_*`` counters)."""
        p = point.workload_params
        setup: dict[str, float] = {}
        if (method.model_transform is None and method.calibrate is None and method.calibrate_grad is None
                and method.work_counters is None):
            return model, setup
        if method.model_transform is not None and p.scope == "attention":
            raise ValueError(_ATTENTION_SCOPE_TRANSFORM.format(method=point.method))
        cp = dataclasses.replace(p, data="synthetic", eval_scenes=1)
        seed = scene_seed(p, point.seed) + CALIB_SCENE_OFFSET
        calib: Inputs = ctx.derived(("calibration scene", seed, p.frames),
                                    lambda: load_inputs(cp, seed, point.device))
        forwards = 0

        def grad_probe(qkv: dict[int, torch.Tensor]) -> GradProbe:
            def probe(fn: AttentionFn, frames: int | None = None, scene: int = 0) -> GradCalibration:
                nonlocal forwards
                n = p.frames if frames is None else int(frames)
                if n < 1 or scene < 0:
                    raise ValueError(f"{point.method}: a gradient probe needs frames >= 1 and scene >= 0, "
                                     f"got frames={n}, scene={scene}")
                s = seed + scene
                scene_inputs: Inputs = ctx.derived(
                    ("calibration scene", s, n),
                    lambda: load_inputs(dataclasses.replace(cp, frames=n), s, point.device))
                forwards += 1
                return grad_calibration(model, scene_inputs.images, fn, device=point.device,
                                        dtype=point.dtype, gt_points=scene_inputs.gt_points,
                                        gt_extrinsics=scene_inputs.frames.extrinsics,
                                        valid=scene_inputs.frames.valid, qkv=qkv, seed=s)
            return probe

        def run(m: torch.nn.Module, fn: AttentionFn = sdpa_attention) -> None:
            nonlocal forwards
            forwards += 1
            with torch.inference_mode(), autocast(point.device, point.dtype):
                m(calib.images, attention_fn=fn, heads=())

        t0 = time.perf_counter()
        if method.model_transform is not None:
            model = method.model_transform(model, run)
        if method.calibrate is not None:
            method.calibrate(lambda fn: run(model, fn))
        if method.calibrate_grad is not None:
            with qkv_grads_only(model) as qkv:
                method.calibrate_grad(grad_probe(qkv))
        if forwards:
            setup["work_calib_s"] = time.perf_counter() - t0
            setup["work_calib_forwards"] = float(forwards)
        if method.work_counters is not None:
            cfg = model.config
            H, W = calib.hw
            extra = method.work_counters(model, p.frames, cfg.tokens_per_frame(H, W))
            setup.update({f"work_{k}": float(v) for k, v in extra.items()})
        return model, setup

    @staticmethod
    def _reference_fn(ctx: RunContext) -> AttentionFn:
        if ctx.reference_method is None:
            return sdpa_attention
        made = as_vggt_method(create_method("vggt", ctx.reference_method, ctx.reference_params))
        if made.model_transform is not None or made.calibrate is not None:
            raise ValueError(f"reference: {ctx.reference_method} needs calibration or changes the model; "
                             "the reference must be an attention method that needs neither (e.g. vggt)")
        return made.attention_fn or sdpa_attention

    def _forward(self, model, point: VGGTPoint, images: torch.Tensor, fn: AttentionFn,
                 recorder: Recorder | None = None) -> dict:
        p = point.workload_params
        with torch.inference_mode(), autocast(point.device, point.dtype):
            return model(images, attention_fn=fn, recorder=recorder, heads=HEAD_SETS[p.heads])

    def _bench_model(self, model, point: VGGTPoint, ctx: RunContext, inputs: Inputs,
                     method_fn: AttentionFn, ref_fn: AttentionFn, ref_model=None) -> Bench:
        """``model`` runs the method; ``ref_model`` (default: ``model``) the reference, which for a
        method with a model transform is the unchanged model."""
        p = point.workload_params
        ref_model = model if ref_model is None else ref_model
        cfg = model.config
        S, (H, W) = inputs.images.shape[0], inputs.hw
        n_tokens = S * cfg.tokens_per_frame(H, W)

        def run_with_tokens(fn: AttentionFn, rec: Recorder | None, m=model) -> tuple[dict, torch.Tensor]:
            store: dict = {}
            handle = _last_layer_hook(m, store)
            try:
                out = self._forward(m, point, inputs.images, fn, rec)
            finally:
                handle.remove()
            return out, store["tokens"]

        # one untimed pass with a recorder: kept tokens, FLOPs and the merge-quality proxy (it
        # also warms the model up); for the reference method it doubles as the reference output
        rec = Recorder()
        out, tokens = run_with_tokens(method_fn, rec)
        # the reference point's own output is the reference (unless another one came first)
        own = ctx.is_reference(point)
        ref_out, ref_tokens = ctx.reference(
            (self.model_key(point), p.heads),
            (lambda o=(out, tokens): o) if own else (lambda: run_with_tokens(ref_fn, None, ref_model)))
        del out
        counters = _summarize_recorder(rec, cfg.depth, cfg.num_heads, n_tokens)
        merge_sim = rec.values.get("merge_sim_p10")
        token_cos = fidelity.cosine_similarity(tokens, ref_tokens)

        def evaluate(out: dict) -> dict[str, float]:
            rows = [{**self._quality(out, inputs), **self._fidelity(out, ref_out, inputs.hw)}]
            rows += [self._evaluate_extra_scene(model, point, ctx, j, method_fn, ref_fn, ref_model)
                     for j in range(1, p.eval_scenes)]
            row = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
            row["fid_token_cos"] = token_cos
            if merge_sim:
                row["fid_merge_sim_p10"] = statistics.median(merge_sim)
            return row

        def breakdown() -> dict[str, float]:
            timed = Recorder(timed=True, device=point.device)
            self._forward(model, point, inputs.images, method_fn, timed)
            return timed.breakdown(1.0 / cfg.depth)  # per global layer

        return Bench(
            fn=lambda: self._forward(model, point, inputs.images, method_fn),
            evaluate=evaluate,
            counters=counters,
            breakdown=breakdown,
            info=weights_info(model),
        )

    def _evaluate_extra_scene(self, model, point: VGGTPoint, ctx: RunContext, j: int,
                              method_fn: AttentionFn, ref_fn: AttentionFn, ref_model) -> dict[str, float]:
        """Quality and fidelity on the j-th extra synthetic scene (seed + j), untimed; its inputs
        and reference output live as long as the timed input (they derive from it)."""
        p = point.workload_params
        seed = scene_seed(p, point.seed) + j
        inputs: Inputs = ctx.derived(("extra scene", j), lambda: load_inputs(p, seed, point.device))
        ref_out = ctx.reference(("extra scene", j, self.model_key(point), p.heads),
                                lambda: self._forward(ref_model, point, inputs.images, ref_fn))
        out = self._forward(model, point, inputs.images, method_fn)
        return {**self._quality(out, inputs), **self._fidelity(out, ref_out, inputs.hw)}

    def _bench_attention(self, model, point: VGGTPoint, ctx: RunContext, inputs: Inputs,
                         method_fn: AttentionFn, ref_fn: AttentionFn) -> Bench:
        p = point.workload_params
        cfg = model.config
        if p.layer >= cfg.depth:
            raise ValueError(f"layer={p.layer} but preset {p.preset!r} has {cfg.depth} global layers "
                             f"(allowed: 0..{cfg.depth - 1})")
        key = ("qkv", self.model_key(point), p.layer)
        q, k, v, layout = ctx.derived(key, lambda: self._capture_qkv(model, point, inputs, p.layer))
        rec = Recorder()
        out = self._call(point, method_fn, q, k, v, dataclasses.replace(layout, recorder=rec))
        counters = _summarize_recorder(rec, 1, q.shape[1], q.shape[2])
        counters.update(_call_work(counters))
        merge_sim = rec.values.get("merge_sim_p10")
        own = ctx.is_reference(point)
        ref_out = ctx.reference(
            key, (lambda o=out: o) if own else (lambda: self._call(point, ref_fn, q, k, v, layout)))
        del out

        def evaluate(out: torch.Tensor) -> dict[str, float]:
            a, b = out.float(), ref_out.float()
            row = {"fid_attn_rel_err": fidelity.relative_error(a, b),
                   "fid_attn_cos": fidelity.cosine_similarity(a.flatten(0, 2), b.flatten(0, 2))}
            if merge_sim:
                row["fid_merge_sim_p10"] = statistics.median(merge_sim)
            return row

        def breakdown() -> dict[str, float]:
            timed = Recorder(timed=True, device=point.device)
            self._call(point, method_fn, q, k, v, dataclasses.replace(layout, recorder=timed))
            return timed.breakdown()

        return Bench(fn=lambda: self._call(point, method_fn, q, k, v, layout), evaluate=evaluate,
                     counters=counters, breakdown=breakdown, info=weights_info(model))

    @staticmethod
    def _call(point: VGGTPoint, fn: AttentionFn, q, k, v, layout: AttentionLayout) -> torch.Tensor:
        with torch.inference_mode():
            return fn(q, k, v, layout)

    def _capture_qkv(self, model, point: VGGTPoint, inputs: Inputs, layer: int) -> tuple:
        """Run the forward until global layer ``layer`` and keep its q, k, v (in the point's dtype)."""
        seen: dict = {}

        def capture(q, k, v, layout: AttentionLayout):
            if layout.layer == layer:
                seen["qkv"] = (q.clone(), k.clone(), v.clone(), layout)
                raise _Captured
            return sdpa_attention(q, k, v, layout)

        try:
            self._forward(model, point, inputs.images, capture)
        except _Captured:
            pass
        q, k, v, layout = seen["qkv"]
        dt = torch_dtype(point.dtype)
        return q.to(dt), k.to(dt), v.to(dt), dataclasses.replace(layout, x_norm=layout.x_norm.to(dt))

    # -- metrics ------------------------------------------------------------------------

    @staticmethod
    def _quality(out: dict, inputs: Inputs) -> dict[str, float]:
        """Task metrics against ground truth (meaningful with a real checkpoint only)."""
        f = inputs.frames
        hw = inputs.hw
        row: dict[str, float] = {}
        depth = out["depth"][0, ..., 0].float().cpu()
        d = geometry.depth_metrics(depth, f.depth, f.valid)
        row["q_depth_abs_rel"], row["q_depth_delta1"] = d["abs_rel"], d["delta_1_25"]
        extr, _ = _cameras(out, hw)
        pose = geometry.pose_metrics(extr, f.extrinsics)
        row.update({f"q_pose_{k}": v for k, v in pose.items()})
        rec = geometry.reconstruction_metrics(_pred_points(out, hw), inputs.gt_points, f.valid,
                                              max_points=MAX_POINTS)
        row.update({"q_acc": rec["acc"], "q_comp": rec["comp"], "q_nc": rec["nc"]})
        return row

    @staticmethod
    def _fidelity(out: dict, ref: dict, hw: tuple[int, int]) -> dict[str, float]:
        """Agreement with the reference method's output on the same input."""
        row = {
            "fid_depth_rel_err": fidelity.depth_rel_error(out["depth"][0, ..., 0].float().cpu(),
                                                          ref["depth"][0, ..., 0].float().cpu()),
            "fid_points_rel_err": fidelity.pointmap_rel_error(_pred_points(out, hw), _pred_points(ref, hw)),
        }
        pose = fidelity.pose_difference(_cameras(out, hw)[0], _cameras(ref, hw)[0])
        row["fid_pose_rot_deg"], row["fid_pose_trans_rel"] = pose["rot_deg"], pose["trans_rel"]
        return row

    def metrics(self) -> dict[str, MetricInfo]:
        def q(help: str, higher: bool, unit: str = "") -> MetricInfo:
            return MetricInfo("quality", help, higher, unit)

        def fid(help: str, higher: bool, tol: float | None = None, unit: str = "") -> MetricInfo:
            return MetricInfo("fidelity", help, higher, unit, tol)

        def work(help: str, unit: str = "", cost_axis: bool = False) -> MetricInfo:
            return MetricInfo("work", help, None, unit, cost_axis=cost_axis)

        return {
            "q_depth_abs_rel": q("depth AbsRel vs ground truth (per-frame median scaling)", False),
            "q_depth_delta1": q("fraction of pixels with max(p/g, g/p) < 1.25", True),
            "q_pose_rre_deg": q("mean relative rotation error over frame pairs", False, "deg"),
            "q_pose_rte_deg": q("mean relative translation-direction error over frame pairs", False, "deg"),
            "q_pose_auc_30": q("pose AUC@30 (max of RRE/RTE under 1..30 deg)", True),
            "q_pose_ate": q("camera-centre RMSE after Sim(3) alignment", False, "m"),
            "q_acc": q("point-cloud accuracy: mean distance pred -> GT after Sim(3) alignment", False, "m"),
            "q_comp": q("point-cloud completeness: mean distance GT -> pred", False, "m"),
            "q_nc": q("normal consistency between nearest neighbours", True),
            "fid_depth_rel_err": fid("mean |d - d_ref| / d_ref against the reference method", False, 0.02),
            "fid_points_rel_err": fid("point-map error against the reference, relative to its spread", False,
                                      0.02),
            "fid_pose_rot_deg": fid("mean camera rotation difference to the reference", False, 0.5, "deg"),
            "fid_pose_trans_rel": fid("camera translation difference relative to the reference", False, 0.02),
            "fid_token_cos": fid("cosine similarity of last-layer global tokens to the reference", True,
                                 0.01),
            "fid_attn_rel_err": fid("attention output error relative to the reference (scope=attention)",
                                    False, 0.02),
            "fid_attn_cos": fid("cosine similarity of attention output rows to the reference", True, 0.01),
            "fid_merge_sim_p10": fid("merge-quality proxy: 10th percentile of merged-pair cosine similarity "
                                     "(median over layers)", True),
            "work_tokens_q_frac": work("queries kept per head and layer, as a fraction of N"),
            "work_tokens_kv_frac": work("keys/values kept per head and layer, as a fraction of N"),
            "work_pad_q_frac": work("padded query rows (ragged per-head lengths), as a fraction of N"),
            "work_attn_flops": work("FLOPs of the global-attention matmuls in one forward", "FLOP",
                                    cost_axis=True),
            "work_match_flops": work("FLOPs of the merge matching (similarities) in one forward", "FLOP"),
            "work_kept_block_frac": work("block-sparse: kept key blocks per query block, as a fraction of "
                                         "all"),
            "work_attn_bytes": work("bytes model of global attention: Q, K, V read and the output written "
                                    "once, in one forward", "B"),
            "work_agg_bytes": work("bytes model of the merge's gathers and scatters in one forward", "B"),
            "work_match_bytes": work("bytes model of the matching: the compared tokens read once, in one "
                                     "forward", "B"),
            "work_index_recompute": work("global layers that computed their merge indices, per forward "
                                         "(LiteVGGT: the rest reuse an earlier layer's)"),
            "work_index_reuse": work("global layers that reused an earlier layer's merge indices, per "
                                     "forward"),
            "work_bops": work("bit operations of the quantized linear layers in one forward (MACs x weight "
                              "bits x activation bits; QuantVGGT)", "BOP"),
            "work_bops_fp": work("the same layers' bit operations in fp32 (32 x 32 bits per MAC)", "BOP"),
            "work_calib_s": work("wall time of the method's calibration and model transform, once per "
                                 "point, outside the timed call", "s"),
            "work_calib_forwards": work("forwards on the calibration scene the method ran (with gradients "
                                        "too, for a gradient-based calibration)"),
            "work_hess_inlier_frac": work("HeSS fisher: share of the calibration's predicted points within "
                                          "hess's inlier radius of the ground truth (the point-cloud error's "
                                          "inlier set; 0 leaves that error's share of the score uniform)"),
            "work_flops": work("FLOPs of the timed call (scope=attention: attention + matching)", "FLOP"),
            "work_bytes": work("bytes model of the timed call (scope=attention: attention + merge + "
                               "matching)", "B"),
        }

