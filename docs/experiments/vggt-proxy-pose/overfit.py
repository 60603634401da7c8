"""Sanity check: the camera loss alone fits 16 fixed training clips (targets and camera path agree).

    PYTHONPATH=. python docs/experiments/vggt-proxy-pose/overfit.py --steps 400
"""

import argparse

import torch
from common import camera_step

import harness.train.vggt_proxy as vp
from harness.metrics import geometry
from harness.models.vggt import build_vggt
from harness.models.vggt.pose import pose_encoding_to_extri_intri
from harness.models.vggt.presets import VGGT_PROXY

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=400)
args = ap.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)
vp.POOL_VIDEO_SCENES, vp.POOL_SPARSE_SCENES, vp.SWITCH_STEP = 16, 1, 0
proxy = vp.VGGTProxy()
batches = [proxy.to_device(proxy.batch(s, 4, 0), torch.device("cpu")) for s in range(4)]  # 16 clips
model = build_vggt(VGGT_PROXY, heads=("camera",)).train()
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95))
hw = (vp.HEIGHT, vp.WIDTH)


@torch.no_grad()
def train_auc() -> float:
    model.eval()
    aucs = []
    for b in batches:
        pe = model(b["images"], heads=("camera",))["pose_enc"]
        for j in range(pe.shape[0]):
            extr, _ = pose_encoding_to_extri_intri(pe[j], hw)
            aucs.append(geometry.pose_metrics(extr, b["extrinsics"][j])["auc_30"])
    model.train()
    return sum(aucs) / len(aucs)


for it in range(args.steps):
    loss = camera_step(model, opt, batches[it % 4])
    if it % 25 == 0:
        print(f"{it} loss {loss:.4f} training AUC@30 {train_auc():.3f}", flush=True)
