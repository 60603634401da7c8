"""vggt-proxy's recipe plus an auxiliary patch-flow loss: does a dense matching target teach pose?

A linear layer on the last aggregator layer's patch tokens ([frame | global], 2C) predicts each
patch centre's displacement to frame 0 (divided by the image width); ground truth comes from the
depth and the cameras. Video clips only, frame stride 1-5. Prints held-out metrics every 100 steps,
with the correlation of predicted and true translation-x / rotation-y over the held-out frames.

    PYTHONPATH=. python docs/experiments/vggt-proxy-pose/flow_aux.py runs/flow --steps 500 \\
        --embed abspos --flow-weight 2 --qk-gain 2.5
"""

import argparse
from dataclasses import replace

import torch
from torch import nn

import harness.train.vggt_proxy as vp
from harness.models.vggt import build_vggt
from harness.models.vggt.pose import extri_intri_to_pose_encoding
from harness.models.vggt.presets import VGGT_PROXY
from harness.train.loop import train

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--steps", type=int, default=500)
ap.add_argument("--embed", choices=("conv", "abspos"), default="abspos")
ap.add_argument("--flow-weight", type=float, default=2.0, help="0 trains without the flow loss")
ap.add_argument("--qk-gain", type=float, default=1.0)
ap.add_argument("--all-points", action="store_true",
                help="also supervise patches that leave frame 0's view (default: in view only)")
args = ap.parse_args()
vp.SWITCH_STEP = 0
vp.VIDEO_STRIDE_LATE = (1, 5)
CFG = replace(VGGT_PROXY, patch_embed="dinov2", dino_depth=0) if args.embed == "abspos" else VGGT_PROXY
PATCH = CFG.patch_size


def patch_flow(depth: torch.Tensor, intr: torch.Tensor,
               extr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """depth [B,S,H,W], intr [B,S,3,3], extr [B,S,3,4] (camera i from camera 0) ->
    flow of each patch centre to frame 0 / W [B,S,h*w,2] and its mask [B,S,h*w]."""
    B, S, H, W = depth.shape
    h, w = H // PATCH, W // PATCH
    d = depth[:, :, PATCH // 2::PATCH, PATCH // 2::PATCH][:, :, :h, :w]
    v, u = torch.meshgrid(torch.arange(h) * PATCH + PATCH // 2.0, torch.arange(w) * PATCH + PATCH // 2.0,
                          indexing="ij")
    fx, fy = intr[..., 0, 0, None, None], intr[..., 1, 1, None, None]
    cx, cy = intr[..., 0, 2, None, None], intr[..., 1, 2, None, None]
    cam = torch.stack([(u - cx) / fx * d, (v - cy) / fy * d, d], -1)
    rot, t = extr[..., :3], extr[..., 3]
    x0 = torch.einsum("bsji,bshwj->bshwi", rot, cam - t[:, :, None, None, :])
    z = x0[..., 2].clamp_min(1e-3)
    u0 = fx[:, :1] * x0[..., 0] / z + cx[:, :1]
    v0 = fy[:, :1] * x0[..., 1] / z + cy[:, :1]
    ok = (d > 0) & (x0[..., 2] > 1e-2)
    if args.all_points:
        ok &= (u0 > -W) & (u0 < 2 * W) & (v0 > -H) & (v0 < 2 * H)
    else:
        ok &= (u0 >= 0) & (u0 < W) & (v0 >= 0) & (v0 < H)
    flow = torch.stack([(u0 - u) / W, (v0 - v) / W], -1)
    return flow.reshape(B, S, h * w, 2), ok.reshape(B, S, h * w)


class FlowProxy(vp.VGGTProxy):
    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_vggt(CFG, heads=vp.HEADS)
            model.flow_aux = nn.Linear(2 * CFG.embed_dim, 2)
        with torch.no_grad():
            for name, mod in model.named_modules():
                if name.startswith("aggregator.") and name.endswith(("q_norm", "k_norm")):
                    mod.weight.fill_(args.qk_gain)
        self._tokens: dict = {}
        model.aggregator.register_forward_hook(lambda mod, inp, out: self._tokens.__setitem__("x", out))
        return model.train()

    def loss(self, model, batch):
        total, logs = super().loss(model, batch)
        if args.flow_weight > 0:
            layers, start = self._tokens["x"]
            pred = model.flow_aux(layers[-1][:, :, start:])
            gt, ok = patch_flow(batch["depth"], batch["intrinsics"], batch["extrinsics"])
            ok = ok.float()
            flow = ((pred - gt).abs().sum(-1) * ok).sum() / ok.sum().clamp_min(1)
            total = total + args.flow_weight * flow
            logs["flow"] = flow.item()
        return total, logs

    def evaluate(self, model):
        out = vp.evaluate_clips(model, self.heldout("video"))
        pred, true = [], []
        for c in self.heldout("video"):
            p = model(c.images[None], heads=vp.HEADS)["pose_enc"][0]
            g = extri_intri_to_pose_encoding(c.extrinsics[None], c.intrinsics[None], (vp.HEIGHT, vp.WIDTH))[0]
            pred.append(p[1:, [0, 4]])
            true.append(g[1:, [0, 4]])
        p, g = torch.cat(pred), torch.cat(true)
        for j, name in enumerate(("tx", "qy")):
            out[f"corr_{name}"] = float(torch.corrcoef(torch.stack([p[:, j], g[:, j]]))[0, 1])
        print(out, flush=True)
        return out

    def baselines(self):
        return {}


proxy = FlowProxy()
cfg = replace(proxy.default_config(), threads=1, steps=args.steps, eval_every=100, warmup_steps=60)
train(proxy, args.out, config=cfg, progress=False)
