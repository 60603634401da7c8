"""Is *any* two-frame relative pose learned? Pure pans, lateral walks, and a brightness control.

Like ``pairs.py`` (8 two-frame pairs a step, gaps of 2-8 frames, either order, camera loss only),
but the 24-frame training and held-out paths are simpler than the video orbit:

- ``--path pan``: the camera turns in place by 3 degrees a frame (a pure rotation, so the
  image content shifts almost uniformly sideways by about 1-4 patches over a pair);
- ``--path walk``: the camera slides sideways by 6 cm a frame, looking in a fixed direction
  (a pure translation);
- ``--relative-brightness`` (with ``--path pan``): both frames of a pair are also scaled by a
  random brightness s0 and frame 1 by a further (1 + 2 q_y), so the rotation can be read by
  comparing the two frames' brightness, without any spatial matching. A control: it shows
  whether the camera path can compare frames at all.

Every 125 steps it prints, over 12 held-out scenes and 12 training scenes (pairs (first,
first + k) and (first + k, first), k = 3, 5, 7; first = 0 held-out, 1 training), the share of
right signs of the moving component (rotation q_y for pans, translation T_x for walks; half of
them are positive, so a constant prediction gets 0.5), its mean error, and that of predicting
zero.

    PYTHONPATH=. python docs/experiments/vggt-proxy-pose/paths.py --path pan --steps 750
"""

import argparse
import math
import time
from dataclasses import replace

import torch
from common import clip_of, train_pairs

import harness.data.scenes as scenes
import harness.train.vggt_proxy as vp
from harness.data.scenes import SceneConfig, look_at, render_scene
from harness.models.vggt import build_vggt
from harness.models.vggt.pose import extri_intri_to_pose_encoding
from harness.models.vggt.presets import VGGT_PROXY

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=750)
ap.add_argument("--path", default="pan", choices=("pan", "walk"))
ap.add_argument("--embed", choices=("conv", "abspos"), default="conv",
                help="abspos: DINO-style patch embedding at depth 0 (learned absolute positions)")
ap.add_argument("--pool", type=int, default=240, help="scenes rendered for training")
ap.add_argument("--lr", type=float, default=5e-4)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--relative-brightness", action="store_true")
ap.add_argument("--tie-qk", action="store_true",
                help="initialise the global blocks' key projection equal to the query projection, so "
                     "attention starts out as content matching")
ap.add_argument("--qk-gain", type=float, default=1.0, help="initial q/k-norm gain of the aggregator")
ap.add_argument("--heads", type=int, default=VGGT_PROXY.num_heads,
                help="heads of the frame and global blocks (the proxy has 16 of dim 8)")
ap.add_argument("--pos-std", type=float, default=0.0,
                help="with --embed abspos: re-initialise the position embedding at this std (0: DINO's 0.02)")
ap.add_argument("--dim", type=int, default=VGGT_PROXY.embed_dim, help="aggregator width")
args = ap.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)
FRAMES = 24
HW = (vp.HEIGHT, vp.WIDTH)


def pan_path(cfg: SceneConfig, content) -> torch.Tensor:
    r = scenes._Rand(cfg.seed * 7919 + 3)
    ang, rad = r.u(0, 2 * math.pi), r.u(0.3, 1.8)
    centre = torch.tensor([rad * math.cos(ang), r.u(1.1, 1.6), rad * math.sin(ang)])
    yaw0, direction, pitch = r.u(0, 2 * math.pi), (1.0 if r.u() < 0.5 else -1.0), r.u(-0.3, 0.0)
    extr = []
    for i in range(cfg.frames):
        yaw = yaw0 + direction * math.radians(3.0) * i
        extr.append(look_at(centre, centre + torch.tensor([math.cos(yaw), pitch, math.sin(yaw)])))
    return torch.stack(extr)


def walk_path(cfg: SceneConfig, content) -> torch.Tensor:
    r = scenes._Rand(cfg.seed * 7919 + 4)
    ang = r.u(0, 2 * math.pi)
    fwd = torch.tensor([math.cos(ang), 0.0, math.sin(ang)])
    right = torch.tensor([-math.sin(ang), 0.0, math.cos(ang)])
    start = -fwd * r.u(1.9, 2.3) + torch.tensor([0.0, r.u(1.1, 1.6), 0.0])
    direction, pitch = (1.0 if r.u() < 0.5 else -1.0), r.u(-0.4, -0.1)
    extr = []
    for i in range(cfg.frames):
        centre = start + right * direction * 0.06 * (i - cfg.frames / 2)
        extr.append(look_at(centre, centre + fwd + torch.tensor([0, pitch, 0])))
    return torch.stack(extr)


