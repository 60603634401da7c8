"""Can the vggt-proxy architecture learn two-frame relative pose? (camera loss only)

Each step takes 8 pairs (frame a, frame a + gap, gap 2-8 of the 3-degree video orbit, either
order) from a pool of rendered video scenes. Every 250 steps it prints, for 12 held-out scenes
and for 12 training scenes (pairs (0, k) and (1, 1 + k), k = 3, 5, 7), how often the signs of the
predicted translation-x and rotation-y components match the truth, and the mean error of the
rotation-y component. On the held-out pairs half of the signs are positive, so any constant
prediction gets 0.5 of them right, and predicting zero rotation-y has an error of 0.131.

    PYTHONPATH=. python docs/experiments/vggt-proxy-pose/pairs.py --steps 1000 --pool 240 --frames 24
"""

import argparse
import time
from dataclasses import replace

import torch
from common import clip_of, train_pairs

import harness.train.vggt_proxy as vp
from harness.data.scenes import SceneConfig, render_scene
from harness.models.vggt import build_vggt
from harness.models.vggt.pose import extri_intri_to_pose_encoding
from harness.models.vggt.presets import VGGT_PROXY

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=1000)
ap.add_argument("--embed", choices=("conv", "abspos"), default="conv",
                help="abspos: DINO-style patch embedding at depth 0 (learned absolute positions)")
ap.add_argument("--qk-gain", type=float, default=1.0, help="initial q/k-norm gain of the aggregator")
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--lr", type=float, default=5e-4)
ap.add_argument("--token-std", type=float, default=0.0,
                help="re-initialise camera/register tokens at this std (0: VGGT's 1e-6)")
ap.add_argument("--pool", type=int, default=240, help="video scenes rendered for training")
ap.add_argument("--frames", type=int, default=24, help="frames rendered per training scene")
args = ap.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)

cfg = replace(VGGT_PROXY, patch_embed="dinov2", dino_depth=0) if args.embed == "abspos" else VGGT_PROXY
model = build_vggt(cfg, heads=("camera",)).train()
with torch.no_grad():
    for name, mod in model.named_modules():
        if name.startswith("aggregator.") and name.endswith(("q_norm", "k_norm")):
            mod.weight.fill_(args.qk_gain)
    if args.token_std > 0:
        torch.nn.init.normal_(model.aggregator.camera_token, std=args.token_std)
        torch.nn.init.normal_(model.aggregator.register_token, std=args.token_std)

pool = [render_scene(SceneConfig(frames=args.frames, height=vp.HEIGHT, width=vp.WIDTH, seed=i, mode="video"))
        for i in range(args.pool)]
held = vp.heldout_clips("video")
gen = torch.Generator().manual_seed(1)


pair = clip_of


def sample() -> dict[str, torch.Tensor]:
    clips = []
    for _ in range(args.batch):
        scene = pool[int(torch.randint(len(pool), (1,), generator=gen))]
        gap = int(torch.randint(2, 9, (1,), generator=gen))
        a = int(torch.randint(0, args.frames - gap, (1,), generator=gen))
        idx = torch.tensor([a, a + gap])
        clips.append(pair(scene, idx.flip(0) if torch.rand(1, generator=gen) < 0.5 else idx))
    return {k: torch.stack([getattr(c, k) for c in clips]) for k in ("images", "extrinsics", "intrinsics")}


@torch.no_grad()
def sign_accuracy(scenes: list, first: int) -> tuple[float, float]:
    """(share of right signs of T_x and q_y, mean |q_y error|) over pairs (first, first + k)."""
    model.eval()
    right = n = 0
    err = 0.0
    for sc in scenes:
        for k in (3, 5, 7):
            c = pair(sc, torch.tensor([first, first + k]))
            pe = model(c.images[None], heads=("camera",))["pose_enc"][0, 1]
            hw = (vp.HEIGHT, vp.WIDTH)
            gt = extri_intri_to_pose_encoding(c.extrinsics[None], c.intrinsics[None], hw)[0, 1]
            right += int(pe[0] * gt[0] > 0) + int(pe[4] * gt[4] > 0)
            n += 2
            err += float((pe[4] - gt[4]).abs())
    model.train()
    return right / n, err / (n / 2)


def report(it: int, loss: float) -> None:
    acc, e = sign_accuracy(held, 0)
    tacc, te = sign_accuracy(pool[:12], 1)
    print(f"{it} {time.time() - t0:.0f}s loss {loss:.4f} held-out sign {acc:.3f} |dqy| {e:.4f}"
          f"  training scenes sign {tacc:.3f} |dqy| {te:.4f}", flush=True)


t0 = time.time()
train_pairs(model, sample, steps=args.steps, lr=args.lr, every=250, report=report)
