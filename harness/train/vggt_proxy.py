"""``vggt-proxy``: a small VGGT trained on the harness's ray-cast rooms.

Model: the ``vggt-proxy`` preset of :mod:`harness.models.vggt.presets`, built by the same code
as every benchmark (conv patch embedding, 4 frame + 4 global blocks with qk-norm, 2-D RoPE and
LayerScale, 16 heads, camera head, DPT depth head). The point head is part of the architecture
(so the checkpoint loads strictly) but is not trained: benchmarks run the camera and depth heads.

Data: a pool of procedural rooms (:func:`harness.data.scenes.render_scene`) rendered once per
training run at 112x140 px; training samples are 4-8 frame clips of them (video orbits with a
random frame stride and order, or sparse views). Held-out scenes use seeds >= HELDOUT_SEED, which
training never sees.

Ground truth follows VGGT: cameras relative to the first frame, the scene scaled so that the
mean distance of its points to the first camera is 1. Losses follow VGGT: an L1 camera loss on
the pose encoding of every refinement iteration (later ones weigh more) and the confidence-aware
depth loss ``conf * |d - d_gt| + conf * |grad d - grad d_gt| - alpha * log(conf)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.data.scenes import SceneConfig, render_scene
from harness.metrics import geometry
from harness.models.seam import AttentionLayout
from harness.models.vggt import build_vggt, pose_encoding_to_extri_intri
from harness.models.vggt.pose import extri_intri_to_pose_encoding
from harness.models.vggt.presets import VGGT_PROXY
from harness.train.base import Proxy, TrainConfig

HEIGHT, WIDTH = 112, 140
#: frames rendered per pool scene (clips are cut from them)
POOL_FRAMES = 24
POOL_VIDEO_SCENES = 240
POOL_SPARSE_SCENES = 120
HELDOUT_SEED = 1_000_000
HELDOUT_SCENES = 12
EVAL_FRAMES = 8
CLIP_FRAMES = (4, 8)
#: weight of -log(conf) in the depth loss (VGGT's alpha)
CONF_ALPHA = 0.2
#: refinement iterations weigh gamma^(K-1-k) in the camera loss
CAMERA_GAMMA = 0.6
CAMERA_WEIGHT = 5.0
#: From this step on (second phase) clips are cut from video scenes only, with a larger frame
#: stride, and the camera loss weighs CAMERA_WEIGHT_LATE: with sparse clips in the mix the camera
#: head of an earlier recipe had settled on the mean pose of the pool by step 1100 (pose AUC@30 0
#: on held-out scenes) while depth kept improving.
SWITCH_STEP = 800
VIDEO_STRIDE = (1, 3)
VIDEO_STRIDE_LATE = (2, 5)
CAMERA_WEIGHT_LATE = 10.0
HEADS = ("camera", "depth")


@dataclass
class Clip:
    """One training/evaluation sample (float32, CPU).

    images [S, 3, H, W] in [0, 1]; depth [S, H, W] normalized; valid [S, H, W];
    extrinsics [S, 3, 4] first camera = identity, normalized translation; intrinsics [S, 3, 3].
    """

    images: torch.Tensor
    depth: torch.Tensor
    valid: torch.Tensor
    extrinsics: torch.Tensor
    intrinsics: torch.Tensor


def _homog(extr: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=extr.dtype).expand(extr.shape[0], 1, 4)
    return torch.cat([extr, bottom], dim=1)


def normalize_clip(images, depth, valid, extr, intr) -> Clip:
    """Cameras relative to frame 0, scale so the mean point distance to camera 0 is 1 (as VGGT)."""
    e = _homog(extr.double())
    rel = e @ torch.linalg.inv(e[0])  # camera_i-from-camera_0
    # points of every frame in camera-0 coordinates: X0 = inv(rel_i) [d * K^-1 (u, v, 1)]
    S, H, W = depth.shape
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.0, torch.arange(W, dtype=torch.float64),
                          indexing="ij")
    k = intr.double()
    x = (u[None] - k[:, 0, 2, None, None]) / k[:, 0, 0, None, None] * depth
    y = (v[None] - k[:, 1, 2, None, None]) / k[:, 1, 1, None, None] * depth
    cam = torch.stack([x, y, depth.double(), torch.ones_like(x)], -1)  # [S, H, W, 4]
    world0 = torch.einsum("sij,shwj->shwi", torch.linalg.inv(rel), cam)[..., :3]
    scale = world0[valid].norm(dim=-1).mean().clamp_min(1e-6)
    rel = rel[:, :3, :].clone()
    rel[:, :, 3] /= scale
    return Clip(images=images.float(), depth=(depth / scale).float(), valid=valid,
                extrinsics=rel.float(), intrinsics=intr.float())


def _render(seed: int, frames: int, mode: str) -> Any:
    return render_scene(SceneConfig(frames=frames, height=HEIGHT, width=WIDTH, seed=seed, mode=mode))


def heldout_clips(mode: str = "video", n: int = HELDOUT_SCENES, frames: int = EVAL_FRAMES) -> list[Clip]:
    """The held-out evaluation set: ``n`` scenes of ``frames`` consecutive views, unseen seeds."""
    out = []
    for i in range(n):
        sc = _render(HELDOUT_SEED + i, frames, mode)
        out.append(normalize_clip(sc.images, sc.depth, sc.valid, sc.extrinsics, sc.intrinsics))
    return out


def frame_only_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         layout: AttentionLayout) -> torch.Tensor:
    """Global attention restricted to each frame's own tokens (the multi-view ablation).

    q, k, v: [B, H, S*P, d] -> [B, H, S*P, d].
    """
    B, Hh, N, d = q.shape
    S, P = layout.frames, layout.tokens_per_frame

    def per_frame(t: torch.Tensor) -> torch.Tensor:
        return t.view(B, Hh, S, P, d).transpose(1, 2).reshape(B * S, Hh, P, d)

    out = F.scaled_dot_product_attention(per_frame(q), per_frame(k), per_frame(v))
    return out.view(B, S, Hh, P, d).transpose(1, 2).reshape(B, Hh, N, d)


class VGGTProxy(Proxy):
    name = "vggt-proxy"
    description = ("VGGT-shaped proxy (dim 128, 16 heads, 4 frame + 4 global blocks, camera + DPT depth "
                   "heads) trained on procedural ray-cast rooms at 112x140 px")
    headline = "pose_auc_30"

    def __init__(self) -> None:
        self._pool: list[Any] | None = None
        self._heldout: dict[str, list[Clip]] = {}

    # -- recipe and model ----------------------------------------------------------------

    def default_config(self) -> TrainConfig:
        return TrainConfig(steps=2000, batch=4, lr=5e-4, weight_decay=0.05, warmup_steps=150,
                           eval_every=300, ckpt_every=100, seed=0, threads=2, save_dtype="float16")

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_vggt(VGGT_PROXY, heads=HEADS)
        return model.train()

    def model_info(self) -> dict[str, Any]:
        c = VGGT_PROXY
        return {"preset": "vggt-proxy", "embed_dim": c.embed_dim, "depth": c.depth, "heads": c.num_heads,
                "head_dim": c.head_dim, "patch_embed": c.patch_embed, "image_hw": f"{HEIGHT}x{WIDTH}",
                "trained_heads": ",".join(HEADS), "untrained": "point head (not used by the benchmarks)"}

    def data_info(self) -> dict[str, Any]:
        return {"generator": "harness.data.scenes.render_scene (ray-cast textured rooms with boxes/spheres)",
                "train_pool": f"{POOL_VIDEO_SCENES} video scenes x {POOL_FRAMES} frames (seeds 0..), "
                              f"{POOL_SPARSE_SCENES} sparse scenes x {CLIP_FRAMES[1]} frames",
                "train_clips": f"{CLIP_FRAMES[0]}-{CLIP_FRAMES[1]} frames; video clips use frame stride "
                               f"{VIDEO_STRIDE[0]}-{VIDEO_STRIDE[1]} and are reversed half of the time; "
                               f"from step {SWITCH_STEP}: video clips only, stride "
                               f"{VIDEO_STRIDE_LATE[0]}-{VIDEO_STRIDE_LATE[1]} (as far as the clip fits "
                               f"{POOL_FRAMES} frames), camera loss weight "
                               f"{CAMERA_WEIGHT} -> {CAMERA_WEIGHT_LATE}",
                "heldout": f"{HELDOUT_SCENES} scenes per mode, seeds {HELDOUT_SEED}.., "
                           f"{EVAL_FRAMES} consecutive frames",
                "normalization": "cameras relative to frame 0; mean point distance to camera 0 = 1"}

    # -- data ------------------------------------------------------------------------------

    def pool(self, progress: bool = False) -> list[Any]:
        """Rendered training scenes (video first, then sparse); built once per process."""
        if self._pool is None:
            from tqdm import tqdm

            jobs = [(i, POOL_FRAMES, "video") for i in range(POOL_VIDEO_SCENES)]
            jobs += [(POOL_VIDEO_SCENES + i, CLIP_FRAMES[1], "sparse") for i in range(POOL_SPARSE_SCENES)]
            bar = tqdm(jobs, desc="render training scenes", leave=False, disable=not progress)
            self._pool = [_render(*job) for job in bar]
        return self._pool

    def prepare(self, progress: bool = True) -> None:
        self.pool(progress)

    def batch(self, step: int, size: int, seed: int) -> dict[str, Any]:
        """``{"clips": [Clip] * size, "camera_weight": float}`` of ``step`` (see SWITCH_STEP)."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        pool = self.pool()
        late = step >= SWITCH_STEP
        candidates = POOL_VIDEO_SCENES if late else len(pool)
        lo, hi = VIDEO_STRIDE_LATE if late else VIDEO_STRIDE
        S = int(torch.randint(CLIP_FRAMES[0], CLIP_FRAMES[1] + 1, (1,), generator=g))
        clips = []
        for _ in range(size):
            sc = pool[int(torch.randint(candidates, (1,), generator=g))]
            n = sc.images.shape[0]
            if n == POOL_FRAMES:  # video: a strided window, maybe reversed
                hi_fit = min(hi, (n - 1) // (S - 1))  # the clip must fit the rendered frames
                stride = int(torch.randint(lo, hi_fit + 1, (1,), generator=g))
                span = (S - 1) * stride + 1
                start = int(torch.randint(0, n - span + 1, (1,), generator=g))
                idx = torch.arange(start, start + span, stride)
                if torch.rand(1, generator=g).item() < 0.5:
                    idx = idx.flip(0)
            else:  # sparse: a random subset in random order
                idx = torch.randperm(n, generator=g)[:S]
            clips.append(normalize_clip(sc.images[idx], sc.depth[idx], sc.valid[idx], sc.extrinsics[idx],
                                        sc.intrinsics[idx]))
        return {"clips": clips, "camera_weight": CAMERA_WEIGHT_LATE if late else CAMERA_WEIGHT}

    def to_device(self, batch: Any, device: torch.device) -> Any:
        out = {name: torch.stack([getattr(c, name) for c in batch["clips"]]).to(device)
               for name in ("images", "depth", "valid", "extrinsics", "intrinsics")}
        return out | {"camera_weight": batch["camera_weight"]}

    # -- loss --------------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch["images"], heads=HEADS)
        gt_enc = extri_intri_to_pose_encoding(batch["extrinsics"], batch["intrinsics"], (HEIGHT, WIDTH))
        cam = camera_loss(out["pose_enc_list"], gt_enc)
        dep = depth_loss(out["depth"][..., 0], out["depth_conf"], batch["depth"], batch["valid"])
        total = batch["camera_weight"] * cam + dep
        return total, {"camera": cam.item(), "depth": dep.item()}

    # -- evaluation ---------------------------------------------------------------------------

    def heldout(self, mode: str) -> list[Clip]:
        if mode not in self._heldout:
            self._heldout[mode] = heldout_clips(mode)
        return self._heldout[mode]

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        m = evaluate_clips(model, self.heldout("video"))
        sparse = evaluate_clips(model, self.heldout("sparse"))
        m.update({f"sparse_{k}": v for k, v in sparse.items()})
        frame_only = evaluate_clips(model, self.heldout("video"), attention_fn=frame_only_attention)
        m["frame_only_pose_auc_30"] = frame_only["pose_auc_30"]
        return m

    def baselines(self) -> dict[str, dict[str, float]]:
        return {"mean depth + identity pose (video)": trivial_metrics(self.heldout("video")),
                "mean depth + identity pose (sparse)": {
                    f"sparse_{k}": v for k, v in trivial_metrics(self.heldout("sparse")).items()}}


def camera_loss(pred_list: list[torch.Tensor], gt: torch.Tensor) -> torch.Tensor:
    """L1 loss on translation, quaternion and FoV of every iteration. pred/gt: [B, S, 9].

    L1 (VGGT's default camera loss) rather than a Huber with delta 1: relative translations of
    neighbouring video frames are ~0.05 scene units, where a quadratic loss has no gradient.
    """
    K = len(pred_list)
    total = gt.new_zeros(())
    for i, pred in enumerate(pred_list):
        w = CAMERA_GAMMA ** (K - 1 - i)
        total = total + w * (F.l1_loss(pred[..., :3], gt[..., :3]) + F.l1_loss(pred[..., 3:7], gt[..., 3:7])
                             + F.l1_loss(pred[..., 7:], gt[..., 7:]))
    return total / K


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def depth_loss(pred: torch.Tensor, conf: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """VGGT's confidence-aware depth loss. pred, conf, gt: [B, S, H, W]; valid: bool [B, S, H, W]."""
    v = valid.float()
    err = (pred - gt).abs()
    gx_p, gy_p = _grad(pred)
    gx_g, gy_g = _grad(gt)
    vx, vy = v[..., :, 1:] * v[..., :, :-1], v[..., 1:, :] * v[..., :-1, :]
    grad_err = F.pad((gx_p - gx_g).abs() * vx, (0, 1)) + F.pad((gy_p - gy_g).abs() * vy, (0, 0, 0, 1))
    per_px = conf * (err + grad_err) - CONF_ALPHA * torch.log(conf)
    return (per_px * v).sum() / v.sum().clamp_min(1.0)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor,
            attention_fn: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(depth [S, H, W], extrinsics [S, 3, 4]) of one clip, float32 on the CPU."""
    out = model(images[None], heads=HEADS, attention_fn=attention_fn)
    extr, _ = pose_encoding_to_extri_intri(out["pose_enc"][0].float().cpu(), tuple(images.shape[-2:]))
    return out["depth"][0, ..., 0].float().cpu(), extr


def evaluate_clips(model: nn.Module, clips: list[Clip], attention_fn: Any = None) -> dict[str, float]:
    """Mean depth AbsRel / delta<1.25 and pose AUC@30 / RRE / RTE over held-out clips."""
    dev = next(model.parameters()).device
    rows = []
    for c in clips:
        depth, extr = predict(model, c.images.to(dev), attention_fn)
        rows.append(_clip_metrics(depth, extr, c))
    return {k: float(sum(r[k] for r in rows) / len(rows)) for k in rows[0]}


def _clip_metrics(depth: torch.Tensor, extr: torch.Tensor, c: Clip) -> dict[str, float]:
    d = geometry.depth_metrics(depth, c.depth, c.valid)
    p = geometry.pose_metrics(extr, c.extrinsics)
    return {"depth_abs_rel": d["abs_rel"], "depth_delta1": d["delta_1_25"], "pose_auc_30": p["auc_30"],
            "pose_rre_deg": p["rre_deg"], "pose_rte_deg": p["rte_deg"]}


def trivial_metrics(clips: list[Clip]) -> dict[str, float]:
    """A constant depth per frame (its mean) and identity cameras, scored like the model."""
    rows = []
    for c in clips:
        S = c.depth.shape[0]
        depth = torch.ones_like(c.depth) * c.depth.mean()
        extr = torch.eye(3, 4).expand(S, 3, 4).clone()
        rows.append(_clip_metrics(depth, extr, c))
    return {k: float(sum(r[k] for r in rows) / len(rows)) for k in rows[0]}


__all__ = ["Clip", "VGGTProxy", "camera_loss", "depth_loss", "evaluate_clips", "frame_only_attention",
           "heldout_clips", "normalize_clip", "trivial_metrics"]