scenes._camera_path = pan_path if args.path == "pan" else walk_path
component = 4 if args.path == "pan" else 0  # q_y or T_x of the pose encoding

cfg = replace(VGGT_PROXY, num_heads=args.heads, embed_dim=args.dim)
if args.embed == "abspos":
    cfg = replace(cfg, patch_embed="dinov2", dino_depth=0)
model = build_vggt(cfg, heads=("camera",)).train()
with torch.no_grad():
    for name, mod in model.named_modules():
        if name.startswith("aggregator.") and name.endswith(("q_norm", "k_norm")):
            mod.weight.fill_(args.qk_gain)
        if args.tie_qk and name.startswith("aggregator.global_blocks.") and name.endswith("attn.qkv"):
            C = mod.weight.shape[1]
            mod.weight[C:2 * C] = mod.weight[:C]
            mod.bias[C:2 * C] = mod.bias[:C]
    if args.pos_std > 0:
        torch.nn.init.normal_(model.aggregator.patch_embed.pos_embed, std=args.pos_std)


def render(seed: int):
    return render_scene(SceneConfig(frames=FRAMES, height=vp.HEIGHT, width=vp.WIDTH, seed=seed, mode="video"))


t0 = time.time()
pool = [render(i) for i in range(args.pool)]
held = [render(vp.HELDOUT_SEED + i) for i in range(12)]
print(f"rendered in {time.time() - t0:.0f}s", flush=True)
gen = torch.Generator().manual_seed(1)
brightness_gen = torch.Generator().manual_seed(7)


def pair(scene, idx: torch.Tensor) -> vp.Clip:
    c = clip_of(scene, idx)
    if args.relative_brightness:
        g = extri_intri_to_pose_encoding(c.extrinsics[None], c.intrinsics[None], HW)[0]
        s0 = 0.6 + 0.8 * torch.rand((), generator=brightness_gen)
        scale = s0 * (1.0 + 2.0 * g[:, 4])
        c.images = (c.images * scale[:, None, None, None]).clamp(0, 1)
    return c


def sample() -> dict[str, torch.Tensor]:
    clips = []
    for _ in range(args.batch):
        scene = pool[int(torch.randint(len(pool), (1,), generator=gen))]
        gap = int(torch.randint(2, 9, (1,), generator=gen))
        a = int(torch.randint(0, FRAMES - gap, (1,), generator=gen))
        idx = torch.tensor([a, a + gap])
        clips.append(pair(scene, idx.flip(0) if torch.rand(1, generator=gen) < 0.5 else idx))
    return {k: torch.stack([getattr(c, k) for c in clips]) for k in ("images", "extrinsics", "intrinsics")}


@torch.no_grad()
def sign_accuracy(scene_list: list, first: int) -> tuple[float, float, float]:
    """(share of right signs, mean |error|, mean |truth|) of the moving component."""
    model.eval()
    right = n = 0
    err = zero_err = 0.0
    for sc in scene_list:
        for k in (3, 5, 7):
            for idx in ([first, first + k], [first + k, first]):
                c = pair(sc, torch.tensor(idx))
                pe = model(c.images[None], heads=("camera",))["pose_enc"][0, 1, component]
                gt = extri_intri_to_pose_encoding(c.extrinsics[None], c.intrinsics[None], HW)[0, 1, component]
                right += int(pe * gt > 0)
                n += 1
                err += float((pe - gt).abs())
                zero_err += float(gt.abs())
    model.train()
    return right / n, err / n, zero_err / n


def report(it: int, loss: float) -> None:
    acc, e, z = sign_accuracy(held, 0)
    tacc, te, _ = sign_accuracy(pool[:12], 1)
    print(f"{it} {time.time() - t0:.0f}s loss {loss:.4f} held-out sign {acc:.3f} |err| {e:.4f} "
          f"(zero {z:.4f})  training scenes sign {tacc:.3f} |err| {te:.4f}", flush=True)


train_pairs(model, sample, steps=args.steps, lr=args.lr, every=125, report=report)
